"""2018 Left Atrium Segmentation Challenge, in the HDF5 form of the SSL papers -> nnU-Net raw dataset.

Input: the folder the SSL code bases (UA-MT and its descendants) distribute: one folder per case,
``<CASE>/mri_norm2.h5`` with datasets ``image`` (float32 (X, Y, Z), cropped around the atrium, z-scored) and
``label`` (uint8, 0/1), plus ``train.list`` (80 ids) and ``test.list`` (20 ids). No spacing is stored; the
challenge data is 0.625 mm isotropic (the papers' convention).

Output: ``<nnUNet_raw>/Dataset<ID>_LA2018/`` with every case as a labeled ``imagesTr`` case (NIfTI via SimpleITK,
spacing 0.625 mm), ``dataset.json`` (licence and citation), and ``splits_final.json`` for the papers' protocol: one
fold, validation = ``test.list``, the first ``--num-labeled`` ids of ``train.list`` labeled (8 = 10 %, 16 = 20 %), the
rest of ``train.list`` under ``"unlabeled"``. nnU-Net's planner copies that file to the preprocessed folder, so
``nnUNetv2_train ... 0`` trains that protocol (stock ``nnUNetTrainer``: labeled only; ``nnUNetTrainerPICK``: + the
unlabeled cases). HDF5 is read with h5py.

Usage:
    python examples/convert_la2018.py -i /data/2018LA_Seg_Training_Set -o $nnUNet_raw [-d 120] [--num-labeled 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

SPACING_MM = (0.625, 0.625, 0.625)
CITATION = ("Xiong et al., A global benchmark of algorithms for segmenting the left atrium from late "
            "gadolinium-enhanced cardiac magnetic resonance imaging, Medical Image Analysis 67, 101832 (2021)")


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_nifti(array_xyz: np.ndarray, path: Path, spacing=SPACING_MM) -> None:
    """(X, Y, Z) array -> NIfTI with the given spacing (SimpleITK takes arrays as (Z, Y, X))."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def convert(input_folder: Path, raw_root: Path, dataset_id: int = 120, num_labeled: int = 8) -> Path:
    """Convert; returns the dataset folder.

    Raises:
        FileNotFoundError: if ``train.list`` / ``test.list`` or a listed case's h5 file is missing.
        ValueError: if an h5 file lacks ``image`` / ``label`` or their shapes differ.
    """
    train, test = (read_list(input_folder / name) for name in ("train.list", "test.list"))
    cases = [c for c in train + test if (input_folder / c / "mri_norm2.h5").is_file()]
    missing = [c for c in train + test if c not in cases]
    if not cases:
        raise FileNotFoundError(f"No <CASE>/mri_norm2.h5 under {input_folder} for the ids of train.list/test.list.")
    if missing:
        print(f"convert_la2018: warning: {len(missing)} listed cases have no h5 file and are left out, e.g. "
              f"{missing[:3]}", file=sys.stderr)
    out = raw_root / f"Dataset{dataset_id:03d}_LA2018"
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    for case in cases:
        with h5py.File(input_folder / case / "mri_norm2.h5", "r") as f:
            if "image" not in f or "label" not in f:
                raise ValueError(f"{input_folder / case / 'mri_norm2.h5'} lacks the 'image' or 'label' dataset")
            image, label = f["image"][:], f["label"][:]
        if image.shape != label.shape:
            raise ValueError(f"{case}: image {image.shape} and label {label.shape} differ")
        write_nifti(image.astype(np.float32), out / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(label.astype(np.uint8), out / "labelsTr" / f"{case}.nii.gz")
    train_present = [c for c in train if c in cases]
    split = {"train": train_present[:num_labeled], "val": sorted(c for c in test if c in cases),
             "unlabeled": train_present[num_labeled:]}
    (out / "splits_final.json").write_text(json.dumps([split], indent=1), encoding="utf-8")
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "left_atrium": 1},
        "numTraining": len(cases), "file_ending": ".nii.gz", "name": "LA2018",
        "description": "2018 Atrial Segmentation Challenge, LGE-MRI, from the SSL papers' h5 files; "
                       f"splits_final.json: {num_labeled} labeled of train.list, test.list as validation",
        "reference": CITATION, "licence": "research use (2018 Atrial Segmentation Challenge); cite the challenge "
                                          "paper", "listed_cases_missing": len(missing)}, indent=1), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="2018 Left Atrium (SSL h5 form) -> nnU-Net raw dataset")
    parser.add_argument("-i", required=True, type=Path, help="folder with <CASE>/mri_norm2.h5, train.list, test.list")
    parser.add_argument("-o", required=True, type=Path, help="nnUNet_raw folder")
    parser.add_argument("-d", type=int, default=120, help="dataset id (default 120)")
    parser.add_argument("--num-labeled", type=int, default=8,
                        help="labeled cases of train.list (8 = 10 %%, 16 = 20 %%)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.i, args.o, args.d, args.num_labeled)
    except (FileNotFoundError, ValueError) as e:
        print(f"convert_la2018: error: {e}", file=sys.stderr)
        return 1
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
