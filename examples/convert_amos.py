"""AMOS 2022 (abdominal multi-organ, 15 classes) -> nnU-Net raw dataset with the SSL papers' 216 / 24 / 120 split.

Input: the ``amos22/`` download (``imagesTr``, ``labelsTr``, ``imagesVa``, ``labelsVa``, ``dataset.json`` with its
``labels``). The 360 labeled scans (training + validation sets) are split 216 train / 24 validation / 120 test as in
the semi-supervised AMOS benchmark the PICK paper follows (its Table 3): either from the authors' id lists
(``--split-lists train.txt val.txt test.txt``, one case id per line) or, without them, by a seeded permutation of the
sorted ids (stated in ``dataset.json``).

Output ``<nnUNet_raw>/Dataset<ID>_AMOS/``: the 240 train + validation scans in ``imagesTr`` / ``labelsTr``, the 120
test scans in ``imagesTs`` / ``labelsTs`` (for ``nnUNetv2_predict`` + ``nnUNetv2_pick_evaluate``), optional truly
unlabeled scans (``--unlabeled-dir``, the AMOS unlabeled release) in ``imagesUnlabeled``, and ``splits_final.json``:
one fold with the 24 validation cases and ``--num-labeled`` (11 = 5 %, 22 = 10 % of 216) labeled cases, the rest of
the 216 under ``"unlabeled"``. Licence: CC BY 4.0 (AMOS 2022); cite Ji et al., NeurIPS 2022.

Usage:
    python examples/convert_amos.py -i /data/amos22 -o $nnUNet_raw [-d 218] [--num-labeled 11] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

N_TRAIN, N_VAL, N_TEST = 216, 24, 120


def labeled_cases(amos: Path) -> dict[str, tuple[Path, Path]]:
    """Case id -> (image, label) for every labeled scan of the training and validation sets."""
    cases = {}
    for images, labels in (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa")):
        for label in sorted((amos / labels).glob("*.nii.gz")):
            case = label.name[: -len(".nii.gz")]
            image = amos / images / label.name
            if not image.is_file():
                raise FileNotFoundError(f"{image} missing for label {label}")
            cases[case] = (image, label)
    return cases


def split_ids(cases: list[str], lists: list[Path] | None, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) ids from the given lists, or a seeded permutation of the sorted ids."""
    if lists:
        train, val, test = ([line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
                             for p in lists)
        unknown = sorted(set(train + val + test) - set(cases))
        if unknown:
            raise ValueError(f"split lists name cases that are not in the download: {unknown[:10]}")
        return train, val, test
    if len(cases) != N_TRAIN + N_VAL + N_TEST:
        raise ValueError(f"expected {N_TRAIN + N_VAL + N_TEST} labeled scans (imagesTr + imagesVa), found "
                         f"{len(cases)}; pass --split-lists for another selection")
    order = sorted(cases)
    random.Random(seed).shuffle(order)
    return order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_VAL], order[N_TRAIN + N_VAL:]


def convert(amos: Path, raw_root: Path, dataset_id: int = 218, num_labeled: int = 11, seed: int = 0,
            split_lists: list[Path] | None = None, unlabeled_dir: Path | None = None) -> Path:
    source_json = json.loads((amos / "dataset.json").read_text(encoding="utf-8"))
    labels = {name: int(k) for k, name in source_json["labels"].items()}
    cases = labeled_cases(amos)
    train, val, test = split_ids(list(cases), split_lists, seed)
    out = raw_root / f"Dataset{dataset_id:03d}_AMOS"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for case in train + val:
        shutil.copy(cases[case][0], out / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(cases[case][1], out / "labelsTr" / f"{case}.nii.gz")
    for case in test:
        shutil.copy(cases[case][0], out / "imagesTs" / f"{case}_0000.nii.gz")
        shutil.copy(cases[case][1], out / "labelsTs" / f"{case}.nii.gz")
    if unlabeled_dir is not None:
        (out / "imagesUnlabeled").mkdir(exist_ok=True)
        for image in sorted(unlabeled_dir.glob("*.nii.gz")):
            shutil.copy(image, out / "imagesUnlabeled" / f"{image.name[: -len('.nii.gz')]}_0000.nii.gz")
    split = {"train": train[:num_labeled], "val": sorted(val), "unlabeled": train[num_labeled:]}
    (out / "splits_final.json").write_text(json.dumps([split], indent=1), encoding="utf-8")
    how = "the given split lists" if split_lists else f"a permutation of the sorted ids seeded with {seed}"
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": len(train) + len(val),
        "file_ending": ".nii.gz", "name": "AMOS",
        "description": f"AMOS 2022 labeled scans: {len(train)} train / {len(val)} val (imagesTr) / {len(test)} test "
                       f"(imagesTs) from {how}; splits_final.json: {num_labeled} labeled",
        "reference": "Ji et al., AMOS: A Large-Scale Abdominal Multi-Organ Benchmark, NeurIPS 2022",
        "licence": "CC BY 4.0"}, indent=1), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="AMOS 2022 -> nnU-Net raw dataset (216 / 24 / 120)")
    parser.add_argument("-i", required=True, type=Path, help="the amos22 folder")
    parser.add_argument("-o", required=True, type=Path, help="nnUNet_raw folder")
    parser.add_argument("-d", type=int, default=218, help="dataset id (default 218)")
    parser.add_argument("--num-labeled", type=int, default=11, help="labeled of the 216 (11 = 5 %%, 22 = 10 %%)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split when no lists are given")
    parser.add_argument("--split-lists", type=Path, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        help="id lists of the train / val / test scans")
    parser.add_argument("--unlabeled-dir", type=Path, help="folder of unlabeled AMOS scans (*.nii.gz)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.i, args.o, args.d, args.num_labeled, args.seed, args.split_lists, args.unlabeled_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"convert_amos: error: {e}", file=sys.stderr)
        return 1
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
