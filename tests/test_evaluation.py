"""Dice / Jaccard / ASD / HD95 against values worked out by hand on small masks, and on real files."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.evaluation import METRICS, binary_metrics, evaluate_folder


def squares():
    """3x3 square (rows 2-4, columns 2-4) and the same square shifted one column to the right."""
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    b = np.zeros((8, 8), bool)
    b[2:5, 3:6] = True
    return a, b


def test_overlap_and_surface_distances_by_hand():
    a, b = squares()
    m = binary_metrics(a, b, spacing=(1.0, 2.0))
    # overlap 6 voxels of 9 + 9: Dice 12/18, Jaccard 6/12
    assert m["Dice"] == pytest.approx(2 / 3)
    assert m["Jaccard"] == pytest.approx(0.5)
    # surfaces (8 border voxels each). In voxels, a -> b distances are 1,1,1,1 and four 0: ASD 0.5; the 16 symmetric
    # distances are eight 0 and eight 1: HD95 1.
    assert m["ASD_voxel"] == pytest.approx(0.5)
    assert m["HD95_voxel"] == pytest.approx(1.0)
    # columns 2 mm apart: a's left column is 2 mm from b's surface, (3,4) is 1 mm (row neighbour): ASD 7/8;
    # symmetric distances: eight 0, two 1, six 2 -> 95th percentile 2
    assert m["ASD_mm"] == pytest.approx(7 / 8)
    assert m["HD95_mm"] == pytest.approx(2.0)


def test_identical_masks_and_empty_mask_rules():
    a, _ = squares()
    same = binary_metrics(a, a, (1, 1))
    assert same == {"Dice": 1.0, "Jaccard": 1.0, "ASD_voxel": 0.0, "HD95_voxel": 0.0, "ASD_mm": 0.0, "HD95_mm": 0.0}
    empty = np.zeros_like(a)
    missed = binary_metrics(empty, a, (1, 1))
    assert missed["Dice"] == 0
    assert missed["Jaccard"] == 0
    assert all(math.isnan(missed[k]) for k in METRICS[2:])
    assert all(math.isnan(v) for v in binary_metrics(empty, empty, (1, 1)).values())
    with pytest.raises(ValueError, match="differ in shape"):
        binary_metrics(a, a[:4], (1, 1))


def test_3d_spacing_scales_distances():
    a = np.zeros((6, 6, 6), bool)
    a[1:4, 1:4, 1:4] = True
    b = np.roll(a, 1, axis=0)  # shifted one voxel along the first axis
    m = binary_metrics(a, b, (2.5, 1.0, 1.0))
    assert m["HD95_voxel"] == pytest.approx(1.0)
    assert m["HD95_mm"] == pytest.approx(2.5)


def test_evaluate_folder_on_real_hippocampus_labels(tmp_path):
    cases = ["hippocampus_004", "hippocampus_006"]
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for c in cases:
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{c}.nii.gz", ref)
    # prediction 1: the reference itself; prediction 2: label 2 removed (a missed class)
    shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{cases[0]}.nii.gz", pred)
    img = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{cases[1]}.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == 2] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(pred / f"{cases[1]}.nii.gz"))
    dataset_json = {"labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "file_ending": ".nii.gz",
                    "channel_names": {"0": "MRI"}, "numTraining": 2}
    summary = evaluate_folder(str(ref), str(pred), dataset_json, str(tmp_path / "summary.json"))
    first, second = (c["metrics"] for c in summary["metric_per_case"])
    assert first["1"]["Dice"] == 1.0
    assert first["2"]["HD95_mm"] == 0.0
    assert second["1"]["Dice"] == 1.0
    assert second["2"]["Dice"] == 0.0
    assert math.isnan(second["2"]["HD95_voxel"])
    assert summary["mean"]["2"]["Dice"] == pytest.approx(0.5)
    assert summary["std"]["2"]["Dice"] == pytest.approx(0.5)
    assert summary["n_undefined"]["2"]["HD95_mm"] == 1
    assert summary["mean"]["2"]["HD95_mm"] == 0.0  # the undefined case is skipped, not counted as 0
    saved = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert saved["mean"]["1"]["Jaccard"] == 1.0
    rows = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "case,label," + ",".join(METRICS)
    assert len(rows) == 1 + 2 * 2
