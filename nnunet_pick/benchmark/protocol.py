"""The accuracy protocol: PICK against the labeled-only nnU-Net, nnU-Net's self-training recipe and full supervision,
on a fixed test set, with paired repeats, confidence intervals, the gap closed and learning curves.

Design (a named :class:`Protocol` fixes every choice; ``hippocampus-cpu`` is the one that fits 2 CPU cores,
``hippocampus-cpu-2labeled`` the same with 2 labeled cases):

- **Test cases** are a fixed list shipped with the package, validation cases of every fold of every arm and never
  anything else: no arm trains on them as labeled, unlabeled or pseudo-labeled data (checked, refused otherwise).
  The other cases of ``imagesTr`` are the training pool.
- **Repeats are paired.** Repeat ``r`` draws its labeled subset of the pool with ``numpy.random.default_rng(seed +
  r)`` and trains every arm with seed ``seed + r``. Folds of ``splits_final.json``: fold ``r`` = that labeled subset
  (``train``), the rest of the pool (``unlabeled``) and the test cases (``val``); fold ``R + r`` = the whole pool
  labeled (the fully supervised ceiling, same seed as repeat ``r``). ``R`` is the protocol's number of repeats (or
  ``--repeats`` where that is larger), so that a call with fewer repeats writes the same folds as a later call with
  all of them and the two share their runs.
- **Arms**, all in one nnU-Net results root ``<output>/results`` (nnU-Net's layout, so ``nnUNetv2_predict`` works on
  every model): labeled-only = stock ``nnUNetTrainer`` on folds ``0..R-1``; fully supervised = ``nnUNetTrainer`` on
  folds ``R..2R-1``; self-training = :mod:`nnunet_pick.self_training` with the labeled-only fold as teacher (its
  derived dataset in ``nnUNet_raw``); ``nnUNetTrainerPICK`` and any other trainers named, on folds ``0..R-1``;
  fine-tuning arms (``-tr_finetune``): a trainer started with ``-pretrained_weights`` from the repeat's labeled-only
  ``checkpoint_final.pth`` and trained on the same fold with the protocol's ``finetune_schedule`` (the workflow of a
  user who already has an nnU-Net model; its labeled-only twin ``nnUNetTrainer_finetune`` is the control that
  separates "more iterations" from "unlabeled data").
- **One schedule for all arms** (:mod:`nnunet_pick.benchmark.seeded_train` ``--settings``; a declared variant's
  ``schedule_factor`` scales its epochs, :func:`arm_schedule`, for comparisons at equal wall time), the final
  checkpoint only (nnU-Net's final validation predicts the test cases from ``checkpoint_final.pth``;
  ``checkpoint_best`` is never read), scores from :mod:`nnunet_pick.evaluation` against nnU-Net's
  ``gt_segmentations``.
- **Resumable**: every training goes through :func:`nnunet_pick.fold_runs.train_fold`; ``runs.json`` keeps the
  wall time of each step the first time it ran.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from importlib.resources import files
from os.path import isdir, isfile, join

import numpy as np

from nnunet_pick.benchmark.curves import cached_curve, plot_learning_curves
from nnunet_pick.benchmark.statistics import PairedDifference, gap_closed, paired_difference
from nnunet_pick.console import print_text
from nnunet_pick.fold_runs import fold_state, model_folder, train_fold
from nnunet_pick.self_training import read_json, write_json_atomic

LABELED_ONLY = "labeled-only"
FULLY_SUPERVISED = "fully supervised"
SELF_TRAINING = "self-training"
NNUNET_DEFAULT_SCHEDULE = {"num_epochs": 1000, "num_iterations_per_epoch": 250, "num_val_iterations_per_epoch": 50}


@dataclass(frozen=True)
class Protocol:
    """Everything a protocol run fixes (the user may add PICK trainers and change the repeats and output)."""

    description: str
    base_configuration: str
    plans: str
    #: configuration keys of ``base_configuration`` replaced in the protocol's plans (``features_per_stage`` goes
    #: into the architecture's ``arch_kwargs``); the preprocessed data is the base configuration's
    plans_changes: dict
    test_cases_file: str
    num_labeled: int
    repeats: int
    seed: int
    schedule: dict
    pseudo_label_tta: bool
    device: str
    env: dict[str, str] = field(default_factory=dict)
    #: test case ids given directly instead of ``test_cases_file`` (custom protocols, tests)
    test_case_ids: tuple[str, ...] = ()
    #: trainer settings of fine-tuning arms (they start from the labeled-only run's final checkpoint)
    finetune_schedule: dict = field(default_factory=dict)

    def test_cases(self) -> list[str]:
        """The fixed test case ids (``test_case_ids``, else the package file ``test_cases_file``)."""
        if self.test_case_ids:
            return sorted(self.test_case_ids)
        return json.loads(files("nnunet_pick.benchmark").joinpath(self.test_cases_file).read_text("utf-8"))[
            "test_cases"]


PROTOCOLS: dict[str, Protocol] = {
    "hippocampus-cpu": Protocol(
        description="MSD Hippocampus (Dataset004, the 200 cases of this project's data) on 2 CPU cores: 40 fixed test "
                    "cases, 4 labeled cases per repeat drawn from the other 160 (the rest unlabeled), 4 paired "
                    "repeats; nnU-Net's 2d configuration with features 16-128 and batch 16 (plans "
                    "nnUNetPlansPICKBench); 40 epochs x 50 iterations = 2000 iterations for every arm (PICK: 500 "
                    "warm-up iterations, its 25 %); pseudo-labels without mirroring",
        base_configuration="2d", plans="nnUNetPlansPICKBench",
        plans_changes={"batch_size": 16, "features_per_stage": [16, 32, 64, 128]},
        test_cases_file="hippocampus_test_cases.json", num_labeled=4, repeats=4, seed=12345,
        schedule={"num_epochs": 40, "num_iterations_per_epoch": 50, "num_val_iterations_per_epoch": 10,
                  "save_every": 5},
        pseudo_label_tta=False, device="cpu",
        env={"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "f"},
        # fine-tuning: a quarter of the iterations again (500, as the fine-tuning run that motivated the arm), at a
        # tenth of nnU-Net's initial learning rate (poly decay as nnU-Net's), no warm-up (the trainers' own settings:
        # nnUNetTrainerPICK_finetune, nnUNetTrainer_finetune)
        finetune_schedule={"num_epochs": 10, "num_iterations_per_epoch": 50, "num_val_iterations_per_epoch": 10,
                           "save_every": 5, "initial_lr": 1e-3}),
}
# the second label budget of issue 10's criterion: the same protocol with 2 labeled cases per repeat (158 unlabeled).
# Its splits_final.json differs from hippocampus-cpu's, so it needs its own nnUNet_preprocessed (the protocol never
# overwrites a split file).
PROTOCOLS["hippocampus-cpu-2labeled"] = replace(
    PROTOCOLS["hippocampus-cpu"], num_labeled=2,
    description=PROTOCOLS["hippocampus-cpu"].description.replace(
        "4 labeled cases per repeat", "2 labeled cases per repeat"))


def _log(message: str) -> None:
    print_text(f"[protocol {time.strftime('%H:%M:%S')}] {message}")


def protocol_splits(pool: list[str], test: list[str], num_labeled: int, repeats: int, seed: int) -> list[dict]:
    """Folds ``0..R-1``: labeled subset of repeat r (``default_rng(seed + r)``), the rest of the pool unlabeled, the
    test cases as validation; folds ``R..2R-1``: the whole pool labeled.

    Raises:
        ValueError: if test and pool overlap or the pool has fewer than ``num_labeled + 1`` cases.
    """
    pool, test = sorted(pool), sorted(test)
    if set(pool) & set(test):
        raise ValueError(f"test cases in the training pool: {sorted(set(pool) & set(test))}")
    if len(pool) <= num_labeled:
        raise ValueError(f"the training pool has {len(pool)} cases; {num_labeled} labeled need at least one more")
    splits = []
    for r in range(repeats):
        labeled = sorted(np.random.default_rng(seed + r).choice(pool, num_labeled, replace=False).tolist())
        splits.append({"train": labeled, "val": test, "unlabeled": [c for c in pool if c not in labeled]})
    splits += [{"train": pool, "val": test, "unlabeled": []} for _ in range(repeats)]
    return splits


def check_splits_hygiene(splits: list[dict], test: list[str]) -> None:
    """Every fold validates on exactly the test cases and trains (labeled or unlabeled) on none of them.

    Raises:
        ValueError: naming the fold and the cases.
    """
    test_set = set(test)
    for k, s in enumerate(splits):
        if set(s["val"]) != test_set:
            raise ValueError(f"fold {k} does not validate on exactly the protocol's test cases")
        leak = test_set & (set(s["train"]) | set(s.get("unlabeled", [])))
        if leak:
            raise ValueError(f"fold {k} trains on test cases {sorted(leak)}; refusing (evaluation cases must never "
                             f"be training data)")


def arm_schedule(schedule: dict, trainer: str) -> dict:
    """The protocol's ``schedule`` for ``trainer``: unchanged, except ``num_epochs`` times the ``schedule_factor`` a
    declared variant sets (``nnUNetTrainer_3xEpochs``: labeled-only at about PICK's wall time, compared at equal wall
    time instead of equal iterations); iterations per epoch stay the protocol's.

    Raises:
        ValueError: if the factor is not positive.
    """
    from nnunet_pick.training.variants import TRAINERS

    factor = getattr(TRAINERS.get(trainer), "pick_settings", {}).get("schedule_factor", 1)
    if not factor > 0:
        raise ValueError(f"{trainer} declares schedule_factor {factor}; it must be positive")
    if factor == 1:
        return dict(schedule)
    return {**schedule, "num_epochs": max(1, round(factor * schedule["num_epochs"]))}


def check_trainers_hygiene(trainers: list[str]) -> None:
    """Refuse trainers whose schedule reads nnU-Net's online validation: in the protocol the validation cases are the
    test cases, so a start criterion on validation Dice (``unlabeled_start_min_dice``, e.g.
    ``nnUNetTrainerPICK_startAllClasses``) would let test labels decide when unlabeled data starts to count. Checked
    for this project's declared variants (their ``pick_settings``); a user's own classes are not inspected.

    Raises:
        ValueError: naming the trainer and why.
    """
    from nnunet_pick.training.variants import TRAINERS

    for name in trainers:
        settings = getattr(TRAINERS.get(name), "pick_settings", {})
        if settings.get("unlabeled_start_min_dice") is not None \
                and settings.get("unlabeled_start_criterion", "validation") == "validation":
            raise ValueError(f"{name} starts its unlabeled phase on nnU-Net's validation Dice, and the protocol's "
                             f"validation cases are its test cases: test labels would shape the training. Measure "
                             f"it outside the protocol, or its training-batch twin (unlabeled_start_criterion="
                             f"'training', e.g. nnUNetTrainerPICK_startTrainDice0p5).")


def ensure_protocol_plans(dataset_name: str, protocol: Protocol, env: dict, log: str) -> str:
    """nnU-Net's planning and ``base_configuration`` preprocessing if missing, then the protocol's plans file (a copy
    of ``nnUNetPlans`` with ``plans_changes``, same ``data_identifier``: the preprocessed data is shared).
    Returns the preprocessed dataset folder."""
    from nnunetv2.paths import nnUNet_preprocessed

    from nnunet_pick.subprocesses import installed_command, run_logged

    folder = join(str(nnUNet_preprocessed), dataset_name)
    base = join(folder, "nnUNetPlans.json")
    if not isfile(base) or not isdir(join(folder, read_json(base)["configurations"][protocol.base_configuration]
                                          ["data_identifier"])):
        _log(f"planning and preprocessing {dataset_name} ({protocol.base_configuration}) with nnU-Net")
        run_logged([installed_command("nnUNetv2_plan_and_preprocess"), "-d", dataset_name[7:10], "-c",
                    protocol.base_configuration, "-np", "2"], env, log)
    plans = read_json(base)
    config = plans["configurations"][protocol.base_configuration]
    shrunk = []
    for key, value in protocol.plans_changes.items():
        where = config["architecture"]["arch_kwargs"] if key == "features_per_stage" else config
        shrunk.append(f"{key} {where[key]} -> {value}")
        where[key] = value
    plans["plans_name"] = protocol.plans
    target = join(folder, protocol.plans + ".json")
    if isfile(target) and read_json(target) != plans:
        raise ValueError(f"{target} exists and differs from the protocol's plans; move it away to rerun.")
    write_json_atomic(plans, target)
    _log(f"plans {protocol.plans} = nnUNetPlans {protocol.base_configuration} with " + "; ".join(shrunk))
    return folder


def ensure_protocol_splits(preprocessed: str, splits: list[dict]) -> None:
    """Write ``splits_final.json``, or check that the existing one is the protocol's.

    Raises:
        ValueError: if a different ``splits_final.json`` exists (never overwritten).
    """
    path = join(preprocessed, "splits_final.json")
    if isfile(path):
        if read_json(path) != splits:
            raise ValueError(f"{path} exists and is not this protocol's split. Use an empty nnUNet_preprocessed "
                             f"(or move the file away): the protocol fixes the folds.")
        return
    write_json_atomic(splits, path)


@dataclass
class ArmRun:
    """Where one arm's repeat lives."""

    arm: str
    repeat: int
    dataset: str
    trainer: str
    fold: int
    #: started from the repeat's labeled-only checkpoint_final (fine-tuning arm)
    finetuned: bool = False


