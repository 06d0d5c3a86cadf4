"""``nnUNetv2_pick_benchmark_ssl -d D -c C (--labeled-fraction F | --num-labeled N) --folds ... -tr T [...]``."""

from __future__ import annotations

import argparse
import sys

from nnunet_pick.console import print_text


def build_parser() -> argparse.ArgumentParser:
    from nnunet_pick.benchmark.protocol import PROTOCOLS

    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_benchmark_ssl",
        description="Semi-supervised benchmark in one command: label-fraction splits, the labeled-only baseline and "
                    "PICK trainers on every fold (nnUNetv2_train, seeded, --repeats times), evaluation (Dice, "
                    "Jaccard, ASD, HD95) and the report. Resumes where it stopped.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--labeled-fraction", type=float, help="labeled fraction for new splits")
    amount.add_argument("--num-labeled", type=int, help="labeled cases per fold for new splits")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="folds to run (default: 0 1 2 3 4)")
    parser.add_argument("--n-folds", type=int, default=5, help="K of new splits (default 5)")
    parser.add_argument("-tr", nargs="*", default=["nnUNetTrainerPICK"],
                        help="trainers to compare with the baseline (default: nnUNetTrainerPICK; with --preset, "
                             "'-tr' alone trains no from-scratch PICK arm)")
    parser.add_argument("--baseline", default="nnUNetTrainer", help="labeled-only arm (default nnUNetTrainer)")
    parser.add_argument("--seed", type=int, default=12345, help="base seed; repeat r uses seed + r (default: 12345)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per arm and fold, with different seeds (default 1; with --preset the protocol's)")
    parser.add_argument("-device", choices=("cpu", "cuda"), default="cuda", help="device (default: cuda)")
    parser.add_argument("-o", "--output", default=None, help="output folder (default $nnUNet_results/"
                                                               "pick_benchmark_<dataset>_<configuration>)")
    parser.add_argument("-tr_finetune", nargs="+", default=[],
                        help="with --preset: fine-tuning arms, each started from the repeat's labeled-only "
                             "checkpoint_final.pth (-pretrained_weights) with the protocol's fine-tuning schedule, "
                             "e.g. nnUNetTrainerPICK_finetune nnUNetTrainer_finetune (default: none)")
    parser.add_argument("--skip-arms", nargs="+", default=[], choices=("self-training", "fully-supervised"),
                        help="with --preset: arms this call does not train, to order a long run (finished runs of "
                             "them stay in the report; default: train every arm)")
    parser.add_argument("--only-repeats", type=int, nargs="+", default=None, metavar="R",
                        help="with --preset: the repeats this call trains (0-based, below --repeats), e.g. "
                             "'--repeats 4 --only-repeats 2 3' to add repeats to an arm whose first ones an earlier "
                             "call measured; the report covers every finished repeat (default: all)")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("ARM", "OTHER"),
                        help="with --preset: add the paired difference ARM - OTHER to the report (repeatable; names "
                             "as in the report: labeled-only, a -tr trainer, self-training, 'fully supervised'), "
                             "e.g. --compare nnUNetTrainerPICK_CutMix nnUNetTrainer_CutMix (default: none)")
    parser.add_argument("--preset", choices=sorted(PROTOCOLS), default=None,
                        help="run the accuracy protocol (fixed test cases; labeled-only, PICK (-tr, default "
                             "nnUNetTrainerPICK), self-training and fully supervised arms; paired repeats; report with "
                             "confidence intervals, gap closed and learning curves); --repeats and -o apply, the "
                             "other options are the protocol's. " + "; ".join(
                                 f"{k}: {v.description}" for k, v in PROTOCOLS.items()).replace("%", "%%"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunet_pick.benchmark.protocol import run_protocol
    from nnunet_pick.benchmark.runner import run_benchmark

    try:
        if args.preset is not None:
            text = run_protocol(args.d, args.preset, pick_trainers=args.tr, repeats=args.repeats, output=args.output,
                                finetune_trainers=args.tr_finetune,
                                skip_arms={a.replace("fully-", "fully ") for a in args.skip_arms},
                                only_repeats=None if args.only_repeats is None else set(args.only_repeats),
                                comparisons=[tuple(pair) for pair in args.compare])
        else:
            text = run_benchmark(args.d, args.c, folds=args.folds, trainers=args.tr, baseline=args.baseline,
                                 labeled_fraction=args.labeled_fraction, num_labeled=args.num_labeled,
                                 n_folds=args.n_folds, plans=args.p, seed=args.seed, repeats=args.repeats or 1,
                                 device=args.device, output=args.output)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_benchmark_ssl: error: {e}", file=sys.stderr)
        return 1
    print_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
