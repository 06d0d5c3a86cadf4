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

import nnunet_pick.unlabeled.dataset
from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.unlabeled.dataset import nnUNetDatasetUnlabeled
from nnunet_pick.unlabeled.pool import complete_case_folders, list_preprocessed_cases, unlabeled_ids_from_split
from nnunet_pick.unlabeled.preprocess import _preprocess_case, preprocess_unlabeled
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
    dataset_json = json.loads((hippocampus / "dataset.json").read_text(encoding="utf-8"))
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


def test_bad_unlabeled_inputs_are_all_reported_before_anything_is_written(hippocampus, tmp_path, monkeypatch):
    """Real Hippocampus images, broken in the ways hand-converted unlabeled pools break."""
    import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

    from nnunet_pick.demo_data import HIPPOCAMPUS
    from nnunet_pick.unlabeled.validate import check_unlabeled_folder

    raw = tmp_path / "raw" / "Dataset995_Bad"
    tr, unl = raw / "imagesTr", raw / "imagesUnlabeled"
    tr.mkdir(parents=True)
    unl.mkdir()
    (raw / "labelsTr").mkdir()
    img = HIPPOCAMPUS / "imagesTr" / "hippocampus_004_0000.nii.gz"
    shutil.copy(img, tr / "hippocampus_004_0000.nii.gz")
    shutil.copy(HIPPOCAMPUS / "labelsTr" / "hippocampus_004.nii.gz", raw / "labelsTr")
    shutil.copy(img, unl / "good_0000.nii.gz")
    shutil.copy(img, unl / "extra_0000.nii.gz")
    shutil.copy(img, unl / "extra_0001.nii.gz")  # a second channel the dataset does not have
    shutil.copy(img, unl / "ending_0000.nii")  # wrong file ending
    shutil.copy(img, unl / "noindex.nii.gz")  # no _XXXX channel index
    (unl / "truncated_0000.nii.gz").write_bytes(img.read_bytes()[:200])  # cut off mid-file
    (unl / "notimage_0000.nii.gz").write_text("this is not an image", encoding="utf-8")
    flat = sitk.GetImageFromArray(np.zeros((30, 40), np.float32))
    sitk.WriteImage(flat, str(unl / "flat_0000.nii.gz"))  # 2D where imagesTr is 3D
    shutil.copy(img, unl / "hippocampus_004_0000.nii.gz")  # same id as a labeled case
    coarse = sitk.ReadImage(str(img))
    coarse.SetSpacing((3.0, 3.0, 3.0))
    sitk.WriteImage(coarse, str(unl / "coarse_0000.nii.gz"))  # readable, only worth a warning
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 1,
                    "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    check = check_unlabeled_folder(str(raw), dataset_json)
    text = "\n".join(check.errors)
    assert "ending_0000.nii: file ending is not the dataset's '.nii.gz'" in text
    assert "noindex.nii.gz: name is not {CASE}_{XXXX}.nii.gz" in text
    assert "extra: channel files missing [], unexpected ['extra_0001.nii.gz']" in text
    assert "truncated_0000.nii.gz: cannot be read as an image" in text
    assert "notimage_0000.nii.gz: cannot be read as an image" in text
    assert "flat_0000.nii.gz: 2D with 1 component(s) per voxel, but imagesTr has 3D" in text
    assert "case ids ['hippocampus_004'] exist in both imagesTr and imagesUnlabeled" in text
    assert len(check.errors) == 7, "\n".join(check.errors)
    assert not any("good_0000" in e or "coarse_0000" in e for e in check.errors)
    assert len(check.warnings) == 1
    assert "coarse_0000.nii.gz: spacing (3.0, 3.0, 3.0)" in check.warnings[0]
    # the command refuses before any write
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "pre" / "Dataset995_Bad").mkdir(parents=True)
    shutil.copy(hippocampus / "nnUNetPlans.json", tmp_path / "pre" / "Dataset995_Bad" / "nnUNetPlans.json")
    (tmp_path / "pre" / "Dataset995_Bad" / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    with pytest.raises(ValueError, match="7 problem\\(s\\) in .*nothing was preprocessed or written"):
        preprocess_unlabeled(995, "3d_fullres", num_processes=1, progress_bar=False)
    assert sorted(p.name for p in (tmp_path / "pre" / "Dataset995_Bad").iterdir()) == ["dataset.json",
                                                                                       "nnUNetPlans.json"]


def test_split_ids_that_are_not_file_names_are_refused():
    with pytest.raises(ValueError, match=r"not plain file names: \['../../etc/x', '.hidden'\]"):
        unlabeled_ids_from_split({"train": [], "val": [], "unlabeled": ["../../etc/x", "ok", ".hidden"]}, 0)


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
    assert complete_case_folders(["a"], str(cfg), str(unl), ["c"]) == {"a": str(cfg), "c": str(unl)}
    with pytest.raises(ValueError, match=r"case ids not found: \['z'\]"):
        complete_case_folders(["z"], str(cfg), str(unl), ["c"])
    with pytest.raises(ValueError, match=r"imagesUnlabeled cases vs .*case ids not found: \['d'\]"):
        complete_case_folders(["a"], str(cfg), str(unl), ["c", "d"])  # an image not preprocessed yet
    (unl / "a.b2nd").write_bytes(b"")
    (unl / "a.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="both unlabeled cases of splits_final.json"):
        complete_case_folders(["a"], str(cfg), str(unl), ["a", "c"])
    # a preprocessed case without its image in imagesUnlabeled is not part of the pool
    assert complete_case_folders([], str(cfg), str(unl), ["c"]) == {"c": str(unl)}


def test_outside_mask_marker_is_recovered_from_zero_voxels():
    image = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])  # C=2, 2x2
    seg = torch.zeros(1, 2, 2, dtype=torch.int16)
    out = OutsideMaskFromZeroImageTransform([0, 1])(image=image, segmentation=seg)
    assert out["segmentation"].tolist() == [[[-1, 0], [0, -1]]]
    out = OutsideMaskFromZeroImageTransform([0])(image=image, segmentation=torch.zeros(1, 2, 2, dtype=torch.int16))
    assert out["segmentation"].tolist() == [[[-1, 0], [-1, -1]]]