def finetune_arm(trainer: str) -> str:
    """Report name of a fine-tuning arm."""
    return f"{trainer} from labeled-only"


def protocol_arms(pick_trainers: list[str], finetune_trainers: list[str]) -> list[str]:
    """Every arm name of a protocol call, in report order (the names ``--compare`` and the report use)."""
    return [LABELED_ONLY, *pick_trainers, *map(finetune_arm, finetune_trainers), SELF_TRAINING, FULLY_SUPERVISED]


def split_repeats(protocol_repeats: int, repeats: int) -> int:
    """``R`` of the fold layout (:func:`protocol_splits`): the protocol's repeats, or ``repeats`` where larger.

    A fixed layout lets a short call (``--repeats 1``) and a later full one write the same ``splits_final.json`` and
    share their finished runs; with ``R = repeats`` the fully supervised run of the short call sat in the fold of the
    long call's second labeled subset, and the long call was refused (measured: ``--repeats 1`` then ``--repeats 2``).
    """
    return max(protocol_repeats, repeats)


def protocol_runs(dataset_name: str, derived_dataset: str | None, pick_trainers: list[str],
                  repeats: int, finetune_trainers: list[str] = (), *, layout_repeats: int) -> list[ArmRun]:
    """Every (arm, repeat) in the order they train: per repeat labeled-only (also the self-training teacher and the
    fine-tuning arms' start), fine-tuning arms, PICK arms, self-training, fully supervised (fold
    ``layout_repeats + r``, ``layout_repeats`` from :func:`split_repeats`).

    Raises:
        ValueError: if a fine-tuning trainer is ``nnUNetTrainer`` (its fold folder would be the labeled-only run's).
    """
    if "nnUNetTrainer" in finetune_trainers:
        raise ValueError("nnUNetTrainer cannot be a fine-tuning arm (it would overwrite the labeled-only run); use "
                         "nnUNetTrainer_finetune")
    runs = []
    for r in range(repeats):
        runs.append(ArmRun(LABELED_ONLY, r, dataset_name, "nnUNetTrainer", r))
        runs += [ArmRun(finetune_arm(t), r, dataset_name, t, r, finetuned=True) for t in finetune_trainers]
        runs += [ArmRun(t, r, dataset_name, t, r) for t in pick_trainers]
        if derived_dataset is not None:
            runs.append(ArmRun(SELF_TRAINING, r, derived_dataset, "nnUNetTrainer", r))
        runs.append(ArmRun(FULLY_SUPERVISED, r, dataset_name, "nnUNetTrainer", layout_repeats + r))
    return runs


