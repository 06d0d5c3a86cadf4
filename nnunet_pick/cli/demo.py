"""``nnUNetv2_pick_demo [--workdir DIR] [-device cpu|cuda] [--full]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_demo",
        description="Train nnUNetTrainerPICK end to end on the embedded Hippocampus subset (12 labeled, 22 "
                    "unlabeled, 6 test cases) with nnU-Net's own commands, then predict and score the test cases.")
    parser.add_argument("--workdir", type=Path, default=Path("nnunet_pick_demo"),
                        help="folder for nnUNet_raw/preprocessed/results of the demo (default: ./nnunet_pick_demo)")
    parser.add_argument("-device", choices=("cpu", "cuda"), default="cpu", help="device to train on (default: cpu)")
    parser.add_argument("--full", action="store_true",
                        help="unchanged plans and nnUNetTrainerPICK_100epochs (for a GPU) instead of the CPU-sized run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunet_pick.demo import run_demo

    start = time.perf_counter()
    try:
        result = run_demo(args.workdir, args.device, args.full)
    except (FileExistsError, FileNotFoundError, RuntimeError) as e:
        print(f"nnUNetv2_pick_demo: error: {e}", file=sys.stderr)
        return 1
    print("\n[demo] test-set Dice (nnU-Net's compute_metrics_on_folder, 6 held-out cases):")
    for case, dice in result.dice_per_case.items():
        print(f"    {case:28s} " + "  ".join(f"{k} {v:.3f}" for k, v in dice.items()))
    print("    mean                         " + "  ".join(f"{k} {v:.3f}" for k, v in result.dice_per_class.items()))
    print(f"[demo] trained model:   {result.model_folder}")
    print(f"       training log, progress.png, MIM figures: {result.model_folder / 'fold_0'}")
    print(f"[demo] test predictions: {result.predictions} (scores in summary.json)")
    print(f"[demo] commands and their output: {result.workdir / 'demo_commands.log'}")
    print("[demo] seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items())
          + f"; total {time.perf_counter() - start:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
