"""Pool the paired differences of accuracy-protocol calls made in different sessions (no training, no evaluation).

    python benchmarks/combine_sessions.py SCORES_CSV [SCORES_CSV ...] [--compare ARM OTHER ...]
        [--fully-supervised DICE] [--plot PNG [--plot-arms ARM ...]]

Each ``scores_per_repeat.csv`` (written by ``nnUNetv2_pick_benchmark_ssl --preset ...``) is one call with its own
labeled-only runs. Same-seed labeled-only runs of two sessions differ by about 0.7 Dice (measured,
``benchmarks/hippocampus-cpu-cutmix/NOTES.md``), so an arm is never paired with another session's labeled-only run:
its difference to labeled-only is taken per repeat inside its own file, then pooled over files (each (arm, repeat) must
come from one file). ``--compare A B`` gives A - B per repeat as (A - labeled-only) - (B - labeled-only), each from its
own file: the labeled-only run of each session bridges the two. Intervals: Student's t over repeats
(``nnunet_pick.benchmark.statistics.paired_difference``). ``--fully-supervised`` (a fraction) adds the gap closed,
(mean difference) / (fully supervised - mean labeled-only of the arm's repeats). ``--plot`` draws the learning curves
of every session in one figure (``nnunet_pick.benchmark.curves.plot_learning_curves``), from the ``curves/`` folder
the protocol writes beside each ``scores_per_repeat.csv``; ``--plot-arms`` picks the arms (default: all that have
curves). A fine-tuning arm (``X from labeled-only``) is drawn from where its labeled-only run ends, as the protocol
draws it. The last column is the arm's wall time over its labeled-only run's, per repeat within one file and
averaged (from the ``runs.json`` beside each file; self-training and fine-tuning: their own time, beyond the
labeled-only model they start from).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os

from nnunet_pick.benchmark.protocol import LABELED_ONLY, SELF_TRAINING
from nnunet_pick.benchmark.statistics import paired_difference


def differences(paths: list[str]) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """arm -> repeat -> (arm - labeled-only of its file), and arm -> repeat -> that labeled-only Dice (fractions)."""
    diffs: dict[str, dict[int, float]] = {}
    base_of: dict[str, dict[int, float]] = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        base = {int(r["repeat"]): float(r["dice_mean"]) for r in rows if r["arm"] == LABELED_ONLY}
        for r in rows:
            arm, repeat = r["arm"], int(r["repeat"])
            if arm == LABELED_ONLY or repeat not in base:
                continue
            if repeat in diffs.get(arm, {}):
                raise ValueError(f"{arm} repeat {repeat} is in two files (second: {path}); give each run once")
            diffs.setdefault(arm, {})[repeat] = float(r["dice_mean"]) - base[repeat]
            base_of.setdefault(arm, {})[repeat] = base[repeat]
    return diffs, base_of


def run_names(arm: str, repeat: int) -> tuple[str, str]:
    """The protocol's ``runs.json`` key and cached-curve file pattern of repeat ``repeat`` of ``arm`` (fold = repeat;
    labeled-only and the self-training student train ``nnUNetTrainer``; ``X from labeled-only`` trains ``X``)."""
    trainer = "nnUNetTrainer" if arm in (LABELED_ONLY, SELF_TRAINING) else arm.partition(" from ")[0]
    if arm == SELF_TRAINING:
        return f"{SELF_TRAINING}/fold_{repeat}", f"Dataset5*_{trainer}_fold{repeat}.json"
    return f"Dataset004_Hippocampus/{trainer}/fold_{repeat}", f"Dataset004_*_{trainer}_fold{repeat}.json"


def time_ratios(paths: list[str]) -> dict[str, list[float]]:
    """arm -> per-repeat (arm wall time / labeled-only wall time of the same file and repeat), from ``runs.json``.

    Run keys are the protocol's: ``<dataset>/<trainer>/fold_<k>`` and ``self-training/fold_<k>``. Files without a
    ``runs.json`` and runs without a timing are left out.
    """
    ratios: dict[str, list[float]] = {}
    for path in paths:
        runs_file = os.path.join(os.path.dirname(os.path.abspath(path)), "runs.json")
        if not os.path.isfile(runs_file):
            continue
        with open(runs_file, encoding="utf-8") as f:
            runs = json.load(f)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            arm, repeat = r["arm"], int(r["repeat"])
            key, base = run_names(arm, repeat)[0], runs.get(run_names(LABELED_ONLY, repeat)[0])
            if arm != LABELED_ONLY and key in runs and base:
                ratios.setdefault(arm, []).append(runs[key] / base)
    return ratios


def session_curves(paths: list[str]) -> dict[str, list[dict]]:
    """arm -> the learning curves of its runs over all files, read from the ``curves/`` folder beside each file.

    The protocol caches one JSON per run, ``<dataset>_<trainer>_fold<k>.json``; repeat r of an arm trained fold r
    (labeled-only: ``nnUNetTrainer``; self-training: the derived dataset's ``nnUNetTrainer``). Runs without a cached
    curve (fully supervised folds, folders older than the cache) are left out, and a curve two files share (calls
    that continued one output folder share its labeled-only runs) is drawn once. Raises FileNotFoundError when a
    scores file has no ``curves/`` folder beside it.
    """
    curves: dict[str, list[dict]] = {}
    for path in paths:
        folder = os.path.join(os.path.dirname(os.path.abspath(path)), "curves")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} is missing: --plot needs the curves/ folder the protocol writes "
                                    f"beside {path}")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            arm, repeat = r["arm"], int(r["repeat"])
            found = sorted(glob.glob(os.path.join(folder, run_names(arm, repeat)[1])))
            if not found:
                continue
            with open(found[0], encoding="utf-8") as f:
                curve = json.load(f)
            if " from " in arm:  # fine-tuning: continues the labeled-only run of its repeat
                with open(sorted(glob.glob(os.path.join(folder, run_names(LABELED_ONLY, repeat)[1])))[0],
                          encoding="utf-8") as f:
                    offset = json.load(f)["iterations"][-1]
                curve = {**curve, "iterations": [offset + x for x in curve["iterations"]]}
            if curve not in curves.setdefault(arm, []):  # two calls may share labeled-only runs (one out folder)
                curves[arm].append(curve)
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("ARM", "OTHER"))
    parser.add_argument("--fully-supervised", type=float, default=None)
    parser.add_argument("--plot", default=None, metavar="PNG", help="learning curves of all files in one figure")
    parser.add_argument("--plot-arms", nargs="+", default=None, metavar="ARM")
    args = parser.parse_args()
    diffs, base_of = differences(args.csv)
    ratios = time_ratios(args.csv)
    print("| arm | repeats | diff vs labeled-only of its session (Dice %) [95 % CI] | per repeat | gap closed | "
          "wall time / labeled-only |")
    print("|---|---|---|---|---|---|")
    for arm, d in diffs.items():
        p = paired_difference(d, {r: 0.0 for r in d})
        gap = ""
        if args.fully_supervised is not None:
            lo = sum(base_of[arm].values()) / len(base_of[arm])
            gap = f"{100 * p.mean / (args.fully_supervised - lo):.0f} %"
        per = " / ".join(f"{100 * v:+.2f}" for _, v in sorted(d.items()))
        ratio = f"{sum(ratios[arm]) / len(ratios[arm]):.1f} x" if ratios.get(arm) else ""
        print(f"| {arm} | {p.n} | {100 * p.mean:+.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}] | {per} | {gap} "
              f"| {ratio} |")
    for arm, other in args.compare:
        p = paired_difference(diffs.get(arm, {}), diffs.get(other, {}))
        per = {r: round(100 * (diffs[arm][r] - diffs[other][r]), 2) for r in sorted(set(diffs.get(arm, {}))
                                                                                 & set(diffs.get(other, {})))}
        low, high = ("n/a" if math.isnan(x) else f"{100 * x:.1f}" for x in (p.low, p.high))
        print(f"{arm} - {other}: {100 * p.mean:+.1f} [{low}, {high}] over {p.n} repeats, per repeat {per}")
    if args.plot:
        from nnunet_pick.benchmark.curves import plot_learning_curves

        curves = session_curves(args.csv)
        arms = args.plot_arms or list(curves)
        missing = [a for a in arms if a not in curves]
        if missing:
            raise SystemExit(f"--plot-arms: no curves for {missing}; arms with curves: {sorted(curves)}")
        with open(args.csv[0], newline="", encoding="utf-8") as f:
            classes = [c[len("dice_"):] for c in next(csv.reader(f)) if c.startswith("dice_") and c != "dice_mean"]
        plot_learning_curves({a: curves[a] for a in arms}, classes, args.plot,
                             title="pooled over sessions")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
