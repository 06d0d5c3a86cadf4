"""The accuracy protocol's pieces on fixed numbers: paired confidence intervals, gap closed, the report, the splits and
their hygiene, and the learning-curve figure drawn from a fixed nnU-Net training log (a checkpoint's ``logging``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nnunet_pick.benchmark.curves import curve_from_checkpoint, plot_learning_curves
from nnunet_pick.benchmark.protocol import (
    FULLY_SUPERVISED,
    LABELED_ONLY,
    PROTOCOLS,
    SELF_TRAINING,
    arm_schedule,
    check_splits_hygiene,
    ensure_protocol_splits,
    protocol_runs,
    protocol_splits,
    select_runs,
    split_repeats,
    write_protocol_report,
)
from nnunet_pick.benchmark.statistics import gap_closed, paired_difference

T_975_DF3 = 3.182446305284263  # Student's t quantile 0.975 with 3 degrees of freedom (tables)


def test_paired_difference_is_the_mean_of_per_repeat_differences_with_a_t_interval():
    arm = {0: 0.80, 1: 0.78, 2: 0.83, 3: 0.79}
    base = {0: 0.75, 1: 0.74, 2: 0.76, 3: 0.74, 4: 0.99}  # repeat 4 has no partner: ignored
    d = paired_difference(arm, base)
    # differences 0.05, 0.04, 0.07, 0.05: mean 0.0525, sample sd sqrt(4.75e-4 / 3)
    half = T_975_DF3 * math.sqrt(4.75e-4 / 3) / 2
    assert d.n == 4
    assert d.mean == pytest.approx(0.0525)
    assert (d.low, d.high) == (pytest.approx(0.0525 - half), pytest.approx(0.0525 + half))
    assert d.low == pytest.approx(0.03248, abs=1e-5)
    # an unpaired comparison of the same numbers would not exclude 0 as clearly: pairing is what the protocol buys
    assert d.low > 0
    one = paired_difference({0: 0.8}, {0: 0.7})
    assert one.mean == pytest.approx(0.1)
    assert math.isnan(one.low)
    assert one.n == 1
    assert paired_difference({0: 0.8}, {1: 0.7}).n == 0


def test_gap_closed():
    assert gap_closed(0.80, 0.75, 0.85) == pytest.approx(0.5)
    assert gap_closed(0.75, 0.75, 0.85) == 0.0
    assert gap_closed(0.70, 0.75, 0.85) == pytest.approx(-0.5)
    assert math.isnan(gap_closed(0.8, 0.75, 0.75))  # no gap to close


def test_report_table_on_fixed_scores(tmp_path):
    def s(mean, a, p):
        return {"mean": mean, "Anterior": a, "Posterior": p}

    scores = {
        LABELED_ONLY: {0: s(0.75, 0.76, 0.74), 1: s(0.74, 0.75, 0.73), 2: s(0.76, 0.77, 0.75), 3: s(0.74, 0.74, 0.74)},
        "nnUNetTrainerPICK": {0: s(0.80, 0.81, 0.79), 1: s(0.78, 0.80, 0.76), 2: s(0.83, 0.84, 0.82),
                              3: s(0.79, 0.80, 0.78)},
        SELF_TRAINING: {0: s(0.76, 0.77, 0.75), 1: s(0.76, 0.76, 0.76)},
        FULLY_SUPERVISED: {r: s(0.85, 0.86, 0.84) for r in range(4)},
    }
    text = write_protocol_report(scores, ["Anterior", "Posterior"], ["# header"], {LABELED_ONLY: [100.0, 120.0]},
                                 str(tmp_path))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    half = 100 * T_975_DF3 * math.sqrt(4.75e-4 / 3) / 2
    pick = lines["nnUNetTrainerPICK"]
    assert "| 4 | 80.0 ± 2.2 |" in pick  # mean and sample sd over repeats, in %
    assert (5.25 - half, 5.25 + half) == (pytest.approx(3.248, abs=1e-3), pytest.approx(7.252, abs=1e-3))
    assert "+5.3 [3.2, 7.3]" in pick  # 5.25 from floats is 5.2500000000000005
    # gap closed: (80.0 - 74.75) / (85 - 74.75) = 51 %
    assert "| 51 % |" in pick
    assert lines[LABELED_ONLY].endswith("| 110 |")  # mean wall time of the timed repeats
    assert "| 2 |" in lines[SELF_TRAINING]  # repeats present
    # gap closed over the repeats all three arms have (0 and 1): (76.0 - 74.5) / (85 - 74.5) = 14 %
    assert "| 14 % |" in lines[SELF_TRAINING]
    assert "n/a" in lines[SELF_TRAINING]  # no timing recorded
    csv = (tmp_path / "report.csv").read_text(encoding="utf-8").splitlines()
    assert csv[0].startswith("arm,repeats,dice_mean_mean,dice_mean_sd")
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("# header")
    per_repeat = (tmp_path / "scores_per_repeat.csv").read_text(encoding="utf-8").splitlines()
    assert per_repeat[0] == "arm,repeat,dice_mean,dice_Anterior,dice_Posterior"
    assert len(per_repeat) == 1 + 4 + 4 + 2 + 4
    assert "nnUNetTrainerPICK,2,0.83,0.84,0.82" in per_repeat


def test_report_compares_two_arms_over_their_common_repeats(tmp_path, capsys):
    """``--compare A B``: the paired difference A - B (e.g. a PICK variant minus its labeled-only control) over the
    repeats both have, with its t interval, in report.md and comparisons.csv; a misspelt arm is refused up front."""
    def s(mean, a):
        return {"mean": mean, "Anterior": a}

    scores = {LABELED_ONLY: {0: s(0.75, 0.70), 1: s(0.74, 0.70)},
              "nnUNetTrainerPICK_CutMix": {0: s(0.80, 0.72), 1: s(0.78, 0.71), 2: s(0.90, 0.90)},
              "nnUNetTrainer_CutMix": {0: s(0.76, 0.70), 1: s(0.76, 0.70)}}
    text = write_protocol_report(scores, ["Anterior"], ["# h"], {}, str(tmp_path),
                                 [("nnUNetTrainerPICK_CutMix", "nnUNetTrainer_CutMix"),
                                  ("nnUNetTrainer_CutMix", FULLY_SUPERVISED)])
    # repeats 0 and 1 (repeat 2 has no partner): differences 4 and 2 points, mean 3, t(0.975, 1 df) = 12.706
    half = 12.706204736174696 * math.sqrt(2.0) / math.sqrt(2)
    assert (3 - half, 3 + half) == (pytest.approx(-9.706, abs=1e-3), pytest.approx(15.706, abs=1e-3))
    assert "| nnUNetTrainerPICK_CutMix | nnUNetTrainer_CutMix | 2 | +3.0 [-9.7, 15.7] | +1.5 [-4.9, 7.9] |" in text
    assert "| nnUNetTrainer_CutMix | fully supervised | 0 | n/a [n/a, n/a] | n/a [n/a, n/a] |" in text
    rows = (tmp_path / "comparisons.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("arm,minus,paired_n,diff_mean,diff_mean_ci_low,diff_mean_ci_high")
    assert rows[1].startswith("nnUNetTrainerPICK_CutMix,nnUNetTrainer_CutMix,2,0.03")
    (tmp_path / "none").mkdir()
    write_protocol_report(scores, ["Anterior"], ["# h"], {}, str(tmp_path / "none"))
    assert not (tmp_path / "none" / "comparisons.csv").exists()
    from nnunet_pick.cli.benchmark_ssl import main

    assert main(["-d", "4", "--preset", "hippocampus-cpu", "-tr", "nnUNetTrainerPICK_CutMix",
                 "--compare", "nnUNetTrainerPICK_CutMix", "nnUNetTrainer_Cutmix"]) == 1
    assert "--compare names ['nnUNetTrainer_Cutmix'], which are not arms of this call" in capsys.readouterr().err


def test_protocol_refuses_a_start_criterion_that_reads_the_test_labels():
    """The protocol's validation cases are its test cases: a variant whose unlabeled phase starts on validation Dice
    would let test labels shape its training, so it is refused; fixed-warm-up variants pass."""
    from nnunet_pick.benchmark.protocol import check_trainers_hygiene

    for name in ("nnUNetTrainerPICK_startAllClasses", "nnUNetTrainerPICK_startDice0p5Rampup"):
        with pytest.raises(ValueError, match=f"{name} starts its unlabeled phase on nnU-Net's validation Dice"):
            check_trainers_hygiene(["nnUNetTrainerPICK", name])
    check_trainers_hygiene(["nnUNetTrainerPICK", "nnUNetTrainerPICK_rampup", "nnUNetTrainerPICK_twoStage",
                            "nnUNetTrainerPICK_startTrainDice0p5",
                            "nnUNetTrainerPICK_finetune", "nnUNetTrainer_finetune", "a_users_own_trainer"])


def test_protocol_splits_are_paired_disjoint_from_the_test_cases_and_fixed_by_the_seed(tmp_path):
    pool = [f"case_{i:03d}" for i in range(20)]
    test = [f"test_{i}" for i in range(3)]
    splits = protocol_splits(pool, test, num_labeled=4, repeats=3, seed=7)
    assert len(splits) == 6
    for r in range(3):
        fold = splits[r]
        assert fold["train"] == sorted(np.random.default_rng(7 + r).choice(sorted(pool), 4, replace=False).tolist())
        assert sorted(fold["train"] + fold["unlabeled"]) == pool
        assert fold["val"] == test
        assert splits[3 + r] == {"train": pool, "val": test, "unlabeled": []}
    assert len({tuple(splits[r]["train"]) for r in range(3)}) == 3  # a different labeled subset per repeat
    assert protocol_splits(pool, test, 4, 3, 7) == splits
    check_splits_hygiene(splits, test)
    leaky = json.loads(json.dumps(splits))
    leaky[1]["unlabeled"].append("test_2")
    with pytest.raises(ValueError, match=r"fold 1 trains on test cases \['test_2'\]"):
        check_splits_hygiene(leaky, test)
    with pytest.raises(ValueError, match="test cases in the training pool"):
        protocol_splits(pool + ["test_0"], test, 4, 3, 7)
    # an existing, different splits_final.json is never overwritten
    ensure_protocol_splits(str(tmp_path), splits)
    ensure_protocol_splits(str(tmp_path), splits)  # the same one is accepted
    with pytest.raises(ValueError, match="is not this protocol's split"):
        ensure_protocol_splits(str(tmp_path), protocol_splits(pool, test, 4, 3, 8))
    assert json.loads((tmp_path / "splits_final.json").read_text(encoding="utf-8")) == splits


def test_a_call_with_fewer_repeats_writes_the_folds_of_the_full_protocol_and_shares_its_runs(tmp_path):
    """Measured bug: ``--repeats 1`` laid the folds out for one repeat (fold 1 = fully supervised), so a later
    ``--repeats 2`` (fold 1 = the second labeled subset) was refused. The layout is now the protocol's 4 repeats
    (more only when more are asked), and every run of the short call is a run of the full one."""
    pool = [f"case_{i:03d}" for i in range(20)]
    test = [f"test_{i}" for i in range(3)]
    full = protocol_splits(pool, test, 2, split_repeats(4, 4), 7)
    for repeats in (1, 2, 3):
        assert split_repeats(4, repeats) == 4
        assert protocol_splits(pool, test, 2, split_repeats(4, repeats), 7) == full
    ensure_protocol_splits(str(tmp_path), protocol_splits(pool, test, 2, split_repeats(4, 1), 7))
    ensure_protocol_splits(str(tmp_path), full)  # the later, longer call is accepted

    def where(repeats: int) -> list[tuple]:
        runs = protocol_runs("D", "D_st", ["nnUNetTrainerPICK"], repeats, layout_repeats=split_repeats(4, repeats))
        return [(r.arm, r.repeat, r.dataset, r.trainer, r.fold) for r in runs]

    assert ((FULLY_SUPERVISED, 0, "D", "nnUNetTrainer", 4)) in where(1)
    assert set(where(1)) < set(where(2)) < set(where(4))
    # each fold of a results folder holds one (arm, repeat): fully supervised never shares a labeled-only fold
    folds = {(d, t, f): (a, r) for a, r, d, t, f in where(4)}
    assert len(folds) == len(where(4))
    assert all(full[f]["train"] == pool for a, r, d, t, f in where(4) if a == FULLY_SUPERVISED)
    # more repeats than the protocol's widen the layout
    assert split_repeats(4, 6) == 6
    assert (FULLY_SUPERVISED, 5, "D", "nnUNetTrainer", 11) in [
        (r.arm, r.repeat, r.dataset, r.trainer, r.fold) for r in protocol_runs("D", None, [], 6, layout_repeats=6)]


def test_only_repeats_trains_every_arm_of_the_chosen_repeats_and_nothing_else(capsys):
    """``--only-repeats 2 3`` adds repeats to an arm without retraining repeats 0-1 of every arm: each chosen repeat
    keeps its labeled-only run (its pair) and the skipped arms stay skipped; bad choices are refused before any work."""
    runs = protocol_runs("D", "D_st", ["nnUNetTrainerPICK_CutMix"], 4, layout_repeats=4)
    chosen = select_runs(runs, 4, skip_arms={SELF_TRAINING, FULLY_SUPERVISED}, only_repeats={2, 3})
    assert [(r.arm, r.repeat, r.fold) for r in chosen] == [
        (LABELED_ONLY, 2, 2), ("nnUNetTrainerPICK_CutMix", 2, 2),
        (LABELED_ONLY, 3, 3), ("nnUNetTrainerPICK_CutMix", 3, 3)]
    assert select_runs(runs, 4) == runs
    assert [r.arm for r in select_runs(runs, 4, skip_arms={SELF_TRAINING})].count(SELF_TRAINING) == 0
    with pytest.raises(ValueError, match=r"--only-repeats \[1, 4\]: repeats run from 0 to 3"):
        select_runs(runs, 4, only_repeats={1, 4})
    with pytest.raises(ValueError, match="repeats run from 0 to 3"):
        select_runs(runs, 4, only_repeats=set())
    with pytest.raises(ValueError, match="can be skipped"):
        select_runs(runs, 4, skip_arms={LABELED_ONLY})
    # the command refuses it before planning or training anything (no nnUNet_raw is needed to get there)
    from nnunet_pick.cli.benchmark_ssl import main

    assert main(["-d", "4", "--preset", "hippocampus-cpu", "--repeats", "4", "--only-repeats", "4"]) == 1
    assert "--only-repeats [4]: repeats run from 0 to 3 (--repeats 4)" in capsys.readouterr().err


def test_labeled_only_at_picks_wall_time_trains_three_times_the_protocols_epochs():
    """Equal wall time: nnUNetTrainer_3xEpochs is nnU-Net's trainer (no PICK branches) with 3 x the epochs, outside
    the protocol (3000) and inside it (arm_schedule: 40 -> 120, iterations per epoch unchanged); every other arm
    keeps the protocol's schedule."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_pick import nnUNetTrainerPICK
    from nnunet_pick.training.variants import TRAINERS

    cls = TRAINERS["nnUNetTrainer_3xEpochs"]
    assert issubclass(cls, nnUNetTrainer)
    assert not issubclass(cls, nnUNetTrainerPICK)
    assert cls.pick_settings == {"num_epochs": 3000, "schedule_factor": 3}
    schedule = PROTOCOLS["hippocampus-cpu"].schedule
    assert arm_schedule(schedule, "nnUNetTrainer_3xEpochs") == {**schedule, "num_epochs": 120}
    for trainer in ("nnUNetTrainer", "nnUNetTrainerPICK", "nnUNetTrainer_CutMix", "a_users_own_trainer"):
        assert arm_schedule(schedule, trainer) == schedule
    assert schedule["num_epochs"] == 40  # not modified in place


