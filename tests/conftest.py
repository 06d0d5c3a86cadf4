"""Session fixtures: nnU-Net folders, and a real Hippocampus dataset planned with nnU-Net's own commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import (
    DATASET_ID,
    DATASET_NAME,
    FOLD0,
    FOLD1_INVALID,
    LABELED,
    TEST,
    UNLABELED_RAW,
    base_env,
    command,
    run_checked,
)

from nnunet_pick.demo_data import HIPPOCAMPUS


@pytest.fixture(scope="session")
def nnunet_dirs(tmp_path_factory) -> dict[str, Path]:
    """nnUNet_raw / nnUNet_preprocessed / nnUNet_results for the whole session, exported to os.environ."""
    root = tmp_path_factory.mktemp("nnunet")
    dirs = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in dirs.items():
            mp.setenv(k, str(v))
        mp.setenv("nnUNet_compile", "f")
        mp.setenv("nnUNet_def_n_proc", "2")
        yield dirs


@pytest.fixture(scope="session")
def hippocampus(nnunet_dirs) -> Path:
    """Dataset991 in nnUNet_raw, fingerprinted, planned (nnUNetPlans and nnUNetResEncUNetMPlans) and preprocessed
    for ``2d`` by nnU-Net's own commands; returns the preprocessed dataset folder."""
    raw = nnunet_dirs["nnUNet_raw"] / DATASET_NAME
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs"):
        (raw / sub).mkdir(parents=True)
    for case in LABELED:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
    for case in UNLABELED_RAW:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesUnlabeled")
    for case in TEST:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTs")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", raw / "labelsTs")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(LABELED), "file_ending": ".nii.gz",
        "licence": "CC-BY-SA 4.0", "reference": "MSD Task04_Hippocampus (Vanderbilt University Medical Center)"}),
        encoding="utf-8")
    (raw / "splits_final.json").write_text(json.dumps([FOLD0, FOLD1_INVALID]), encoding="utf-8")
    env = base_env(nnunet_dirs)
    run_checked([command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "2"], env)
    run_checked([command("nnUNetv2_plan_experiment"), "-d", str(DATASET_ID), "-pl", "nnUNetPlannerResEncM"], env)
    return nnunet_dirs["nnUNet_preprocessed"] / DATASET_NAME


