"""M&Ms (Multi-Centre, Multi-Vendor & Multi-Disease Cardiac Segmentation, 2020) -> nnU-Net raw dataset with
leave-one-vendor-out folds (PICK Table 5, semi-supervised domain generalisation).

Input: the ``OpenDataset/`` download: ``Training/Labeled/<CODE>/<CODE>_sa.nii.gz`` (4D cine short axis, x y z t) with
``<CODE>_sa_gt.nii.gz`` (labels at the ED and ES frames: 1 LV, 2 MYO, 3 RV), ``Validation/<CODE>/...``,
``Testing/<CODE>/...``, optional ``Training/Unlabeled/<CODE>/<CODE>_sa.nii.gz``, and the information CSV
(``--info``; columns ``External code``, ``Vendor`` (A-D), ``ED``, ``ES``: the 0-based frame indices).

Output ``<nnUNet_raw>/Dataset<ID>_MnMs/``: every labeled subject as two 3D cases, ``<CODE>_ED`` and ``<CODE>_ES``,
in ``imagesTr`` / ``labelsTr`` (train nnU-Net's ``2d`` configuration, as the paper's 2D setting), and
``splits_final.json`` with four folds: fold k holds out vendor A, B, C or D as validation; of the other vendors'
subjects a seeded ``--labeled-fraction`` (0.02 or 0.05; rounded half up, at least 1; counted in subjects, both
frames of a subject go together) is labeled and the rest listed as ``"unlabeled"``. With ``--include-unlabeled``
the ED and ES frames of ``Training/Unlabeled`` go to ``imagesUnlabeled`` (note: that folder is used by every fold,
so a fold holding out their vendor sees unlabeled scans of it). Use ``nnUNetTrainerPICK_Fourier`` for the paper's
Fourier augmentation. Licence: M&Ms data use agreement (Campello et al., IEEE TMI 2021).

Usage:
    python examples/convert_mnms.py -i /data/OpenDataset --info /data/info.csv -o $nnUNet_raw [-d 114]
        [--labeled-fraction 0.02] [--seed 0] [--include-unlabeled]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

VENDORS = ("A", "B", "C", "D")


def read_info(path: Path) -> dict[str, dict]:
    """``External code`` -> {"vendor", "ED", "ES"} from the M&Ms information CSV.

    Raises:
        ValueError: if a required column is missing.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = {"External code", "Vendor", "ED", "ES"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{path} lacks the columns {sorted(needed)} of the M&Ms information CSV")
    return {r["External code"].strip(): {"vendor": r["Vendor"].strip(), "ED": int(r["ED"]), "ES": int(r["ES"])}
            for r in rows}


def frame(image4d: sitk.Image, t: int) -> sitk.Image:
    """Frame ``t`` of a 4D (x, y, z, t) image as a 3D image with the spatial geometry kept."""
    if image4d.GetDimension() != 4:
        raise ValueError(f"expected a 4D cine image, got {image4d.GetDimension()}D")
    size = list(image4d.GetSize())
    if not 0 <= t < size[3]:
        raise ValueError(f"frame {t} outside the {size[3]} frames")
    return sitk.Extract(image4d, [*size[:3], 0], [0, 0, 0, t])


def subjects(root: Path, with_labels: bool) -> dict[str, Path]:
    """Subject code -> folder, for every subject folder with a ``_sa.nii.gz`` (and ``_sa_gt.nii.gz`` if labeled)."""
    found = {}
    parts = [("Training", "Labeled"), ("Validation",), ("Testing",)] if with_labels else [("Training", "Unlabeled")]
    for part in parts:
        base = root.joinpath(*part)
        for folder in sorted(p for p in base.glob("*") if p.is_dir()):
            has = (folder / f"{folder.name}_sa.nii.gz").is_file()
            if has and (not with_labels or (folder / f"{folder.name}_sa_gt.nii.gz").is_file()):
                found[folder.name] = folder
    return found


def leave_one_vendor_out(vendor_of: dict[str, str], fraction: float, seed: int) -> list[dict[str, list[str]]]:
    """Four folds over subjects; case ids are ``<CODE>_ED`` / ``<CODE>_ES``."""
    def cases(codes):
        return sorted(f"{c}_{p}" for c in codes for p in ("ED", "ES"))

    folds = []
    for k, held_out in enumerate(VENDORS):
        train = sorted(c for c, v in vendor_of.items() if v != held_out)
        random.Random(seed + k).shuffle(train)
        n_lab = max(1, math.floor(fraction * len(train) + 0.5))
        folds.append({"train": cases(train[:n_lab]), "val": cases(c for c, v in vendor_of.items() if v == held_out),
                      "unlabeled": cases(train[n_lab:])})
    return folds


def convert(root: Path, info_csv: Path, raw_root: Path, dataset_id: int = 114, fraction: float = 0.02,
            seed: int = 0, include_unlabeled: bool = False) -> Path:
    info = read_info(info_csv)
    labeled = subjects(root, with_labels=True)
    unknown = sorted(set(labeled) - set(info))
    if unknown:
        raise ValueError(f"subjects missing from {info_csv}: {unknown[:10]}")
    out = raw_root / f"Dataset{dataset_id:03d}_MnMs"
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for code, folder in labeled.items():
        image = sitk.ReadImage(str(folder / f"{code}_sa.nii.gz"))
        gt = sitk.ReadImage(str(folder / f"{code}_sa_gt.nii.gz"))
        for phase in ("ED", "ES"):
            t = info[code][phase]
            sitk.WriteImage(frame(image, t), str(out / "imagesTr" / f"{code}_{phase}_0000.nii.gz"))
            label = sitk.Cast(frame(gt, t), sitk.sitkUInt8)
            if not np.isin(sitk.GetArrayViewFromImage(label), [0, 1, 2, 3]).all():
                raise ValueError(f"{folder / f'{code}_sa_gt.nii.gz'} frame {t}: labels other than 0-3")
            sitk.WriteImage(label, str(out / "labelsTr" / f"{code}_{phase}.nii.gz"))
    if include_unlabeled:
        (out / "imagesUnlabeled").mkdir(exist_ok=True)
        for code, folder in subjects(root, with_labels=False).items():
            image = sitk.ReadImage(str(folder / f"{code}_sa.nii.gz"))
            for phase in ("ED", "ES"):
                sitk.WriteImage(frame(image, info[code][phase]),
                                str(out / "imagesUnlabeled" / f"{code}_{phase}_0000.nii.gz"))
    splits = leave_one_vendor_out({c: info[c]["vendor"] for c in labeled}, fraction, seed)
    (out / "splits_final.json").write_text(json.dumps(splits, indent=1), encoding="utf-8")
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "LV": 1, "MYO": 2, "RV": 3},
        "numTraining": 2 * len(labeled), "file_ending": ".nii.gz", "name": "MnMs",
        "description": f"M&Ms ED/ES frames; splits_final.json: fold k holds out vendor {'/'.join(VENDORS)}[k], "
                       f"{fraction:g} of the other vendors' subjects labeled (seed {seed})",
        "reference": "Campello et al., Multi-Centre, Multi-Vendor and Multi-Disease Cardiac Segmentation: The M&Ms "
                     "Challenge, IEEE TMI 40(12), 2021", "licence": "M&Ms data use agreement"}, indent=1),
        encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="M&Ms -> nnU-Net raw dataset, leave-one-vendor-out folds")
    parser.add_argument("-i", required=True, type=Path, help="the OpenDataset folder")
    parser.add_argument("--info", required=True, type=Path, help="the M&Ms information CSV")
    parser.add_argument("-o", required=True, type=Path, help="nnUNet_raw folder")
    parser.add_argument("-d", type=int, default=114, help="dataset id (default 114)")
    parser.add_argument("--labeled-fraction", type=float, default=0.02, help="0.02 or 0.05 (default 0.02)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--include-unlabeled", action="store_true", help="Training/Unlabeled -> imagesUnlabeled")
    args = parser.parse_args(argv)
    try:
        out = convert(args.i, args.info, args.o, args.d, args.labeled_fraction, args.seed, args.include_unlabeled)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"convert_mnms: error: {e}", file=sys.stderr)
        return 1
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
