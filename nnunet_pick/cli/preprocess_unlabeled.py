"""``nnUNetv2_pick_preprocess_unlabeled -d D -c CONFIG [-p PLANS] [-np N]``."""

from __future__ import annotations

import argparse
import sys

from nnunetv2.configuration import default_num_processes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_preprocess_unlabeled",
        description="Preprocess $nnUNet_raw/DatasetXXX/imagesUnlabeled with the dataset's plans into "
                    "$nnUNet_preprocessed/DatasetXXX/<data_identifier>_unlabeled. Cases already done are skipped.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", nargs="+", required=True, help="configuration(s), e.g. 3d_fullres 2d")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-np", type=int, default=default_num_processes,
                        help=f"worker processes (default: {default_num_processes}; 1 runs in this process)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    from nnunet_pick.unlabeled.preprocess import preprocess_unlabeled

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    dataset = int(args.d) if args.d.isdigit() else args.d
    try:
        for configuration in args.c:
            done = preprocess_unlabeled(dataset, configuration, args.p, args.np)
            print(f"{configuration}: preprocessed {len(done)} unlabeled case(s)")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_preprocess_unlabeled: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
