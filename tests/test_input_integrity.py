"""Nothing silently wrong (issue 11) on real Hippocampus files: scans cut short, NaN voxels, a pool that matches
``imagesUnlabeled``, checked once per file version.

Each test works on a private copy of the session's Dataset991 (raw files and the ``2d`` preprocessed data), so the
files it breaks are its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
from helpers import DATASET_ID, DATASET_NAME, FOLD0, LABELED, UNLABELED_RAW, make_trainer

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.unlabeled.preprocess import _preprocess_case, preprocess_unlabeled
from nnunet_pick.unlabeled.validate import check_unlabeled_folder

# the new API is imported inside the tests that use it, so that the others run (and fail) against the code before
# issue 11 too

# where a download or copy stops: just after the header, half-way, near the end, only the gzip trailer missing
CUTS = {"3kB": lambda n: 3000, "half": lambda n: n // 2, "95pc": lambda n: int(0.95 * n), "last8": lambda n: n - 8}


@pytest.fixture
def private_dataset(hippocampus, nnunet_dirs, tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(raw, preprocessed) dataset folders: a copy of Dataset991 with nnU-Net's variables pointing at it."""
    raw = tmp_path / "raw" / DATASET_NAME
    shutil.copytree(nnunet_dirs["nnUNet_raw"] / DATASET_NAME, raw)
    pre = tmp_path / "pre" / DATASET_NAME
    pre.mkdir(parents=True)
    for name in ("nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json", "splits_final.json"):
        shutil.copy(hippocampus / name, pre / name)
    shutil.copytree(hippocampus / "nnUNetPlans_2d", pre / "nnUNetPlans_2d")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return raw, pre


def truncate(path: Path, cut) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:cut(len(data))])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_every_cut_point_of_every_format_is_detected(tmp_path, ending):
    """A real image written in four formats, then cut at four points: the whole file passes, every cut is caught.
    (SimpleITK, nnU-Net's default reader, reads the cut NIfTI files without an error.)"""
    from nnunet_pick.integrity import check_image_file

    image = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / "hippocampus_004_0000.nii.gz"))
    whole = tmp_path / f"whole{ending}"
    sitk.WriteImage(image, str(whole), useCompression=ending != ".nii")
    assert check_image_file(str(whole)) is None
    for name, cut in CUTS.items():
        cut_file = tmp_path / f"cut_{name}{ending}"
        cut_file.write_bytes(whole.read_bytes()[:cut(whole.stat().st_size)])
        problem = check_image_file(str(cut_file))
        assert problem is not None, f"{cut_file.name} was accepted"
        if ending == ".nii.gz":
            assert "incomplete or corrupt gzip stream" in problem
            # what made this dangerous: nnU-Net's reader returns an image, with zeros where data is missing
            if name != "last8":
                assert np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(cut_file)))) < np.count_nonzero(
                    sitk.GetArrayFromImage(image))
        elif ending == ".nii":
            assert "the header promises 284896 bytes" in problem


def test_truncated_unlabeled_images_are_refused_before_any_write(private_dataset):
    raw, pre = private_dataset
    source = raw / "imagesUnlabeled" / f"{UNLABELED_RAW[0]}_0000.nii.gz"
    for name, cut in CUTS.items():
        target = raw / "imagesUnlabeled" / f"cut_{name}_0000.nii.gz"
        shutil.copy(source, target)
        truncate(target, cut)
    before = snapshot(pre)
    with pytest.raises(ValueError, match=r"4 problem\(s\) in .*nothing was preprocessed or written") as err:
        preprocess_unlabeled(DATASET_ID, "2d", num_processes=2, progress_bar=False)
    for name in CUTS:
        assert (f"cut_{name}_0000.nii.gz: incomplete or corrupt gzip stream (EOFError: Compressed file ended before "
                f"the end-of-stream marker was reached)") in str(err.value)
    assert "replace it with a complete, valid copy or remove it from imagesUnlabeled" in str(err.value)
    assert snapshot(pre) == before  # no preprocessed case, no staging folder, no cache


