"""``nnUNetv2_pick_demo [--workdir DIR] [-device cpu|cuda] [--full] [--compare] [-tr T] [--baseline-tr T]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nnunet_pick.console import print_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_demo",
        description="Train nnUNetTrainerPICK end to end on the embedded Hippocampus subset (12 labeled, 22 "
                    "unlabeled, 6 test cases) with nnU-Net's own commands, then predict and score the test cases. "
                    "On 2 otherwise idle CPU cores it takes about 15 minutes; --compare trains a second, cheaper "
                    "model on top.")
    parser.add_argument("--workdir", type=Path, default=Path("nnunet_pick_demo"),
                        help="folder for nnUNet_raw/preprocessed/results of the demo (default: ./nnunet_pick_demo)")
    parser.add_argument("-device", choices=("cpu", "cuda"), default="cpu", help="device to train on (default: cpu)")
    parser.add_argument("--full", action="store_true",
                        help="unchanged 3d_fullres plans and nnUNetTrainerPICK_100epochs (for a GPU) instead of the "
                             "CPU-sized run (default: off)")
    parser.add_argument("--compare", action="store_true",
                        help="also train nnU-Net's labeled-only baseline on the same split and print both arms with "
                             "the difference (default: off)")
    parser.add_argument("-tr", default=None,
                        help="PICK trainer (default: nnUNetTrainerPICK_demo; with --full nnUNetTrainerPICK_100epochs)")
    parser.add_argument("--baseline-tr", default=None,
                        help="labeled-only trainer for --compare (default: nnUNetTrainer_demo, i.e. nnUNetTrainer on "
                             "the demo's schedule; with --full nnUNetTrainer_demoFull)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunet_pick.demo import format_report, run_demo

    start = time.perf_counter()
    try:
        result = run_demo(args.workdir, args.device, args.full, args.compare, args.tr, args.baseline_tr,
                          log=print_text)
    except (FileExistsError, FileNotFoundError, RuntimeError) as e:
        print(f"nnUNetv2_pick_demo: error: {e}", file=sys.stderr)
        return 1
    for line in format_report(result):
        print_text(line)
    print_text(f"[demo] done in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