def test_a_large_pool_is_listed_not_read(hippocampus, tmp_path, monkeypatch):
    """3 000 unlabeled cases (one real preprocessed case under 3 000 ids): building the dataset and the loader
    opens no case; each batch opens at most one image and one properties file per patch."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    source = hippocampus / "nnUNetPlans_2d" / FOLD0["unlabeled"][0]
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(3000):
        for ext in (".b2nd", ".pkl"):
            os.link(f"{source}{ext}", pool / f"case_{i:05d}{ext}")  # hard links: 3 000 cases, one file's bytes
    opened: list[str] = []
    real_blosc2_open, real_load_pickle = blosc2.open, nnunet_pick.unlabeled.dataset.load_pickle
    monkeypatch.setattr(blosc2, "open", lambda *a, **k: opened.append(k.get("urlpath", a[0] if a else "")) or
                        real_blosc2_open(*a, **k))
    monkeypatch.setattr(nnunet_pick.unlabeled.dataset, "load_pickle", lambda p: opened.append(p) or
                        real_load_pickle(p))

    case_folders = complete_case_folders([], str(hippocampus / "nnUNetPlans_2d"), str(pool),
                                         [f"case_{i:05d}" for i in range(3000)])
    assert len(case_folders) == 3000
    dataset = nnUNetDatasetUnlabeled(case_folders)
    label_manager = LabelManager({"background": 0, "Anterior": 1, "Posterior": 2}, regions_class_order=None)
    loader = nnUNetDataLoader(dataset, 4, (40, 40), (40, 40), label_manager, oversample_foreground_percent=0.0)
    assert opened == []  # listing 3 000 cases reads none of them
    batch = next(loader)
    assert batch["data"].shape == (4, 1, 40, 40)
    assert len(opened) == 8  # 4 patches: one .b2nd and one .pkl each


def test_no_unlabeled_data_at_all_says_how_to_add_some(hippocampus, tmp_path, monkeypatch):
    """The real dataset without imagesUnlabeled and without an 'unlabeled' key: a clear refusal, not labeled-only
    training in disguise."""
    pre = tmp_path / "pre" / hippocampus.name
    pre.mkdir(parents=True)
    for name in ("nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json"):
        shutil.copy(hippocampus / name, pre / name)
    shutil.copytree(hippocampus / "nnUNetPlans_2d", pre / "nnUNetPlans_2d")
    (pre / "splits_final.json").write_text(json.dumps([{"train": FOLD0["train"], "val": FOLD0["val"]}]),
                                          encoding="utf-8")
    raw = tmp_path / "raw" / hippocampus.name
    for sub in ("imagesTr", "labelsTr"):  # no imagesUnlabeled
        shutil.copytree(hippocampus.parent.parent / "nnUNet_raw" / hippocampus.name / sub, raw / sub)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    t = make_trainer(nnUNetTrainerPICK, pre, "2d")
    with pytest.raises(ValueError, match="No unlabeled data for Dataset991_PICKTestHippocampus fold 0") as err:
        t.on_train_start()
    message = str(err.value)
    assert "imagesUnlabeled/ as {CASE}_{XXXX}.nii.gz" in message
    assert '"unlabeled"' in message
    assert "use -tr nnUNetTrainer" in message  # labeled-only on purpose


def test_raw_unlabeled_cases_are_grouped_by_exact_id(tmp_path):
    """Ids that are prefixes of each other keep their own channel files (case_1 vs case_10), other files are not
    cases; one pass over the folder (the grouping used to scan every file for every case)."""
    from nnunet_pick.unlabeled.pool import list_raw_unlabeled_cases

    for name in ("case_1_0001.nii.gz", "case_1_0000.nii.gz", "case_10_0000.nii.gz", "case_10_0001.nii.gz",
                 "notes.txt", "case_2.nii.gz", ".hidden_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    cases = list_raw_unlabeled_cases(str(tmp_path), ".nii.gz")
    assert cases == {
        "case_1": [str(tmp_path / "case_1_0000.nii.gz"), str(tmp_path / "case_1_0001.nii.gz")],
        "case_10": [str(tmp_path / "case_10_0000.nii.gz"), str(tmp_path / "case_10_0001.nii.gz")],
    }