def test_trainer_refuses_truncated_labeled_files_that_nnunet_accepts(private_dataset):
    """imagesTr and labelsTr files cut at three points pass nnU-Net's own --verify_dataset_integrity; the PICK trainer
    names each of them before it writes anything."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw, pre = private_dataset
    broken = {raw / "imagesTr" / f"{LABELED[0]}_0000.nii.gz": CUTS["half"],
              raw / "imagesTr" / f"{LABELED[5]}_0000.nii.gz": CUTS["95pc"],
              raw / "labelsTr" / f"{LABELED[2]}.nii.gz": CUTS["last8"]}
    for path, cut in broken.items():
        truncate(path, cut)
    verify_dataset_integrity(str(raw), num_processes=1)  # nnU-Net: "your dataset is most likely OK"
    before = snapshot(pre)
    t = make_trainer(nnUNetTrainerPICK, pre, "2d")
    with pytest.raises(ValueError, match=r"3 problem\(s\)") as err:
        t.on_train_start()
    message = str(err.value)
    for path in broken:
        assert f"{path} (labeled case" in message
    assert "re-run nnUNetv2_plan_and_preprocess" in message
    assert snapshot(pre) == before  # unlabeled cases not preprocessed, no cache written
    assert not (Path(t.output_folder_base) / "plans.json").exists()  # nnU-Net's start of training never ran


def test_unchanged_files_are_decoded_once(private_dataset, monkeypatch):
    import nnunet_pick.integrity
    from nnunet_pick.integrity import CACHE_FILE_NAME
    from nnunet_pick.unlabeled.validate import integrity_cache_file

    raw, pre = private_dataset
    decoded: list[str] = []
    real = nnunet_pick.integrity.check_image_file
    monkeypatch.setattr(nnunet_pick.integrity, "check_image_file", lambda p, r=None: decoded.append(p) or real(p, r))
    dataset_json = json.loads((pre / "dataset.json").read_text(encoding="utf-8"))
    cache = integrity_cache_file(str(pre))
    assert cache == str(pre / CACHE_FILE_NAME)

    def check():
        decoded.clear()
        assert check_unlabeled_folder(str(raw), dataset_json, cache_file=cache, check_labeled=True).errors == []
        return sorted(decoded)

    assert len(check()) == len(UNLABELED_RAW) + 2 * len(LABELED)  # imagesUnlabeled, imagesTr, labelsTr
    assert check() == []  # unchanged: nothing decoded again
    changed = raw / "imagesUnlabeled" / f"{UNLABELED_RAW[1]}_0000.nii.gz"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert check() == [str(changed)]
    truncate(changed, CUTS["half"])  # a file that fails is never cached as passed
    decoded.clear()
    assert len(check_unlabeled_folder(str(raw), dataset_json, cache_file=cache).errors) == 1
    assert decoded == [str(changed)]


def test_non_finite_unlabeled_images_are_refused(private_dataset, tmp_path):
    """A real case saved as .mha (a format that keeps NaN) with every voxel NaN, and one with a single Inf voxel."""
    raw, pre = private_dataset
    dataset_json = json.loads((pre / "dataset.json").read_text(encoding="utf-8"))
    mha = tmp_path / "mha_raw"
    (mha / "imagesTr").mkdir(parents=True)
    (mha / "imagesUnlabeled").mkdir()
    image = sitk.ReadImage(str(raw / "imagesTr" / f"{LABELED[0]}_0000.nii.gz"))
    sitk.WriteImage(image, str(mha / "imagesTr" / f"{LABELED[0]}_0000.mha"))
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    for name, value in (("allnan", np.full_like(voxels, np.nan)), ("oneinf", voxels.copy())):
        if name == "oneinf":
            value[5, 5, 5] = np.inf
        out = sitk.GetImageFromArray(value)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(mha / "imagesUnlabeled" / f"{name}_0000.mha"))
    sitk.WriteImage(image, str(mha / "imagesUnlabeled" / "fine_0000.mha"))
    check = check_unlabeled_folder(str(mha), {**dataset_json, "file_ending": ".mha"})
    assert len(check.errors) == 2, check.errors
    assert f"allnan_0000.mha: {voxels.size} of {voxels.size} voxels are NaN or infinite" in check.errors[0]
    assert f"oneinf_0000.mha: 1 of {voxels.size} voxels are NaN or infinite" in check.errors[1]


def test_trainer_pool_is_what_images_unlabeled_holds(private_dataset):
    """A deleted image is not trained on (and the log says so), a replaced image is preprocessed again, and a
    misnamed file is refused by the trainer with the command's own message."""
    raw, pre = private_dataset
    unl = raw / "imagesUnlabeled"
    preprocess_unlabeled(DATASET_ID, "2d", num_processes=1, progress_bar=False)
    deleted, replaced = UNLABELED_RAW[0], UNLABELED_RAW[1]
    (unl / f"{deleted}_0000.nii.gz").unlink()
    # replaced by another real image (a later copy: newer modification time than its preprocessed case)
    shutil.copy(raw / "imagesTr" / f"{LABELED[0]}_0000.nii.gz", unl / f"{replaced}_0000.nii.gz")
    pkl = pre / "nnUNetPlans_2d_unlabeled" / f"{replaced}.pkl"
    os.utime(unl / f"{replaced}_0000.nii.gz", ns=(pkl.stat().st_atime_ns, pkl.stat().st_mtime_ns + 10**9))

    t = make_trainer(nnUNetTrainerPICK, pre, "2d")
    t.on_train_start()
    assert set(t.unlabeled_case_folders) == set(FOLD0["unlabeled"]) | set(UNLABELED_RAW[1:])
    log = Path(t.log_file).read_text(encoding="utf-8")
    ignored = (f"Ignored 1 preprocessed unlabeled case(s) in {pre / 'nnUNetPlans_2d_unlabeled'} whose image is no "
               f"longer in imagesUnlabeled: ['{deleted}']")
    assert ignored in log
    redone = blosc2.open(str(pre / "nnUNetPlans_2d_unlabeled" / f"{replaced}.b2nd"), mode="r")[:]
    np.testing.assert_array_equal(redone, blosc2.open(str(pre / "nnUNetPlans_2d" / f"{LABELED[0]}.b2nd"),
                                                      mode="r")[:])

    shutil.copy(unl / f"{replaced}_0000.nii.gz", unl / "scan.nii.gz")  # no _XXXX channel index
    with pytest.raises(ValueError, match="1 problem") as by_command:
        preprocess_unlabeled(DATASET_ID, "2d", num_processes=1, progress_bar=False)
    with pytest.raises(ValueError, match="1 problem") as by_trainer:
        make_trainer(nnUNetTrainerPICK, pre, "2d").on_train_start()
    line = f"{unl / 'scan.nii.gz'}: name is not {{CASE}}_{{XXXX}}.nii.gz"
    assert line in str(by_command.value)
    assert [x for x in str(by_trainer.value).splitlines() if line in x] == \
           [x for x in str(by_command.value).splitlines() if line in x]