def test_hippocampus_protocol_fixes_40_test_cases():
    protocol = PROTOCOLS["hippocampus-cpu"]
    test = protocol.test_cases()
    assert len(test) == len(set(test)) == 40
    assert test == sorted(test)
    assert all(c.startswith("hippocampus_") and c[12:].isdigit() for c in test)
    assert protocol.schedule["num_epochs"] * protocol.schedule["num_iterations_per_epoch"] == 2000


def test_the_2_labeled_budget_differs_from_hippocampus_cpu_only_in_the_labeled_cases():
    four, two = PROTOCOLS["hippocampus-cpu"], PROTOCOLS["hippocampus-cpu-2labeled"]
    assert two.num_labeled == 2
    assert "2 labeled cases per repeat" in two.description
    assert {k: v for k, v in vars(two).items() if k not in ("num_labeled", "description")} == \
        {k: v for k, v in vars(four).items() if k not in ("num_labeled", "description")}
    test = two.test_cases()
    pool = [f"hippocampus_{i:03d}" for i in range(500) if f"hippocampus_{i:03d}" not in set(test)][:160]
    for fold in protocol_splits(pool, test, two.num_labeled, two.repeats, two.seed)[:two.repeats]:
        assert len(fold["train"]) == 2
        assert len(fold["unlabeled"]) == 158
        assert fold["val"] == test


