"""The unlabeled data path on real cases: preprocessing, the split key, reading without segmentations."""

from __future__ import annotations

import builtins
import json
import os
import shutil

import blosc2
import numpy as np
import pytest
import torch
from helpers import DATASET_ID, FOLD0, LABELED, UNLABELED_RAW, make_trainer
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.unlabeled.dataset import nnUNetDatasetUnlabeled
from nnunet_pick.unlabeled.pool import complete_case_folders, list_preprocessed_cases, unlabeled_ids_from_split
from nnunet_pick.unlabeled.preprocess import _preprocess_case, check_channels, preprocess_unlabeled
from nnunet_pick.unlabeled.transforms import OutsideMaskFromZeroImageTransform


def test_unlabeled_id_also_in_val_or_train_is_an_error():
    with pytest.raises(ValueError, match=r"in both 'unlabeled' and 'val': \['b'\]"):
        unlabeled_ids_from_split({"train": ["a"], "val": ["b"], "unlabeled": ["b", "c"]}, 3)
    with pytest.raises(ValueError, match=r"in both 'unlabeled' and 'train': \['a'\]"):
        unlabeled_ids_from_split({"train": ["a"], "val": ["b"], "unlabeled": ["a"]}, 0)
    with pytest.raises(ValueError, match="listed twice"):
        unlabeled_ids_from_split({"train": [], "val": [], "unlabeled": ["c", "c"]}, 0)
    assert unlabeled_ids_from_split({"train": ["a"], "val": ["b"]}, 0) == []


