"""``nnUNetv2_pick_demo --compare`` on a tiny schedule: both arms trained, predicted and scored by nnU-Net's real
commands; the console shows the trainers' progress lines while they run and both arms side by side at the end."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import pytest
import torch

from nnunet_pick import demo
from nnunet_pick.subprocesses import run_streamed

EPOCHS = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """The demo's CLI with --compare, with 2-epoch x 3-iteration versions of the demo's two trainers."""
    ext = tmp_path_factory.mktemp("tiny_demo_trainers")
    (ext / "tiny").mkdir()
    (ext / "tiny" / "__init__.py").write_text("", encoding="utf-8")
    (ext / "tiny" / "trainers.py").write_text(textwrap.dedent(f"""
        import torch
        from nnunet_pick.training.variants import nnUNetTrainer_demo, nnUNetTrainerPICK_demo

        class nnUNetTrainerPICK_demoTest(nnUNetTrainerPICK_demo):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = {EPOCHS}, 3, 1
                self.num_warmup_epochs, self.mim_figure_every = 1, 1

            def perform_actual_validation(self, save_probabilities=False):
                pass  # nnU-Net's final validation is not under test here (saves a minute of CPU)

        class nnUNetTrainer_demoTest(nnUNetTrainer_demo):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = {EPOCHS}, 3, 1

            def perform_actual_validation(self, save_probabilities=False):
                pass
    """), encoding="utf-8")
    workdir = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_extTrainer", str(ext))
        mp.setenv("nnUNet_compile", "f")
        from nnunet_pick.cli import demo as cli

        mp.setattr(cli, "print_text", lines.append)
        rc = cli.main(["--workdir", str(workdir), "--compare", "-tr", "nnUNetTrainerPICK_demoTest",
                       "--baseline-tr", "nnUNetTrainer_demoTest"])
    (workdir / "console.txt").write_text("\n".join(lines), encoding="utf-8")  # for a look after a failure
    return {"rc": rc, "out": "\n".join(lines), "lines": lines, "workdir": workdir}


def test_compare_prints_both_arms_with_their_difference(compare_run):
    assert compare_run["rc"] == 0, compare_run["out"][-3000:]
    out, workdir = compare_run["out"], compare_run["workdir"]
    means = {}
    for folder in ("predictions", "predictions_baseline"):
        summary = json.loads((workdir / folder / "summary.json").read_text(encoding="utf-8"))
        means[folder] = {name: summary["mean"][label]["Dice"] for label, name in (("1", "Anterior"),
                                                                                  ("2", "Posterior"))}
    for name in ("Anterior", "Posterior"):
        row = re.search(rf"^    {name}\s+(\d\.\d{{3}})\s+(\d\.\d{{3}})\s+([+-]\d\.\d{{3}})$", out, re.M)
        assert row, out[-3000:]
        pick, base, diff = (float(v) for v in row.groups())
        assert pick == pytest.approx(means["predictions"][name], abs=5e-4)
        assert base == pytest.approx(means["predictions_baseline"][name], abs=5e-4)
        assert diff == pytest.approx(means["predictions"][name] - means["predictions_baseline"][name], abs=5e-4)
    words = " ".join(out.split())  # the explanations are wrapped at 118 characters
    assert "difference = PICK - nnU-Net, positive = PICK better" in words
    assert "Dice is the overlap of the predicted and the reference structure: 0 = none, 1 = identical" in words
    # the baseline is nnU-Net's plain network: no PICK decoders in its checkpoint
    ckpt = torch.load(workdir / "nnUNet_results" / demo.DATASET_NAME /
                      f"nnUNetTrainer_demoTest__nnUNetPlans__{demo.CPU_CONFIGURATION}" / "fold_0" /
                      "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert {k.split(".")[0] for k in ckpt["network_weights"]} == {"encoder", "decoder"}


def test_console_shows_progress_of_every_epoch_of_both_arms_before_the_report(compare_run):
    lines = compare_run["lines"]
    report = next(i for i, line in enumerate(lines) if line.startswith("[demo] Test-set Dice"))
    during = "\n".join(lines[:report])
    assert during.count("[demo]   Training log:") == 2  # the path may wrap to the next line
    assert during.count("[demo]   Time estimate on this machine, from the first iterations") == 2
    for epoch in range(EPOCHS):
        assert len(re.findall(rf"^\[demo\]   epoch {epoch} \(of 0-{EPOCHS - 1}\) done in [\d.]+ (s|min): "
                              r"train_loss -?\d", during, re.M)) == 2
    assert re.search(r"^\[demo\]   PICK epoch 0: warm-up \(labeled only\); L_seg", during, re.M)
    assert re.search(r"^\[demo\]   PICK epoch 1: PICK \(labeled \+ unlabeled\)", during, re.M)
    assert len(re.findall(r"^\[demo\]   predicted hippocampus_\d+ \(\d done\)$", during, re.M)) == 12
    # wrapped at 120 columns; only a path longer than a line stays whole, for copying
    physical = "\n".join(lines).splitlines()
    assert all(len(line) <= 120 or len(line.split()[-1]) > 60 for line in physical), max(physical, key=len)


def test_run_streamed_reports_silence_and_failures(tmp_path):
    shown, quiet = [], []
    script = "import time; print('first', flush=True); time.sleep(2.6); print('second')"
    run_streamed([sys.executable, "-c", script], {}, tmp_path / "log.txt",
                 lambda line: shown.append(line) or line == "first", quiet.append, silence_seconds=1.0)
    assert shown == ["first", "second"]
    assert len(quiet) >= 1  # the 2.6 s without a shown line
    assert quiet[0] >= 1.0
    assert all(b - a >= 1.0 for a, b in zip(quiet, quiet[1:], strict=False))  # one call per silence_seconds
    assert (tmp_path / "log.txt").read_text(encoding="utf-8").endswith("first\nsecond\n")
    with pytest.raises(RuntimeError, match="exit code 3"):
        run_streamed([sys.executable, "-c", "print('bad input'); raise SystemExit(3)"], {}, tmp_path / "log.txt",
                     lambda line: False, quiet.append)


def test_demo_console_shows_progress_lines_only():
    shown = []
    console = demo.DemoConsole(demo.Path("demo_commands.log"), shown.append)
    assert console.command_line("2026-12-01 05:40:39.123456: epoch 3 (of 0-17) done in 31 s: train_loss -0.4100")
    assert console.command_line("2026-12-01 05:40:39.123456: PICK epoch 3: warm-up (labeled only); L_seg -0.41")
    assert console.command_line("done with hippocampus_017")
    assert not console.command_line("2026-12-01 05:40:39.123456: Current learning rate: 0.00946")
    assert not console.command_line("Predicting hippocampus_017.nii.gz:")
    assert shown == ["[demo]   epoch 3 (of 0-17) done in 31 s: train_loss -0.4100",
                     "[demo]   PICK epoch 3: warm-up (labeled only); L_seg -0.41",
                     "[demo]   predicted hippocampus_017 (1 done)"]
