"""Test helpers and the layout of the real Hippocampus test dataset (built by the ``hippocampus`` fixture).

Dataset991 has 10 labeled cases in ``imagesTr``, 6 cases in ``imagesUnlabeled`` and 2 test cases in ``imagesTs``.
``splits_final.json`` fold 0: 4 train, 2 val, 4 ``unlabeled`` (cases of imagesTr); fold 1 is deliberately invalid
(an ``unlabeled`` id is also a ``val`` id).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_pick.demo_data import HIPPOCAMPUS

DATASET_ID = 991
DATASET_NAME = f"Dataset{DATASET_ID}_PICKTestHippocampus"
ALL_IDS = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
LABELED = ALL_IDS[:10]
UNLABELED_RAW = ALL_IDS[10:16]
TEST = ALL_IDS[16:18]
FOLD0 = {"train": LABELED[:4], "val": LABELED[4:6], "unlabeled": LABELED[6:10]}
FOLD1_INVALID = {"train": LABELED[:4], "val": LABELED[4:6], "unlabeled": LABELED[5:9]}
# the short PICK training of the session fixture ``trained`` (conftest.py), shared by several test files
E2E_TRAINER = "nnUNetTrainerPICK_e2eTest"
E2E_CONFIGURATION = "2d_e2e"
E2E_EPOCHS, E2E_ITERATIONS, E2E_WARMUP = 3, 4, 1


def command(name: str) -> str:
    """Console script of this environment."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def run_checked(args: list[str], env: dict, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command, fail the test with its output if it exits non-zero."""
    proc = subprocess.run(args, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-6000:]}\n"
                    f"STDERR:\n{proc.stderr[-6000:]}")
    return proc


def base_env(dirs: dict[str, Path], **extra: str) -> dict[str, str]:
    """Environment for subprocesses: the session's nnU-Net folders, no compile, 2 processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(nnUNet_compile="f", nnUNet_def_n_proc="2", **extra)
    return env


def load_plans(preprocessed: Path, plans: str = "nnUNetPlans") -> dict:
    return json.loads((preprocessed / f"{plans}.json").read_text(encoding="utf-8"))


def make_trainer(cls, preprocessed: Path, configuration: str = "2d", fold: int = 0, batch_size: int | None = None,
                 **settings):
    """Instantiate a trainer the way nnU-Net's get_trainer_from_args does, on the CPU, with ``settings`` applied
    (and the configuration's batch size replaced by ``batch_size`` if given)."""
    import torch

    plans = load_plans(preprocessed)
    plans["continue_training"] = False
    if batch_size is not None:
        plans["configurations"][configuration]["batch_size"] = batch_size
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    trainer = cls(plans=plans, configuration=configuration, fold=fold, dataset_json=dataset_json,
                  device=torch.device("cpu"))
    for k, v in settings.items():
        setattr(trainer, k, v)
    return trainer
