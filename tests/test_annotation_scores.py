"""The scores of ``nnUNetv2_pick_suggest`` on hand-made logits with known answers (nnunet_pick.annotation.scores)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
import torch

from nnunet_pick.annotation.scores import case_scores, class_masks, combined_scores, dice_disagreement
from nnunet_pick.demo_data import HIPPOCAMPUS


def logits_from_labels(labels: np.ndarray, heads: int = 3, margin: float = 10.0) -> torch.Tensor:
    """Logits whose argmax is ``labels`` (X, Y[, Z]): ``margin`` on the label's channel, 0 elsewhere."""
    out = torch.zeros(heads, *labels.shape)
    out.scatter_(0, torch.as_tensor(labels, dtype=torch.long)[None], margin)
    return out


@pytest.fixture(scope="module")
def hippocampus_label() -> np.ndarray:
    """A real Hippocampus reference segmentation (labels 0, 1, 2), (Z, Y, X)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / "hippocampus_004.nii.gz")))


def test_identical_decoders_disagree_nowhere(hippocampus_label):
    logits = logits_from_labels(hippocampus_label)
    s = case_scores([logits], [logits.clone()], has_regions=False)
    assert s["disagreement"] == 0
    np.testing.assert_array_equal(s["disagreement_per_class"], [0, 0])
    assert math.isnan(s["fold_disagreement"])  # one fold
    assert s["foreground_voxels"] == int((hippocampus_label > 0).sum())


def test_known_disagreement_per_class(hippocampus_label):
    """The auxiliary decoder loses half of class 1's voxels to background and calls all of class 2 class 1."""
    aux_labels = hippocampus_label.copy()
    ones = np.flatnonzero(hippocampus_label == 1)
    aux_labels.flat[ones[: len(ones) // 2]] = 0
    aux_labels[hippocampus_label == 2] = 1
    n1, n2, lost = len(ones), int((hippocampus_label == 2).sum()), len(ones) // 2
    s = case_scores([logits_from_labels(hippocampus_label)], [logits_from_labels(aux_labels)], has_regions=False)
    # class 1: primary n1 voxels, auxiliary (n1 - lost) + n2, overlap n1 - lost; class 2: no overlap at all
    expected_1 = 1 - 2 * (n1 - lost) / (n1 + (n1 - lost) + n2)
    np.testing.assert_allclose(s["disagreement_per_class"], [expected_1, 1.0], rtol=1e-12)
    assert s["disagreement"] == pytest.approx((expected_1 + 1.0) / 2)


def test_empty_in_both_is_agreement_and_regions_use_sigmoid():
    empty = torch.zeros(2, 4, 4) - 5  # two region heads, both off everywhere
    assert class_masks(empty, has_regions=True).sum() == 0
    np.testing.assert_array_equal(dice_disagreement(class_masks(empty, has_regions=True),
                                                    class_masks(empty, has_regions=True)), [0, 0])
    on = empty.clone()
    on[0, :2] = 5  # region 0 on in 8 voxels for one decoder only
    s = case_scores([on], [empty], has_regions=True)
    np.testing.assert_array_equal(s["disagreement_per_class"], [1.0, 0.0])


def test_entropy_is_normalised_per_predicted_foreground_voxel():
    """Uniform softmax over 3 heads has entropy log 3, i.e. 1 after normalisation, in every voxel."""
    logits = torch.zeros(3, 6, 5)
    s = case_scores([logits], [logits], has_regions=False)
    assert s["foreground_voxels"] == 0  # argmax of ties is background
    assert s["entropy"] == pytest.approx(30.0)  # 30 voxels of entropy 1, divided by max(1, 0)
    confident = logits_from_labels(np.ones((6, 5), dtype=int), margin=50)
    assert case_scores([confident], [confident], has_regions=False)["entropy"] == pytest.approx(0, abs=1e-12)


def test_fold_disagreement_is_the_mean_over_fold_pairs(hippocampus_label):
    a = logits_from_labels(hippocampus_label)
    b = logits_from_labels(np.zeros_like(hippocampus_label))  # a fold that predicts nothing: 1 - Dice = 1
    s = case_scores([a, a.clone(), b], [a, a, a], has_regions=False)
    # pairs (a, a) = 0, (a, b) = 1, (a, b) = 1
    assert s["fold_disagreement"] == pytest.approx(2 / 3)


def test_combined_score_is_the_mean_percentile_rank():
    combined = combined_scores({"disagreement": [0.1, 0.3, 0.2], "entropy": [5.0, 1.0, 3.0],
                                "fold_disagreement": [math.nan] * 3})
    # ranks / n: disagreement (1, 3, 2) / 3, entropy (3, 1, 2) / 3 -> means (2, 2, 2) / 3; fold disagreement unused
    np.testing.assert_allclose(combined, [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(combined_scores({"d": [0.5, 0.5, 0.9]}), [1.5 / 3, 1.5 / 3, 1.0])
    with pytest.raises(ValueError, match="one value per case"):
        combined_scores({"d": [1.0], "e": [1.0, 2.0]})
