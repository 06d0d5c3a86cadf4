"""``--c`` / ``--val`` after the plans were edited: refused with what differs, before anything is loaded or written
(issue 11). The checkpoint is a real one of the PICK network for Dataset991's ``2d`` plans (written by the trainer's own
``save_checkpoint`` right after ``initialize``: no training is needed to test what is compared on loading)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import DATASET_ID, DATASET_NAME, base_env, command, load_plans

from nnunet_pick import nnUNetTrainerPICK


def trainer(preprocessed: Path, plans: dict, continue_training: bool) -> nnUNetTrainerPICK:
    plans = copy.deepcopy(plans)
    plans["continue_training"] = continue_training  # what nnU-Net's get_trainer_from_args sets
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    return nnUNetTrainerPICK(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                             device=torch.device("cpu"))


@pytest.fixture
def checkpoint(hippocampus, tmp_path, monkeypatch) -> tuple[Path, dict, Path]:
    """(checkpoint file, the plans it was written with, preprocessed folder) in a private results folder."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    plans = load_plans(hippocampus)
    t = trainer(hippocampus, plans, False)
    t.initialize()
    path = Path(t.output_folder) / "checkpoint_latest.pth"
    t.save_checkpoint(str(path))
    return path, plans, hippocampus


def edited(plans: dict, edit) -> dict:
    plans = copy.deepcopy(plans)
    edit(plans["configurations"]["2d"]["architecture"]["arch_kwargs"])
    return plans


def test_unchanged_plans_load(checkpoint):
    path, plans, pre = checkpoint
    t = trainer(pre, plans, True)
    t.load_checkpoint(str(path))
    assert t.was_initialized
    # a configuration added to the plans is no change for the trained one
    more = copy.deepcopy(plans)
    more["configurations"]["2d_other"] = {"inherits_from": "2d", "batch_size": 3}
    trainer(pre, more, True).load_checkpoint(str(path))


def test_edited_activation_is_refused_before_loading(checkpoint):
    """Same shapes, another network: nnU-Net would load the weights silently and train on."""
    path, plans, pre = checkpoint

    def relu(arch_kwargs):
        arch_kwargs["nonlin"] = "torch.nn.ReLU"

    t = trainer(pre, edited(plans, relu), True)
    before = {p.name: p.stat().st_mtime_ns for p in path.parent.parent.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="was trained with other plans") as err:
        t.load_checkpoint(str(path))
    message = str(err.value)
    assert ("configurations.2d.architecture.arch_kwargs.nonlin: 'torch.nn.LeakyReLU' in the checkpoint, "
            "'torch.nn.ReLU' now") in message
    assert "restore the plans file" in message
    assert "-p nnUNetPlansEdited" in message
    assert not t.was_initialized  # refused before the network was even built, let alone loaded
    assert {p.name: p.stat().st_mtime_ns for p in path.parent.parent.rglob("*") if p.is_file() and
            not p.name.startswith("training_log")} == {k: v for k, v in before.items()
                                                       if not k.startswith("training_log")}


def test_edited_feature_list_is_refused_with_what_differs(checkpoint):
    """Other shapes: nnU-Net fails with a page of state-dict size mismatches instead."""
    path, plans, pre = checkpoint
    features = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"]
    smaller = [max(8, f // 2) for f in features]

    def halve(arch_kwargs):
        arch_kwargs["features_per_stage"] = smaller

    with pytest.raises(ValueError, match="was trained with other plans") as err:
        trainer(pre, edited(plans, halve), True).load_checkpoint(str(path))
    assert (f"configurations.2d.architecture.arch_kwargs.features_per_stage: {features!r} in the checkpoint, "
            f"{smaller!r} now") in str(err.value)
    assert "size mismatch" not in str(err.value)


@pytest.mark.slow
def test_nnunet_train_continue_ends_with_the_message(hippocampus, nnunet_dirs, tmp_path):
    """The real command: ``nnUNetv2_train ... --c`` on edited plans exits non-zero, the message is the end of its
    output, and the results folder's plans.json is left as the training wrote it."""
    pre = tmp_path / "pre" / DATASET_NAME
    pre.mkdir(parents=True)
    for name in ("dataset.json", "dataset_fingerprint.json", "splits_final.json"):
        shutil.copy(hippocampus / name, pre / name)
    shutil.copytree(hippocampus / "nnUNetPlans_2d", pre / "nnUNetPlans_2d")
    plans = load_plans(hippocampus)
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans), encoding="utf-8")
    dirs = {"nnUNet_raw": nnunet_dirs["nnUNet_raw"], "nnUNet_preprocessed": tmp_path / "pre",
            "nnUNet_results": tmp_path / "results"}
    env = base_env(dirs, nnUNet_n_proc_DA="0")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_results", str(tmp_path / "results"))
        t = trainer(pre, plans, False)
        t.initialize()
        t.save_checkpoint(str(Path(t.output_folder) / "checkpoint_latest.pth"))
    results_plans = Path(t.output_folder_base) / "plans.json"
    results_plans.write_text(json.dumps(plans), encoding="utf-8")  # what on_train_start of the first run wrote
    written = results_plans.read_bytes()

    def norm_type(arch_kwargs):
        arch_kwargs["norm_op"] = "torch.nn.modules.batchnorm.BatchNorm2d"

    (pre / "nnUNetPlans.json").write_text(json.dumps(edited(plans, norm_type)), encoding="utf-8")
    import subprocess

    proc = subprocess.run([command("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerPICK", "--c",
                           "-device", "cpu"], env=env, capture_output=True, encoding="utf-8", errors="replace",
                          timeout=600)
    assert proc.returncode != 0
    tail = proc.stderr.strip().splitlines()[-1]
    assert tail.startswith("ValueError:") or "train from scratch with -p nnUNetPlansEdited" in tail, proc.stderr[-3000:]
    assert "configurations.2d.architecture.arch_kwargs.norm_op" in proc.stderr
    assert "size mismatch" not in proc.stderr
    assert results_plans.read_bytes() == written