def test_trainer_refuses_a_fold_whose_unlabeled_ids_overlap_val(hippocampus, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d", fold=1)
    with pytest.raises(ValueError, match="fold 1: in both 'unlabeled' and 'val'"):
        t.on_train_start()


def test_stock_trainer_gets_the_same_labeled_and_validation_cases(hippocampus):
    stock = make_trainer(nnUNetTrainer, hippocampus, "2d").do_split()
    pick = make_trainer(nnUNetTrainerPICK, hippocampus, "2d").do_split()
    assert stock == pick == (FOLD0["train"], FOLD0["val"])


def test_segmentations_of_unlabeled_cases_are_never_opened(hippocampus, monkeypatch):
    opened: list[str] = []
    real_blosc2_open, real_open = blosc2.open, builtins.open

    def spy_blosc2(*args, **kwargs):
        opened.append(str(kwargs.get("urlpath", args[0] if args else "")))
        return real_blosc2_open(*args, **kwargs)

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # every case is loaded in this process
    monkeypatch.setattr(blosc2, "open", spy_blosc2)
    monkeypatch.setattr(builtins, "open", spy_open)
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d")
    t.on_train_start()
    for _ in range(20):
        next(t.dataloader_train)
        next(t.dataloader_unlabeled)
    names = [os.path.basename(p) for p in opened]
    pool = set(FOLD0["unlabeled"]) | set(UNLABELED_RAW)
    assert set(t.unlabeled_case_folders) == pool
    # imagesUnlabeled cases live in a sibling of the configuration's folder, split cases in the folder itself
    assert {t.unlabeled_case_folders[c] for c in UNLABELED_RAW} == {str(hippocampus / "nnUNetPlans_2d_unlabeled")}
    assert {t.unlabeled_case_folders[c] for c in FOLD0["unlabeled"]} == {str(hippocampus / "nnUNetPlans_2d")}
    for case in pool:
        assert f"{case}_seg.b2nd" not in names
        assert f"{case}.nii.gz" not in names  # neither labelsTr nor gt_segmentations
        assert f"{case}.b2nd" in names  # ... while the images were read
    for case in FOLD0["train"]:
        assert f"{case}_seg.b2nd" in names  # the labeled loader does read labels


def test_preprocessed_unlabeled_case_equals_nnunets_own_preprocessing(hippocampus, tmp_path):
    """The same image preprocessed as unlabeled gives exactly nnU-Net's preprocessed array."""
    pm = PlansManager(str(hippocampus / "nnUNetPlans.json"))
    cm = pm.get_configuration("2d")
    dataset_json = json.loads((hippocampus / "dataset.json").read_text())
    case = LABELED[0]
    raw = hippocampus.parent.parent / "nnUNet_raw" / hippocampus.name / "imagesTr" / f"{case}_0000.nii.gz"
    _preprocess_case(case, [str(raw)], str(tmp_path), pm, cm, dataset_json)
    ours = blosc2.open(str(tmp_path / f"{case}.b2nd"), mode="r")[:]
    nnunets = blosc2.open(str(hippocampus / cm.data_identifier / f"{case}.b2nd"), mode="r")[:]
    np.testing.assert_array_equal(ours, nnunets)
    assert list_preprocessed_cases(str(tmp_path)) == [case]


def test_preprocess_unlabeled_skips_done_cases_and_redoes_half_written_ones(hippocampus):
    out = hippocampus / "nnUNetPlans_3d_fullres_unlabeled"
    shutil.rmtree(out, ignore_errors=True)
    done = preprocess_unlabeled(DATASET_ID, "3d_fullres", num_processes=2, progress_bar=False)
    assert sorted(done) == UNLABELED_RAW
    assert list_preprocessed_cases(str(out)) == UNLABELED_RAW
    assert preprocess_unlabeled(DATASET_ID, "3d_fullres", num_processes=1, progress_bar=False) == []
    # a case killed before its .pkl was moved into place is not done, and is redone
    (out / f"{UNLABELED_RAW[2]}.pkl").unlink()
    assert UNLABELED_RAW[2] not in list_preprocessed_cases(str(out))
    assert preprocess_unlabeled(DATASET_ID, "3d_fullres", num_processes=1, progress_bar=False) == [UNLABELED_RAW[2]]
    assert not (out / ".partial").exists()


def test_channel_check_reports_every_bad_case():
    cases = {"a": ["/x/a_0000.nii.gz"], "b": ["/x/b_0000.nii.gz", "/x/b_0002.nii.gz"], "c": []}
    with pytest.raises(ValueError, match="channel_names declares") as err:
        check_channels(cases, 2, ".nii.gz", "/x")
    message = str(err.value)
    assert "3 case(s)" in message
    assert "a: missing ['a_0001.nii.gz']" in message
    assert "b: missing ['b_0001.nii.gz'], unexpected ['b_0002.nii.gz']" in message
    assert "Nothing was written" in message


def test_unlabeled_dataset_returns_zero_segmentation_without_class_locations(hippocampus):
    folder = str(hippocampus / "nnUNetPlans_2d")
    ds = nnUNetDatasetUnlabeled({LABELED[7]: folder})
    data, seg, seg_prev, properties = ds.load_case(LABELED[7])
    assert seg.shape == (1, *data.shape[1:])
    assert seg.dtype == np.int8
    assert not seg.any()
    assert seg.strides == (0,) * seg.ndim
    assert seg_prev is None
    assert properties["class_locations"] is None  # label-derived sampling information is dropped


def test_pool_combines_both_sources_and_rejects_clashing_ids(tmp_path):
    cfg, unl = tmp_path / "cfg", tmp_path / "unl"
    for folder, ids in ((cfg, ["a", "b"]), (unl, ["c"])):
        folder.mkdir()
        for i in ids:
            (folder / f"{i}.b2nd").write_bytes(b"")
            (folder / f"{i}.pkl").write_bytes(b"")
    assert complete_case_folders(["a"], str(cfg), str(unl)) == {"a": str(cfg), "c": str(unl)}
    with pytest.raises(ValueError, match=r"case ids not found: \['z'\]"):
        complete_case_folders(["z"], str(cfg), str(unl))
    (unl / "a.b2nd").write_bytes(b"")
    (unl / "a.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="both unlabeled cases of splits_final.json"):
        complete_case_folders(["a"], str(cfg), str(unl))


def test_outside_mask_marker_is_recovered_from_zero_voxels():
    image = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])  # C=2, 2x2
    seg = torch.zeros(1, 2, 2, dtype=torch.int16)
    out = OutsideMaskFromZeroImageTransform([0, 1])(image=image, segmentation=seg)
    assert out["segmentation"].tolist() == [[[-1, 0], [0, -1]]]
    out = OutsideMaskFromZeroImageTransform([0])(image=image, segmentation=torch.zeros(1, 2, 2, dtype=torch.int16))
    assert out["segmentation"].tolist() == [[[-1, 0], [-1, -1]]]