def select_runs(runs: list[ArmRun], repeats: int, *, skip_arms: set[str] | frozenset[str] = frozenset(),
                only_repeats: set[int] | frozenset[int] | None = None) -> list[ArmRun]:
    """The runs a call trains: all of ``runs`` except the arms in ``skip_arms`` and, with ``only_repeats``, the
    repeats not in it (to add repeats to one arm without retraining the earlier ones of every arm; the report still
    covers every finished run of ``0..repeats-1``).

    Raises:
        ValueError: if ``skip_arms`` names an arm other than self-training and fully supervised, or ``only_repeats``
            is empty or has a repeat outside ``0..repeats-1``.
    """
    unknown = set(skip_arms) - {SELF_TRAINING, FULLY_SUPERVISED}
    if unknown:
        raise ValueError(f"only {SELF_TRAINING!r} and {FULLY_SUPERVISED!r} can be skipped, not {sorted(unknown)}")
    if only_repeats is not None:
        outside = sorted(r for r in only_repeats if not 0 <= r < repeats)
        if not only_repeats or outside:
            raise ValueError(f"--only-repeats {sorted(only_repeats)}: repeats run from 0 to {repeats - 1} "
                             f"(--repeats {repeats}); raise --repeats to add later ones")
    return [run for run in runs
            if run.arm not in skip_arms and (only_repeats is None or run.repeat in only_repeats)]


