"""``nnUNetv2_pick_report -d D -tr TRAINER [TRAINER ...] -c C [-p PLANS] [--results-root R ...] [-o DIR]``."""

from __future__ import annotations

import argparse
import sys
from os.path import join

from nnunet_pick.console import print_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_report",
        description="Gather the trained folds of several trainers into the PICK paper's table: mean +/- sd over folds "
                    "(and repeats) of Dice, Jaccard, ASD and HD95 of nnU-Net's validation, best in bold, as "
                    "Markdown and CSV, with plots of Dice against labeled fraction and against lambda.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-tr", nargs="+", required=True, help="trainers; the first is the baseline")
    parser.add_argument("-c", required=True, help="configuration")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--results-root", nargs="+", default=None,
                        help="nnU-Net results roots to search (default: $nnUNet_results; a benchmark's "
                             "repeat_* folders for repeats)")
    parser.add_argument("-o", default=None, help="output folder (default: the first results root)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_pick.benchmark.report import collect_runs, summarize_runs, write_report

    try:
        name = maybe_convert_to_dataset_name(int(args.d) if args.d.isdigit() else args.d)
        roots = args.results_root or [nnUNet_results.get()]
        runs = collect_runs(roots, name, args.tr, args.c, args.p, join(nnUNet_preprocessed, name))
        if not runs:
            raise FileNotFoundError(f"No finished fold with validation for {args.tr} ({args.c}, {args.p}) in {roots}.")
        text = write_report(summarize_runs(runs, args.tr), args.tr[0], args.o or roots[0])
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_report: error: {e}", file=sys.stderr)
        return 1
    print_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