def _fake_checkpoint(path, dice_per_class):
    """A checkpoint holding only what nnU-Net's logger keeps per epoch (``nnUNetLogger.my_fantastic_logging``)."""
    torch.save({"logging": {"dice_per_class_or_region": dice_per_class,
                            "mean_fg_dice": [float(np.mean(d)) for d in dice_per_class]}}, path)


def test_learning_curve_figure_from_a_fixed_training_log(tmp_path):
    runs = {"labeled-only": [[[0.1, 0.0], [0.5, 0.3], [0.7, 0.6]], [[0.2, 0.1], [0.6, 0.4], [0.7, 0.7]]],
            "nnUNetTrainerPICK": [[[0.1, 0.1], [0.6, 0.5], [0.8, 0.7]]]}
    curves = {}
    for arm, logs in runs.items():
        for k, log in enumerate(logs):
            _fake_checkpoint(tmp_path / f"{arm}{k}.pth", log)
            curves.setdefault(arm, []).append(curve_from_checkpoint(str(tmp_path / f"{arm}{k}.pth"), 50))
    assert curves["labeled-only"][0]["iterations"] == [50, 100, 150]
    assert curves["labeled-only"][1]["mean"] == pytest.approx([0.15, 0.5, 0.7])
    out = tmp_path / "curves.png"
    fig = plot_learning_curves(curves, ["Anterior", "Posterior"], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mean_panel, anterior, posterior = fig.axes
    assert [a.get_title() for a in fig.axes] == ["mean foreground", "Anterior", "Posterior"]
    thick = [line for line in mean_panel.lines if line.get_linewidth() > 2]
    thin = [line for line in mean_panel.lines if line.get_linewidth() < 1]
    assert len(thin) == 3
    assert len(thick) == 2
    assert [t.get_text() for t in mean_panel.get_legend().get_texts()] == ["labeled-only (n=2)",
                                                                           "nnUNetTrainerPICK (n=1)"]
    np.testing.assert_allclose(thick[0].get_ydata(), [100 * 0.1, 100 * 0.45, 100 * 0.675])  # mean of two repeats
    np.testing.assert_allclose([line.get_ydata() for line in posterior.lines if line.get_linewidth() > 2][1],
                               [10, 50, 70])
    assert thick[0].get_color() != thick[1].get_color()
    import matplotlib.pyplot as plt

    plt.close(fig)
