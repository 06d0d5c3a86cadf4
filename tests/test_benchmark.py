"""The report's arithmetic, and the one-command benchmark end to end on real cases (tiny schedules, 2 repeats)."""

from __future__ import annotations

import io
import json
import math
import textwrap

import pytest
from helpers import DATASET_ID, DATASET_NAME

from nnunet_pick.benchmark.report import Run, compare_to_baseline, markdown_table, summarize_runs, write_report
from nnunet_pick.console import print_text


def run(trainer, repeat, dice, hd=2.0, fraction=0.1):
    scores = {"Dice": dice, "Jaccard": dice / (2 - dice), "ASD_voxel": hd / 2, "HD95_voxel": hd, "ASD_mm": hd,
              "HD95_mm": 2 * hd}
    return Run(trainer, 0, repeat, fraction, scores, f"/x/{trainer}/{repeat}")


def test_rows_are_mean_and_sample_sd_over_runs_with_best_in_bold():
    runs = [run("nnUNetTrainer", 0, 0.70, 4.0), run("nnUNetTrainer", 1, 0.74, 6.0),
            run("nnUNetTrainerPICK", 0, 0.80, 3.0), run("nnUNetTrainerPICK", 1, 0.84, 3.0)]
    rows = summarize_runs(runs, ["nnUNetTrainer", "nnUNetTrainerPICK"])
    assert [r.trainer for r in rows] == ["nnUNetTrainer", "nnUNetTrainerPICK"]
    assert rows[0].mean["Dice"] == pytest.approx(0.72)
    assert rows[0].std["Dice"] == pytest.approx(0.02 * math.sqrt(2))  # sample sd of 0.70, 0.74
    assert rows[1].mean["HD95_voxel"] == 3.0
    table = markdown_table(rows)
    assert "| nnUNetTrainerPICK | 10 % | 2 | **82.00 ± 2.83** |" in table
    assert "| nnUNetTrainer | 10 % | 2 | 72.00 ± 2.83 |" in table
    assert "**3.00 ± 0.00**" in table  # lower HD95 is better
    (line,) = compare_to_baseline(rows, "nnUNetTrainer")
    assert "Dice +10.00 points" in line
    assert "exceeds the run-to-run spread" in line  # 10 > 2.83 + 2.83


def test_report_prints_on_an_ascii_console():
    """CI runners with LC_ALL=C give Python an ASCII stdout; the table must still print, in ASCII spelling."""
    rows = summarize_runs([run("nnUNetTrainer", 0, 0.70), run("nnUNetTrainer", 1, 0.74)], ["nnUNetTrainer"])
    table = markdown_table(rows)
    raw = io.BytesIO()
    console = io.TextIOWrapper(raw, encoding="ascii", errors="strict")
    print_text(table, console)
    console.flush()
    printed = raw.getvalue().decode("ascii")
    assert "| nnUNetTrainer | 10 % | 2 | **72.00 +/- 2.83** |" in printed
    assert printed.strip() == table.replace("±", "+/-").strip()


def test_a_difference_within_the_spread_is_called_so(tmp_path):
    runs = [run("base", 0, 0.70), run("base", 1, 0.80), run("pick", 0, 0.72), run("pick", 1, 0.81)]
    rows = summarize_runs(runs, ["base", "pick"])
    (line,) = compare_to_baseline(rows, "base")
    assert "does not exceed" in line
    # two labeled fractions and a lambda sweep produce the paper's two plots
    more = runs + [run("base", 0, 0.8, fraction=0.2), run("nnUNetTrainerPICK_lambda0p2", 0, 0.75),
                   run("nnUNetTrainerPICK", 0, 0.77)]
    rows = summarize_runs(more, ["base", "pick", "nnUNetTrainerPICK_lambda0p2", "nnUNetTrainerPICK"])
    write_report(rows, "base", str(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "report.csv", "dice_vs_labeled_fraction.png",
                                                    "dice_vs_lambda.png"}
    header = (tmp_path / "report.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("trainer,labeled_fraction,runs,Dice_mean,Dice_sd,Jaccard_mean")


@pytest.mark.slow
def test_benchmark_runs_resumes_and_reports(hippocampus, nnunet_dirs, tmp_path, monkeypatch, capsys):
    from nnunet_pick.benchmark.runner import run_benchmark

    ext = tmp_path / "ext"
    (ext / "tiny").mkdir(parents=True)
    (ext / "tiny" / "__init__.py").write_text("", encoding="utf-8")
    (ext / "tiny" / "schedules.py").write_text(textwrap.dedent("""
        import torch
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunet_pick import nnUNetTrainerPICK

        def short(self):
            self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 2, 2, 1

        class nnUNetTrainer_tinyTest(nnUNetTrainer):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                short(self)

        class nnUNetTrainerPICK_tinyTest(nnUNetTrainerPICK):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                short(self)
                self.num_warmup_epochs = 1
    """), encoding="utf-8")
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    out = tmp_path / "bench"
    kwargs = {"folds": [0], "trainers": ["nnUNetTrainerPICK_tinyTest"], "baseline": "nnUNetTrainer_tinyTest",
              "repeats": 2, "device": "cpu", "output": str(out), "seed": 7}
    text = run_benchmark(str(DATASET_ID), "2d", **kwargs)
    for repeat in (0, 1):
        meta = json.loads((out / f"repeat_{repeat}" / "pick_benchmark_run.json").read_text(encoding="utf-8"))
        assert meta == {"repeat": repeat, "seed": 7 + repeat, "labeled_fraction": 0.5, "configuration": "2d",
                        "plans": "nnUNetPlans"}  # fold 0: 4 labeled + 4 unlabeled
        for trainer in ("nnUNetTrainer_tinyTest", "nnUNetTrainerPICK_tinyTest"):
            fold = out / f"repeat_{repeat}" / DATASET_NAME / f"{trainer}__nnUNetPlans__2d" / "fold_0"
            assert (fold / "checkpoint_final.pth").is_file()
            assert (fold / "validation" / "summary_pick.json").is_file()
    assert "| nnUNetTrainer_tinyTest | 50 % | 2 |" in text
    assert "| nnUNetTrainerPICK_tinyTest | 50 % | 2 |" in text
    assert "nnUNetTrainerPICK_tinyTest vs nnUNetTrainer_tinyTest: Dice" in text
    assert (out / "report.md").read_text(encoding="utf-8").strip() == text.strip()
    # each repeat trained through nnU-Net's entry point with its own seed
    for repeat in (0, 1):
        log = (out / "logs" / f"repeat{repeat}_fold0_nnUNetTrainer_tinyTest.log").read_text(encoding="utf-8")
        assert f"nnunet_pick.benchmark.seeded_train {7 + repeat} {DATASET_ID} 2d 0 -tr nnUNetTrainer_tinyTest" in log
    # resuming does no training and gives the same report
    capsys.readouterr()
    assert run_benchmark(str(DATASET_ID), "2d", **kwargs) == text
    assert capsys.readouterr().out.count("done already") == 4
