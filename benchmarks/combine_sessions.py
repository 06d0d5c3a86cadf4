"""Pool the paired differences of accuracy-protocol calls made in different sessions (no training, no evaluation).

    python benchmarks/combine_sessions.py SCORES_CSV [SCORES_CSV ...] [--compare ARM OTHER ...]
        [--fully-supervised DICE]

Each ``scores_per_repeat.csv`` (written by ``nnUNetv2_pick_benchmark_ssl --preset ...``) is one call with its own
labeled-only runs. Same-seed labeled-only runs of two sessions differ by about 0.7 Dice (measured,
``benchmarks/hippocampus-cpu-cutmix/NOTES.md``), so an arm is never paired with another session's labeled-only run:
its difference to labeled-only is taken per repeat inside its own file, then pooled over files (each (arm, repeat) must
come from one file). ``--compare A B`` gives A - B per repeat as (A - labeled-only) - (B - labeled-only), each from its
own file: the labeled-only run of each session bridges the two. Intervals: Student's t over repeats
(``nnunet_pick.benchmark.statistics.paired_difference``). ``--fully-supervised`` (a fraction) adds the gap closed,
(mean difference) / (fully supervised - mean labeled-only of the arm's repeats).
"""

from __future__ import annotations

import argparse
import csv
import math

from nnunet_pick.benchmark.protocol import LABELED_ONLY
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("ARM", "OTHER"))
    parser.add_argument("--fully-supervised", type=float, default=None)
    args = parser.parse_args()
    diffs, base_of = differences(args.csv)
    print("| arm | repeats | diff vs labeled-only of its session (Dice %) [95 % CI] | per repeat | gap closed |")
    print("|---|---|---|---|---|")
    for arm, d in diffs.items():
        p = paired_difference(d, {r: 0.0 for r in d})
        gap = ""
        if args.fully_supervised is not None:
            lo = sum(base_of[arm].values()) / len(base_of[arm])
            gap = f"{100 * p.mean / (args.fully_supervised - lo):.0f} %"
        per = " / ".join(f"{100 * v:+.2f}" for _, v in sorted(d.items()))
        print(f"| {arm} | {p.n} | {100 * p.mean:+.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}] | {per} | {gap} |")
    for arm, other in args.compare:
        p = paired_difference(diffs.get(arm, {}), diffs.get(other, {}))
        per = {r: round(100 * (diffs[arm][r] - diffs[other][r]), 2) for r in sorted(set(diffs.get(arm, {}))
                                                                                 & set(diffs.get(other, {})))}
        low, high = ("n/a" if math.isnan(x) else f"{100 * x:.1f}" for x in (p.low, p.high))
        print(f"{arm} - {other}: {100 * p.mean:+.1f} [{low}, {high}] over {p.n} repeats, per repeat {per}")


if __name__ == "__main__":
    main()
