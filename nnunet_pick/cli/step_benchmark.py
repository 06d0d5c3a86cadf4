"""``nnUNetv2_pick_benchmark -d D -c C [-p PLANS] [-n STEPS] [-device cpu|cuda] [-tr TRAINER] [--compile]
[--json FILE]``."""

from __future__ import annotations

import argparse
import json
import sys

from nnunet_pick.console import print_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_benchmark",
        description="Cost of one PICK training step against nnU-Net's on the same plans and preprocessed data: "
                    "median step time and ratio (steps alternate so drift cancels), data-loader wait, peak memory "
                    "(CUDA allocator peak, or peak RSS of separate processes on the CPU) and ratio, and the ratio "
                    "the pass count predicts. Needs a planned and preprocessed dataset with unlabeled data.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-n", type=int, default=10, help="timed steps per trainer, after one untimed (default 10)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    parser.add_argument("-tr", default="nnUNetTrainerPICK", help="PICK trainer to measure (default nnUNetTrainerPICK)")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps of each memory probe (default 3)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both trainers' networks as nnU-Net does on CUDA, also on the CPU (where "
                             "nnU-Net does not); the first step then includes the compilation")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (default: none)")
    args = parser.parse_args(argv)
    from nnunet_pick.benchmark.step_benchmark import run_step_benchmark

    try:
        result = run_step_benchmark(args.d, args.c, args.p, steps=args.n, device=args.device, trainer=args.tr,
                                    memory_steps=args.memory_steps, force_compile=args.compile)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_benchmark: error: {e}", file=sys.stderr)
        return 1
    print_text(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.as_json(), f, indent=2)
        print_text(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
