"""nnUNetv2_pick_benchmark: the pass-count arithmetic, and the command on the real Hippocampus test dataset."""

from __future__ import annotations

import json

import pytest
from helpers import DATASET_ID, base_env, command, run_checked

from nnunet_pick.benchmark.step_benchmark import StepTimes, compiled_graphs, compute_ratio


def test_compute_ratio_counts_trained_passes_as_three_forward_passes():
    assert compute_ratio(2, 2) == pytest.approx(16 / 3)  # labeled 9 + unlabeled 7 against nnU-Net's 3
    assert compute_ratio(2, 4) == pytest.approx((9 * 2 + 7 * 4) / 6)  # twice the unlabeled batch
    assert compute_ratio(2, 2, train_aux_decoder=False) == pytest.approx((6 + 4) / 3)  # Table 6 ablations
    assert compute_ratio(2, 2, train_mim_decoder=False) == pytest.approx((6 + 4) / 3)


def test_wait_fraction_is_wait_over_wall_time():
    t = StepTimes(compute_s=[1.0, 3.0, 2.0], wait_s=[0.5, 0.0, 0.5])
    assert t.median_step_s == 2.0
    assert t.wait_fraction == pytest.approx(1.0 / 7.0)


def test_compiled_graphs_counts_each_recompilation():
    import torch

    layer = torch.compile(torch.nn.Linear(3, 2), backend="eager")
    before = compiled_graphs()
    layer(torch.zeros(4, 3))
    layer(torch.ones(4, 3))  # same guards: no new graph
    assert compiled_graphs() - before == 1
    with torch.no_grad():
        layer(torch.zeros(4, 3))  # grad mode is guarded: a recompilation
    assert compiled_graphs() - before == 2


@pytest.mark.slow
def test_command_measures_both_trainers_on_real_data(hippocampus, nnunet_dirs, tmp_path):
    out = tmp_path / "steps.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = run_checked([command("nnUNetv2_pick_benchmark"), "-d", str(DATASET_ID), "-c", "2d", "-n", "2",
                        "--memory-steps", "1", "--json", str(out)],
                       base_env(nnunet_dirs, nnUNet_n_proc_DA="1", TMPDIR=str(scratch)))
    figures = json.loads(out.read_text(encoding="utf-8"))
    steps = figures["median_step_s"]
    assert set(steps) == {"nnUNetTrainer", "nnUNetTrainerPICK"}
    assert figures["time_ratio"] == pytest.approx(steps["nnUNetTrainerPICK"] / steps["nnUNetTrainer"])
    batch = figures["batch_sizes"]["nnUNetTrainerPICK"]
    assert figures["compute_ratio"] == pytest.approx(compute_ratio(batch, batch))  # unlabeled batch = plans' batch
    memory = figures["peak_memory_mib"]
    assert figures["memory_ratio"] == pytest.approx(memory["nnUNetTrainerPICK"] / memory["nnUNetTrainer"])
    assert memory["nnUNetTrainer"] > 100  # a process with torch and a U-Net: hundreds of MiB, not a unit slip
    assert 0 <= figures["loader_wait_fraction"] < 1
    assert figures["memory_kind"] == "peak RSS"
    assert "| nnUNetTrainerPICK |" in proc.stdout
    assert "compute ratio from the pass count" in proc.stdout
    # nnU-Net compiles on CUDA only: on the CPU the benchmark says so rather than reporting a recompilation figure
    assert figures["torch_compile"] == {"nnUNetTrainer": False, "nnUNetTrainerPICK": False}
    assert "torch.compile: off" in proc.stdout
    assert not list(scratch.glob("pick_step_benchmark_*"))  # its temporary results folder is gone


def test_command_refuses_a_trainer_that_is_not_pick(hippocampus, nnunet_dirs):
    import subprocess

    proc = subprocess.run([command("nnUNetv2_pick_benchmark"), "-d", str(DATASET_ID), "-c", "2d", "-tr",
                           "nnUNetTrainer"], env=base_env(nnunet_dirs), capture_output=True, encoding="utf-8",
                          errors="replace")
    assert proc.returncode == 1
    assert "nnUNetTrainer is not a PICK trainer" in proc.stderr