def run_scores(fold_folder: str, gt_folder: str, dataset_json: dict) -> dict[str, float] | None:
    """Dice per foreground class (label name -> Dice in [0, 1]) and ``"mean"`` of the final validation,
    computed once by :func:`nnunet_pick.evaluation.evaluate_folder` and cached as ``validation/summary_pick.json``;
    None if the validation has not finished."""
    from nnunet_pick.benchmark.report import cached_summary

    summary = cached_summary(fold_folder, gt_folder, dataset_json)
    if summary is None:
        return None
    names = {str(v): k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    scores = {names.get(label, label): values["Dice"] for label, values in summary["mean"].items()}
    scores["mean"] = summary["foreground_mean"]["Dice"]
    return scores


def _fmt(value: float, scale: float = 100, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{scale * value:.{digits}f}"


def _paired_cell(arm: dict[int, dict[str, float]], other: dict[int, dict[str, float]], key: str
                 ) -> tuple[PairedDifference, str, dict[str, float]]:
    """The paired difference arm - other of score ``key`` over their common repeats, its report cell
    (``+1.2 [0.3, 2.1]``, %) and its CSV fields (fractions)."""
    d = paired_difference({r: s[key] for r, s in arm.items()}, {r: s[key] for r, s in other.items()})
    cell = f"{'+' if d.mean >= 0 else ''}{_fmt(d.mean)} [{_fmt(d.low)}, {_fmt(d.high)}]"
    return d, cell, {f"diff_{key}": d.mean, f"diff_{key}_ci_low": d.low, f"diff_{key}_ci_high": d.high}


def write_protocol_report(scores: dict[str, dict[int, dict[str, float]]], classes: list[str], metadata_lines: list[str],
                          times: dict[str, list[float]], output: str,
                          comparisons: list[tuple[str, str]] = ()) -> str:
    """``report.md`` and ``report.csv``: per arm mean ± sd of Dice (mean and per class, %), paired difference to the
    labeled-only arm with its 95 % t interval, gap closed, repeats and wall time per repeat; ``scores_per_repeat.csv``:
    every arm's Dice per repeat (fractions); with ``comparisons``, a second table of paired differences between two
    arms (e.g. a PICK variant minus its labeled-only control), also in ``comparisons.csv``.

    Args:
        scores: arm -> repeat -> {"mean": Dice, class name: Dice} (fractions).
        classes: class names, in label order.
        metadata_lines: lines of the header (protocol, seeds, subsets, versions).
        times: arm -> wall seconds of each repeat that was timed.
        output: folder.
        comparisons: (arm, other arm) pairs: arm - other arm over the repeats both have, Student's t 95 % interval.

    Returns:
        The Markdown text.
    """
    import csv

    keys = ["mean", *classes]
    base = scores.get(LABELED_ONLY, {})
    full = scores.get(FULLY_SUPERVISED, {})
    header = ["arm", "repeats", *[f"Dice {k} (%)" for k in keys], *[f"diff {k} vs labeled-only [95% CI]" for k in keys],
              "gap closed (mean)", "wall time per repeat (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for arm, per_repeat in scores.items():
        cells, csv_row = [arm, str(len(per_repeat))], {"arm": arm, "repeats": len(per_repeat)}
        for k in keys:
            v = np.array([s[k] for s in per_repeat.values()], dtype=float)
            mean, sd = (float(v.mean()) if v.size else math.nan), (float(v.std(ddof=1)) if v.size > 1 else math.nan)
            cells.append(f"{_fmt(mean)} ± {_fmt(sd)}")
            csv_row |= {f"dice_{k}_mean": mean, f"dice_{k}_sd": sd}
        for k in keys:
            if arm == LABELED_ONLY:
                cells.append("")
                continue
            d, cell, fields = _paired_cell(per_repeat, base, k)
            cells.append(cell)
            csv_row |= fields | {"paired_n": d.n}
        # over the repeats all three arms have, so that the ratio compares like with like
        common = sorted(set(per_repeat) & set(base) & set(full))
        g = gap_closed(*[float(np.mean([a[r]["mean"] for r in common])) if common else math.nan
                         for a in (per_repeat, base, full)])
        cells.append("" if arm in (LABELED_ONLY, FULLY_SUPERVISED) else f"{_fmt(g, 100, 0)} %")
        t = times.get(arm, [])
        cells.append(f"{np.mean(t):.0f}" if t else "n/a")
        csv_row |= {"gap_closed": g, "wall_time_per_repeat_s": float(np.mean(t)) if t else math.nan}
        lines.append("| " + " | ".join(cells) + " |")
        rows.append(csv_row)
    compared, compared_rows = _comparison_table(scores, keys, comparisons)
    text = "\n".join([*metadata_lines, "", *lines, "",
                      ("Dice: mean ± sd over repeats of the foreground-mean (and per-class) Dice of nnU-Net's final "
                      "sliding-window validation on the test cases (checkpoint_final). diff: mean of the per-repeat "
                      "differences to the labeled-only arm (same labeled subset and seed), with Student's t 95 % "
                      "confidence interval. gap closed: (arm - labeled-only) / (fully supervised - labeled-only) of "
                      "the mean Dice over the repeats all three have. Wall time: one repeat of the arm on this "
                      "machine (self-training: teacher prediction, preprocessing and student; its teacher is the "
                      "labeled-only run).")] + compared)
    with open(join(output, "report.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    # per repeat too, so that later runs can be paired with these (same labeled subset and seed)
    with open(join(output, "scores_per_repeat.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "repeat", *[f"dice_{k}" for k in keys]])
        writer.writerows([arm, r, *[s[k] for k in keys]] for arm, per_repeat in scores.items()
                         for r, s in sorted(per_repeat.items()))
    for name, table in (("report.csv", rows), ("comparisons.csv", compared_rows)):
        if not table:
            continue
        with open(join(output, name), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in table for k in row)))
            writer.writeheader()
            writer.writerows(table)
    return text


def _comparison_table(scores: dict[str, dict[int, dict[str, float]]], keys: list[str],
                      comparisons: list[tuple[str, str]]) -> tuple[list[str], list[dict]]:
    """Markdown lines and CSV rows of the paired differences ``arm - other`` (see :func:`write_protocol_report`); a
    pair without common finished repeats reads n/a."""
    if not comparisons:
        return [], []
    header = ["arm", "minus", "paired repeats", *[f"diff {k} [95% CI]" for k in keys]]
    title = "Paired differences between arms (Dice %: the difference of each repeat, then their mean with Student's t "
    lines = ["", title + "95 % interval):", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for arm, other in comparisons:
        paired = [_paired_cell(scores.get(arm, {}), scores.get(other, {}), k) for k in keys]
        n = paired[0][0].n  # every key has the same repeats
        cells = [arm, other, str(n), *[cell for _, cell, _ in paired]]
        row = {"arm": arm, "minus": other, "paired_n": n}
        for _, _, fields in paired:
            row |= fields
        lines.append("| " + " | ".join(cells) + " |")
        rows.append(row)
    return lines, rows


def run_protocol(dataset: str, protocol_name: str, *, pick_trainers: list[str] | None = None,
                 repeats: int | None = None, output: str | None = None, device: str | None = None,
                 protocol: Protocol | None = None, finetune_trainers: list[str] | None = None,
                 skip_arms: set[str] | frozenset[str] = frozenset(),
                 only_repeats: set[int] | frozenset[int] | None = None,
                 comparisons: list[tuple[str, str]] = ()) -> str:
    """Run (or resume) the accuracy protocol and return its Markdown report (also in ``<output>/report.md``, with
    ``report.csv`` and ``learning_curves.png``).

    Args:
        dataset: dataset id or name in ``nnUNet_raw``.
        protocol_name: a key of :data:`PROTOCOLS` (ignored if ``protocol`` is given).
        pick_trainers: the PICK arms (default ``["nnUNetTrainerPICK"]``; ``[]`` runs the three nnU-Net arms only);
            any trainer name nnU-Net finds works.
        finetune_trainers: fine-tuning arms (default none), each started from the repeat's labeled-only
            ``checkpoint_final.pth`` with the protocol's ``finetune_schedule``.
        skip_arms: of ``"self-training"`` and ``"fully supervised"``, the arms this call does not train (to order a
            long run's arms; finished runs of a skipped arm still appear in the report).
        only_repeats: the repeats this call trains (default all ``0..repeats-1``), e.g. ``{2, 3}`` to add repeats to
            one arm whose first repeats were measured by an earlier call; the report covers every finished repeat.
        comparisons: (arm, other arm) pairs whose paired difference the report adds (arm names as in the report:
            ``labeled-only``, a trainer of ``pick_trainers``, ``self-training``, ``fully supervised``), e.g.
            ``[("nnUNetTrainerPICK_CutMix", "nnUNetTrainer_CutMix")]``: a PICK variant against its labeled-only
            control.
        repeats: number of paired repeats (default: the protocol's).
        output: benchmark folder (default ``$nnUNet_results/pick_protocol_<protocol>``; its ``results`` subfolder is
            the nnU-Net results root of all arms).
        device: ``cpu`` or ``cuda`` (default: the protocol's).
        protocol: a custom :class:`Protocol` (tests use a tiny one).

    Raises:
        ValueError: unknown protocol, missing test cases, splits that are not the protocol's, evaluation cases in
            training data, ``skip_arms`` or ``only_repeats`` that :func:`select_runs` refuses, a compared arm that
            is not an arm of this call.
        RuntimeError: if an nnU-Net command fails (with the end of its log).
    """
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if protocol is None:
        if protocol_name not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol_name!r}; choose from {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol_name]
    pick_trainers = ["nnUNetTrainerPICK"] if pick_trainers is None else list(pick_trainers)
    repeats = repeats or protocol.repeats
    select_runs([], repeats, skip_arms=skip_arms, only_repeats=only_repeats)  # refuse bad choices before any work
    arms = protocol_arms(pick_trainers, finetune_trainers or [])
    unknown = sorted({a for pair in comparisons for a in pair} - set(arms))
    if unknown:
        raise ValueError(f"--compare names {unknown}, which are not arms of this call; its arms: {arms}")
    device = device or protocol.device
    dataset_name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    output = output or join(str(nnUNet_results), f"pick_protocol_{protocol_name}")
    results = join(output, "results")
    os.makedirs(join(output, "logs"), exist_ok=True)
    env = {**protocol.env, **os.environ, "nnUNet_results": results}  # the user's own settings win
    previous = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = results  # nnU-Net's path lookups in this process (self-training) see it too
    try:
        return _run(dataset_name, protocol, protocol_name, pick_trainers, repeats, output, device, env,
                    list(finetune_trainers or []), set(skip_arms), only_repeats, list(comparisons))
    finally:
        if previous is None:
            os.environ.pop("nnUNet_results", None)
        else:
            os.environ["nnUNet_results"] = previous


def _run(dataset_name: str, protocol: Protocol, protocol_name: str, pick_trainers: list[str], repeats: int,
         output: str, device: str, env: dict[str, str], finetune_trainers: list[str], skip_arms: set[str],
         only_repeats: set[int] | None, comparisons: list[tuple[str, str]]) -> str:
    from nnunetv2.paths import nnUNet_raw

    from nnunet_pick.self_training import Teacher, derived_dataset_name, run_self_training, training_images

    results = join(output, "results")
    setup_log = join(output, "logs", "setup.log")
    _log(f"protocol {protocol_name}: {protocol.description}")
    shrunk = {k: f"{NNUNET_DEFAULT_SCHEDULE.get(k, 'nnU-Net default')} -> {v}" for k, v in protocol.schedule.items()}
    _log(f"shrunk schedule (nnU-Net default -> protocol): {shrunk}; pseudo-label mirroring "
         f"{'on' if protocol.pseudo_label_tta else 'off (nnU-Net default: on)'}")

    raw = join(str(nnUNet_raw), dataset_name)
    dataset_json = read_json(join(raw, "dataset.json"))
    test = protocol.test_cases()
    cases = sorted(training_images(raw, dataset_json))
    missing = sorted(set(test) - set(cases))
    if missing:
        raise ValueError(f"{raw}/imagesTr lacks the protocol's test cases {missing[:10]} ({len(missing)}); the "
                         f"protocol needs the dataset it was made for ({protocol.description.split(':')[0]}).")
    from nnunet_pick.unlabeled.pool import list_raw_unlabeled_cases, raw_unlabeled_folder

    extra = list_raw_unlabeled_cases(raw_unlabeled_folder(raw), dataset_json["file_ending"])
    if extra:
        raise ValueError(f"{raw_unlabeled_folder(raw)} holds {len(extra)} cases; the protocol's unlabeled pool is "
                         f"the split's 'unlabeled' cases only. Move imagesUnlabeled away for the protocol.")
    pool = [c for c in cases if c not in set(test)]
    preprocessed = ensure_protocol_plans(dataset_name, protocol, env, setup_log)
    layout = split_repeats(protocol.repeats, repeats)
    splits = protocol_splits(pool, test, protocol.num_labeled, layout, protocol.seed)
    check_splits_hygiene(splits, test)
    ensure_protocol_splits(preprocessed, splits)
    _log(f"{len(test)} test cases, pool {len(pool)}; labeled subsets: "
         + "; ".join(f"repeat {r}: {splits[r]['train']}" for r in range(repeats)))

    configuration = protocol.base_configuration
    times_file = join(output, "runs.json")
    timings = read_json(times_file) if isfile(times_file) else {}

    def train(dataset_for_run: str, fold: int, trainer: str, pretrained: str | None = None) -> None:
        repeat = fold % layout
        folder = join(model_folder(results, dataset_for_run, trainer, protocol.plans, configuration), f"fold_{fold}")
        state = fold_state(folder)
        if state == "done":
            return
        _log(f"{dataset_for_run} fold {fold} {trainer}: {state} (seed {protocol.seed + repeat})"
             + (f", from {pretrained}" if pretrained else ""))
        t0 = time.perf_counter()
        # nnU-Net refuses -pretrained_weights together with --c / --val: the weights only seed a fresh start
        extra = ["-pretrained_weights", pretrained] if pretrained and state == "train" else []
        train_fold(dataset_for_run, configuration, fold, trainer, protocol.plans, fold_folder=folder, env=env,
                   log=join(output, "logs", f"{dataset_for_run}_fold{fold}_{trainer}.log"), device=device,
                   seed=protocol.seed + repeat,
                   settings=protocol.finetune_schedule if pretrained else arm_schedule(protocol.schedule, trainer),
                   extra_args=extra)
        key = f"{dataset_for_run}/{trainer}/fold_{fold}"
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        write_json_atomic(timings, times_file)
        _log(f"{dataset_for_run} fold {fold} {trainer}: finished in {time.perf_counter() - t0:.0f} s")

    teacher = Teacher("nnUNetTrainer", protocol.plans, configuration)
    derived = derived_dataset_name(dataset_name, teacher)
    start = time.perf_counter()
    check_trainers_hygiene([*pick_trainers, *finetune_trainers])
    if finetune_trainers and not protocol.finetune_schedule:
        raise ValueError(f"protocol {protocol_name} has no finetune_schedule for fine-tuning arms")
    runs = select_runs(protocol_runs(dataset_name, derived, pick_trainers, repeats, finetune_trainers,
                                     layout_repeats=layout), repeats, skip_arms=skip_arms, only_repeats=only_repeats)
    for run in runs:
        if run.finetuned:
            start_from = join(model_folder(results, dataset_name, "nnUNetTrainer", protocol.plans, configuration),
                              f"fold_{run.fold}", "checkpoint_final.pth")
            train(run.dataset, run.fold, run.trainer, pretrained=start_from)
        elif run.arm == SELF_TRAINING:
            t0 = time.perf_counter()
            key = f"self-training/fold_{run.fold}"
            student = join(model_folder(results, derived, "nnUNetTrainer", protocol.plans, configuration),
                           f"fold_{run.fold}")
            if fold_state(student) == "done":
                continue
            run_self_training(dataset_name, configuration, run.fold, teacher=teacher, student_trainer="nnUNetTrainer",
                              train=train, env=env, log=join(output, "logs", f"self_training_fold{run.fold}.log"),
                              device=device, use_mirroring=protocol.pseudo_label_tta, forbidden_cases=set(test),
                              num_processes=2)
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
            write_json_atomic(timings, times_file)
        else:
            train(run.dataset, run.fold, run.trainer)
    _log(f"all runs finished ({time.perf_counter() - start:.0f} s in this call); evaluating")
    return report_protocol(dataset_name, derived, protocol, protocol_name, pick_trainers, repeats, splits, output,
                           finetune_trainers, comparisons)


def report_protocol(dataset_name: str, derived: str, protocol: Protocol, protocol_name: str,
                    pick_trainers: list[str], repeats: int, splits: list[dict], output: str,
                    finetune_trainers: list[str] = (), comparisons: list[tuple[str, str]] = ()) -> str:
    """Scores, timings, curves and the report of finished runs (see :func:`run_protocol`)."""
    from nnunetv2.paths import nnUNet_preprocessed

    results = join(output, "results")
    preprocessed = join(str(nnUNet_preprocessed), dataset_name)
    dataset_json = read_json(join(preprocessed, "dataset.json"))
    gt = join(preprocessed, "gt_segmentations")
    classes = [k for k, v in dataset_json["labels"].items() if isinstance(v, int) and v > 0]
    timings = read_json(join(output, "runs.json")) if isfile(join(output, "runs.json")) else {}
    scores: dict[str, dict[int, dict]] = {}
    curves: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {}
    order = protocol_arms(pick_trainers, finetune_trainers)
    offset = protocol.schedule["num_epochs"] * protocol.schedule["num_iterations_per_epoch"]
    for run in sorted(protocol_runs(dataset_name, derived, pick_trainers, repeats, finetune_trainers,
                                    layout_repeats=split_repeats(protocol.repeats, repeats)),
                      key=lambda r: order.index(r.arm)):
        folder = join(model_folder(results, run.dataset, run.trainer, protocol.plans, protocol.base_configuration),
                      f"fold_{run.fold}")
        s = run_scores(folder, gt, dataset_json)
        if s is None:
            continue
        scores.setdefault(run.arm, {})[run.repeat] = s
        schedule = protocol.finetune_schedule if run.finetuned else protocol.schedule
        curve = cached_curve(join(folder, "checkpoint_final.pth"), schedule["num_iterations_per_epoch"],
                             join(output, "curves", f"{run.dataset}_{run.trainer}_fold{run.fold}.json"))
        if run.finetuned:  # drawn where it starts: after the labeled-only run it continues
            curve = {**curve, "iterations": [offset + x for x in curve["iterations"]]}
        curves.setdefault(run.arm, []).append(curve)
        key = (f"self-training/fold_{run.fold}" if run.arm == SELF_TRAINING
               else f"{run.dataset}/{run.trainer}/fold_{run.fold}")
        if key in timings:
            times.setdefault(run.arm, []).append(timings[key])
    scaled = {t: arm_schedule(protocol.schedule, t) for t in pick_trainers}
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("nnunet-pick", "nnunetv2", "torch", "numpy"))
    iterations = protocol.schedule["num_epochs"] * protocol.schedule["num_iterations_per_epoch"]
    meta = [f"# Accuracy protocol {protocol_name} on {dataset_name}", "",
            f"- {protocol.description}",
            (f"- plans {protocol.plans}, configuration {protocol.base_configuration}; schedule {protocol.schedule} "
            f"({iterations} iterations per run); final checkpoint only"),
            *[f"- {t}: {schedule['num_epochs']} epochs (its declared schedule_factor times the protocol's), the "
              f"other settings as above" for t, schedule in scaled.items() if schedule != protocol.schedule],
            f"- seeds: repeat r uses {protocol.seed} + r (training seed and labeled-subset draw)",
            *[f"- repeat {r}: labeled {splits[r]['train']}" for r in range(repeats)],
            (f"- test cases ({len(splits[0]['val'])}): "
            f"{'given ids' if protocol.test_case_ids else 'the package file ' + protocol.test_cases_file}, validation "
            f"cases of every fold, checked to be no arm's labeled, unlabeled or pseudo-labeled data"),
            f"- self-training: teacher = the labeled-only run of the repeat, student nnUNetTrainer in {derived}",
            *([f"- fine-tuning arms ('from labeled-only'): -pretrained_weights = the repeat's labeled-only "
               f"checkpoint_final.pth, then schedule {protocol.finetune_schedule}; their wall time excludes the "
               f"labeled-only run they start from"] if finetune_trainers else []),
            f"- versions: {versions}"]
    text = write_protocol_report(scores, classes, meta, times, output, comparisons)
    if curves:
        import matplotlib.pyplot as plt

        plt.close(plot_learning_curves(curves, classes, join(output, "learning_curves.png"),
                                       title=f"{protocol_name}: validation Dice during training ({dataset_name})"))
    return text
