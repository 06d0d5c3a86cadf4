"""``nnUNetv2_pick_make_splits -d D (--labeled-fraction F | --num-labeled N) [--folds K] [--seed S]
[--labeled-ids FILE] [--test-ids FILE] [--force]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from os.path import isfile, join


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_make_splits",
        description="Write $nnUNet_preprocessed/DatasetXXX/splits_final.json with labeled / unlabeled / val cases per "
                    "fold. K-fold cross-validation by default; with --labeled-ids and/or --test-ids a fixed split (one "
                    "fold). Labeled fraction rounding: half up, at least one case.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--labeled-fraction", type=float, help="labeled fraction of each fold's training part")
    amount.add_argument("--num-labeled", type=int, help="number of labeled cases per fold")
    parser.add_argument("--folds", type=int, default=5, help="K for cross-validation (default 5)")
    parser.add_argument("--seed", type=int, default=12345, help="seed (default 12345, nnU-Net's)")
    parser.add_argument("--labeled-ids", help="file with the training list, one id per line; the first N are labeled "
                                              "(fixed split, e.g. the SSL papers' train.list)")
    parser.add_argument("--test-ids", help="file with test ids, one per line, used as validation (fixed split)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing splits_final.json")
    return parser


def _read_ids(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_pick.splits import fixed_split, fold_table, kfold_splits

    try:
        name = maybe_convert_to_dataset_name(int(args.d) if args.d.isdigit() else args.d)
        raw = join(nnUNet_raw, name)
        cases = sorted(get_filenames_of_train_images_and_targets(raw, load_json(join(raw, "dataset.json"))))
        out_folder = join(nnUNet_preprocessed, name)
        out = join(out_folder, "splits_final.json")
        if isfile(out) and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it (trained folds refer to it).")
        amount = {"fraction": args.labeled_fraction, "number": args.num_labeled}
        if args.labeled_ids or args.test_ids:
            test = _read_ids(args.test_ids) if args.test_ids else []
            train = _read_ids(args.labeled_ids) if args.labeled_ids else [c for c in cases if c not in set(test)]
            unknown = sorted(set(train + test) - set(cases))
            if unknown:
                raise ValueError(f"ids not in {raw}/imagesTr: {unknown[:10]}")
            splits = fixed_split(train, test, **amount)
        else:
            splits = kfold_splits(cases, args.folds, seed=args.seed, **amount)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_make_splits: error: {e}", file=sys.stderr)
        return 1
    os.makedirs(out_folder, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(splits, f, indent=1)
    print(fold_table(splits))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
