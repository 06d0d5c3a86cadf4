"""Session fixtures: nnU-Net folders, and a real Hippocampus dataset planned with nnU-Net's own commands."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from helpers import (
    DATASET_ID,
    DATASET_NAME,
    E2E_CONFIGURATION,
    E2E_EPOCHS,
    E2E_ITERATIONS,
    E2E_TRAINER,
    E2E_WARMUP,
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


@pytest.fixture(scope="session")
def trained(hippocampus, nnunet_dirs, tmp_path_factory):
    """A short PICK training of the user's subclass ``E2E_TRAINER`` (in the user's own ``nnUNet_extTrainer``
    folder) on Dataset991 fold 0: train, re-validate, continue and predict ``imagesTs`` with nnU-Net's commands;
    returns the folders involved. Session-wide so that every test file that needs a trained PICK model reuses it."""
    ext = tmp_path_factory.mktemp("user_ext_trainers")
    (ext / "user_trainers").mkdir()
    (ext / "user_trainers" / "__init__.py").write_text("", encoding="utf-8")
    (ext / "user_trainers" / "short.py").write_text(textwrap.dedent(f"""
        import torch
        from nnunet_pick import nnUNetTrainerPICK

        class {E2E_TRAINER}(nnUNetTrainerPICK):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs = {E2E_EPOCHS}
                self.num_iterations_per_epoch = {E2E_ITERATIONS}
                self.num_val_iterations_per_epoch = 2
                self.num_warmup_epochs = {E2E_WARMUP}
                self.mim_figure_every = 2
    """), encoding="utf-8")
    # the demo's CPU sizing: nnU-Net's 2d configuration with batch size 8 (same network and data)
    plans_file = hippocampus / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"][E2E_CONFIGURATION] = {"inherits_from": "2d", "batch_size": 8}
    plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")

    # the trainer must preprocess imagesUnlabeled itself (other tests may have done it already)
    shutil.rmtree(hippocampus / "nnUNetPlans_2d_unlabeled", ignore_errors=True)
    env = base_env(nnunet_dirs, nnUNet_n_proc_DA="1", nnUNet_extTrainer=str(ext))
    train = [command("nnUNetv2_train"), str(DATASET_ID), E2E_CONFIGURATION, "0", "-tr", E2E_TRAINER, "-device", "cpu"]
    first = run_checked(train, env)
    run_checked([*train, "--val"], env)
    cont = run_checked([*train, "--c"], env)
    out = tmp_path_factory.mktemp("predictions")
    raw = nnunet_dirs["nnUNet_raw"] / DATASET_NAME
    run_checked([command("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(DATASET_ID),
                 "-c", E2E_CONFIGURATION, "-tr", E2E_TRAINER, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
                env)
    fold = nnunet_dirs["nnUNet_results"] / DATASET_NAME / f"{E2E_TRAINER}__nnUNetPlans__{E2E_CONFIGURATION}" / "fold_0"
    return {"fold": fold, "predictions": out, "raw": raw, "train_stdout": first.stdout, "continue_stdout": cont.stdout,
            "nnUNet_extTrainer": env["nnUNet_extTrainer"]}