def test_preprocessed_case_equals_nnunets_after_a_kill_left_a_half_file(private_dataset, tmp_path):
    """The layout an interrupted run of the earlier version left (a half-written ``.partial/ID.b2nd``) no longer
    blocks: the next run removes it and preprocesses the case exactly as nnU-Net does."""
    raw, pre = private_dataset
    out = pre / "nnUNetPlans_2d_unlabeled"
    (out / ".partial").mkdir(parents=True)
    case = UNLABELED_RAW[3]
    reference = tmp_path / "reference"
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(str(pre / "nnUNetPlans.json"))
    dataset_json = json.loads((pre / "dataset.json").read_text(encoding="utf-8"))
    _preprocess_case(case, [str(raw / "imagesUnlabeled" / f"{case}_0000.nii.gz")], str(reference), pm,
                     pm.get_configuration("2d"), dataset_json)
    half = (reference / f"{case}.b2nd").read_bytes()
    (out / ".partial" / f"{case}.b2nd").write_bytes(half[: len(half) // 2])
    done = preprocess_unlabeled(DATASET_ID, "2d", num_processes=1, progress_bar=False)
    assert sorted(done) == UNLABELED_RAW
    np.testing.assert_array_equal(blosc2.open(str(out / f"{case}.b2nd"), mode="r")[:],
                                  blosc2.open(str(reference / f"{case}.b2nd"), mode="r")[:])
    assert not (out / ".partial").exists()


def test_skipped_step_warning_names_the_cases_of_the_batch(hippocampus, monkeypatch):
    """A real labeled and unlabeled batch, the unlabeled images made NaN (as a NaN scan preprocessed by an earlier
    version would be): the step is skipped and the log names the cases of both batches."""
    import math

    import torch

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d", batch_size=2)
    t.on_train_start()
    t.current_epoch = t.num_warmup_epochs
    unlabeled = next(t.dataloader_unlabeled)

    class NaNImages:
        def __next__(self):
            return {**unlabeled, "data": torch.full_like(unlabeled["data"], float("nan"))}

    t.dataloader_unlabeled = NaNImages()
    batch = next(t.dataloader_train)
    assert math.isnan(t.train_step(batch)["loss"])
    warning = [line for line in Path(t.log_file).read_text(encoding="utf-8").splitlines()
               if "optimizer step skipped" in line][-1]
    labeled_ids = [str(k) for k in batch["keys"]]
    unlabeled_ids = [str(k) for k in unlabeled["keys"]]
    assert set(labeled_ids) <= set(FOLD0["train"])
    assert set(unlabeled_ids) <= set(FOLD0["unlabeled"]) | set(UNLABELED_RAW)
    assert f"Cases of this step: labeled {labeled_ids}, unlabeled {unlabeled_ids}" in warning
    t.optimizer.zero_grad(set_to_none=True)


def test_undeclared_label_values_are_named_at_start_up(private_dataset):
    """A labelsTr file with a value dataset.json does not declare: nnU-Net trains into 'index 5 is out of bounds'
    naming no file; the PICK trainer refuses at start-up, naming it."""
    raw, pre = private_dataset
    path = raw / "labelsTr" / f"{LABELED[3]}.nii.gz"
    img = sitk.ReadImage(str(path))
    seg = sitk.GetArrayFromImage(img)
    seg[seg == 2] = 5  # e.g. a label merged from another dataset's numbering
    out = sitk.GetImageFromArray(seg)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(path))
    before = snapshot(pre)
    with pytest.raises(ValueError, match=r"1 problem\(s\)") as err:
        make_trainer(nnUNetTrainerPICK, pre, "2d").on_train_start()
    assert (f"{path} (labeled case {LABELED[3]}): label value(s) [5] are not declared in dataset.json 'labels' "
            f"(declared: [0, 1, 2])") in str(err.value)
    assert snapshot(pre) == before


def test_no_unlabeled_data_is_refused_before_the_labeled_loaders_start(private_dataset, monkeypatch):
    """The refusal must be the last thing the user sees: no data-loader workers are started that would print their
    shutdown tracebacks after it."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    raw, pre = private_dataset
    shutil.rmtree(raw / "imagesUnlabeled")
    (pre / "splits_final.json").write_text(json.dumps([{"train": FOLD0["train"], "val": FOLD0["val"]}]),
                                           encoding="utf-8")
    started = []
    monkeypatch.setattr(nnUNetTrainer, "get_dataloaders", lambda self: started.append(1) or (None, None))
    with pytest.raises(ValueError, match="No unlabeled data for"):
        make_trainer(nnUNetTrainerPICK, pre, "2d").on_train_start()
    assert started == []
