"""``nnUNetv2_pick_promote`` on a real small dataset: a copy of the session's planned and preprocessed Hippocampus
dataset (Dataset991, 2d) as Dataset992, with its ``imagesUnlabeled`` preprocessed by nnunet-pick. The corrected
labels are the cases' real reference labels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
from helpers import DATASET_NAME, FOLD0, LABELED, UNLABELED_RAW, base_env, command, make_trainer, run_checked

from nnunet_pick.annotation.promote import JOURNAL, PromotionRefusedError, promote
from nnunet_pick.demo_data import HIPPOCAMPUS

pytestmark = pytest.mark.slow

PROMOTE_ID = 992
PROMOTE_NAME = f"Dataset{PROMOTE_ID}_PICKPromoteTest"
CASES = UNLABELED_RAW[:2]
SPLITS = [FOLD0, {"train": LABELED[4:8], "val": LABELED[:2], "unlabeled": LABELED[8:10]}]


@pytest.fixture(scope="module")
def template(hippocampus, nnunet_dirs, tmp_path_factory) -> Path:
    """nnUNet_raw / nnUNet_preprocessed holding Dataset992 (a copy of Dataset991 with two valid folds), its
    imagesUnlabeled preprocessed for 2d by nnunet-pick."""
    root = tmp_path_factory.mktemp("promote_template")
    raw = root / "nnUNet_raw" / PROMOTE_NAME
    pre = root / "nnUNet_preprocessed" / PROMOTE_NAME
    shutil.copytree(nnunet_dirs["nnUNet_raw"] / DATASET_NAME, raw)
    shutil.copytree(hippocampus, pre, ignore=shutil.ignore_patterns("*_unlabeled", "*ResEnc*"))
    plans = json.loads((pre / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["dataset_name"] = PROMOTE_NAME
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans, indent=2), encoding="utf-8")
    for f in (raw / "splits_final.json", pre / "splits_final.json"):
        f.write_text(json.dumps(SPLITS), encoding="utf-8")
    env = base_env({"nnUNet_raw": root / "nnUNet_raw", "nnUNet_preprocessed": root / "nnUNet_preprocessed",
                    "nnUNet_results": root / "nnUNet_results"})
    run_checked([command("nnUNetv2_pick_preprocess_unlabeled"), "-d", str(PROMOTE_ID), "-c", "2d", "-np", "1"], env)
    return root


@pytest.fixture
def dataset(template, tmp_path, monkeypatch) -> dict:
    """A fresh copy of the template for one test, with nnU-Net's folder variables pointing at it, and a folder of
    corrected labels for ``CASES``."""
    root = tmp_path / "nnunet"
    shutil.copytree(template, root)
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, str(root / k))
    corrected = tmp_path / "corrected"
    corrected.mkdir()
    for case in CASES:
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", corrected)
    return {"root": root, "raw": root / "nnUNet_raw" / PROMOTE_NAME, "pre": root / "nnUNet_preprocessed" / PROMOTE_NAME,
            "corrected": corrected, "tmp": tmp_path}


def file_hashes(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under the folders, by path."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def unlabeled_preprocessed(pre: Path) -> set[str]:
    return {p.name for p in (pre / "nnUNetPlans_2d_unlabeled").iterdir() if p.is_file()}


def assert_promoted(d: dict) -> None:
    """Files moved, labels copied, dataset.json and both splits files updated, stale files gone."""
    raw, pre = d["raw"], d["pre"]
    for case in CASES:
        assert (raw / "imagesTr" / f"{case}_0000.nii.gz").is_file()
        assert not (raw / "imagesUnlabeled" / f"{case}_0000.nii.gz").exists()
        assert (raw / "labelsTr" / f"{case}.nii.gz").read_bytes() == (d["corrected"] / f"{case}.nii.gz").read_bytes()
        assert not {f"{case}.pkl", f"{case}.b2nd", f"{case}_seg.b2nd"} & unlabeled_preprocessed(pre)
    # the other imagesUnlabeled cases are untouched, and still preprocessed
    rest = UNLABELED_RAW[2:]
    assert {f"{c}.pkl" for c in rest} <= unlabeled_preprocessed(pre)
    assert sorted(p.name for p in (raw / "imagesUnlabeled").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in rest)
    for folder in (raw, pre):
        assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 10 + len(CASES)
        splits = json.loads((folder / "splits_final.json").read_text(encoding="utf-8"))
        for new, old in zip(splits, SPLITS, strict=True):
            assert new["train"] == old["train"] + CASES
            assert new["val"] == old["val"]
            assert new["unlabeled"] == old["unlabeled"]
    assert not (raw / JOURNAL).exists()


def test_promotion_makes_the_cases_labeled_training_data(dataset, capsys):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_pick.cli.promote import main

    assert main(["-d", str(PROMOTE_ID), "-i", str(dataset["corrected"])]) == 0
    out = capsys.readouterr().out
    assert f"promoted 2 cases to labeled training data: {CASES}" in out
    assert f"nnUNetv2_preprocess -d {PROMOTE_ID}" in out
    assert_promoted(dataset)
    # nnU-Net's dataset loading counts the cases as labeled
    found = get_filenames_of_train_images_and_targets(str(dataset["raw"]))
    for case in CASES:
        assert found[case]["label"] == str(dataset["raw"] / "labelsTr" / f"{case}.nii.gz")
    # ... and after nnU-Net's preprocessing its trainer trains on them, with their labels, in every fold
    run_checked([command("nnUNetv2_preprocess"), "-d", str(PROMOTE_ID), "-c", "2d", "-np", "1"],
                base_env({k: dataset["root"] / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}))
    for fold in (0, 1):
        trainer = make_trainer(nnUNetTrainer, dataset["pre"], fold=fold)
        train_set, val_set = trainer.get_tr_and_val_datasets()
        assert set(CASES) <= set(train_set.identifiers)
        assert not set(CASES) & set(val_set.identifiers)
    _, seg, _, _ = train_set.load_case(CASES[0])
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{CASES[0]}.nii.gz")))
    values = np.unique(seg[:])
    assert set(values[values >= 0]) == set(np.unique(reference))  # -1: nnU-Net's outside-the-crop marker


def _write_label(path: Path, reference_case: str, *, spacing_factor=1.0, origin_shift=0.0, extra_value=None):
    img = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{reference_case}.nii.gz"))
    if extra_value is not None:
        arr = sitk.GetArrayFromImage(img)
        arr.flat[0] = extra_value
        new = sitk.GetImageFromArray(arr)
        new.CopyInformation(img)
        img = new
    img.SetSpacing([s * spacing_factor for s in img.GetSpacing()])
    img.SetOrigin([o + origin_shift for o in img.GetOrigin()])
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("problem", ["clash", "spacing", "origin", "undeclared_value", "missing_label"])
def test_each_refusal_changes_nothing(dataset, problem):
    raw, corrected, case = dataset["raw"], dataset["corrected"], CASES[0]
    expected = {
        "clash": "name clash",
        "spacing": "does not match the image's geometry",
        "origin": "does not match the image's geometry",
        "undeclared_value": "undeclared label values",
        "missing_label": "missing label",
    }[problem]
    if problem == "clash":
        shutil.copy(raw / "imagesUnlabeled" / f"{case}_0000.nii.gz", raw / "imagesTr")
    elif problem == "spacing":
        _write_label(corrected / f"{case}.nii.gz", case, spacing_factor=2.0)
    elif problem == "origin":
        _write_label(corrected / f"{case}.nii.gz", case, origin_shift=5.0)
    elif problem == "undeclared_value":
        _write_label(corrected / f"{case}.nii.gz", case, extra_value=7)
    else:
        (corrected / f"{case}.nii.gz").unlink()
    before = file_hashes(dataset["root"], corrected)
    with pytest.raises(PromotionRefusedError, match=expected) as refused:
        promote(str(raw), str(dataset["pre"]), str(corrected), list(CASES))
    assert case in str(refused.value)
    assert CASES[1] not in str(refused.value)  # the good case is not reported ...
    assert file_hashes(dataset["root"], corrected) == before  # ... and not promoted either: nothing changed


def test_all_problems_are_listed_in_one_message(dataset):
    corrected = dataset["corrected"]
    (corrected / f"{CASES[0]}.nii.gz").unlink()
    _write_label(corrected / f"{CASES[1]}.nii.gz", CASES[1], extra_value=9)
    before = file_hashes(dataset["root"], corrected)
    with pytest.raises(PromotionRefusedError) as refused:
        promote(str(dataset["raw"]), str(dataset["pre"]), str(corrected), [*CASES, "no_such_case"])
    message = str(refused.value)
    assert f"{CASES[0]}: missing label" in message
    assert f"{CASES[1]}: label {corrected / CASES[1]}.nii.gz has undeclared label values" in message
    assert "no_such_case: not in" in message
    assert file_hashes(dataset["root"], corrected) == before


KILLER = textwrap.dedent("""
    import os, signal, sys
    import nnunet_pick.annotation.promote as promote_module

    def hook(step):
        if step == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    promote_module._hook = hook
    from nnunet_pick.cli.promote import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("step", ["labels", "stale", f"move:{CASES[0]}_0000.nii.gz", "dataset_json"])
def test_killed_promotion_leaves_every_case_in_one_folder_and_a_rerun_completes(dataset, step, capsys):
    from nnunet_pick.cli.promote import main

    raw = dataset["raw"]
    args = ["-d", str(PROMOTE_ID), "-i", str(dataset["corrected"])]
    proc = subprocess.run([sys.executable, "-c", KILLER, step, *args], env=dict(os.environ), capture_output=True,
                          encoding="utf-8", errors="replace", timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (raw / JOURNAL).is_file()
    for case in CASES:
        places = [(raw / f / f"{case}_0000.nii.gz").is_file() for f in ("imagesUnlabeled", "imagesTr")]
        assert places.count(True) == 1, (case, places)
    assert main(args) == 0
    assert f"finished an interrupted promotion of {CASES}" in capsys.readouterr().out
    assert_promoted(dataset)
