"""NIH Pancreas-CT (TCIA) -> nnU-Net raw dataset (PICK Table 1: pancreas, 4-fold CV, 20 % (12) labeled).

Input: the TCIA download ``Pancreas-CT/PANCREAS_XXXX/<study>/<series>/*.dcm`` (one CT series per patient) and the
label folder ``TCIA_pancreas_labels-02-05-2017/labelXXXX.nii.gz`` (1 = pancreas). Series are read with SimpleITK's
GDCM series reader (slices sorted by position). The label is put on the CT's grid (origin, spacing, direction of the
CT; it must have the CT's voxel counts): the released label files do not carry the CT's geometry. ``--flip-label-axes``
flips label array axes (numpy (z, y, x) order) for copies of the labels that are stored mirrored; check one case
visually after converting. Cases 25 and 70 are duplicates of others in the release and are skipped by default, as in
the literature (82 -> 80 cases). Licence: CC BY 3.0 (TCIA Pancreas-CT); cite Roth et al. 2016 and TCIA.

Afterwards: ``nnUNetv2_pick_make_splits -d ID --folds 4 --num-labeled 12``.

Usage:
    python examples/convert_nih_pancreas.py --ct /data/Pancreas-CT --labels /data/TCIA_pancreas_labels-02-05-2017
        -o $nnUNet_raw [-d 82] [--flip-label-axes 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

DUPLICATES = ("0025", "0070")


def read_series(patient_folder: Path) -> sitk.Image:
    """The patient's CT series (the only DICOM series under the folder).

    Raises:
        ValueError: if there is no series or more than one.
    """
    folders = sorted({p.parent for p in patient_folder.rglob("*.dcm")})
    series = [(f, sid) for f in folders for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(f))]
    if len(series) != 1:
        raise ValueError(f"{patient_folder}: expected one DICOM series, found {len(series)}")
    folder, sid = series[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), sid))
    return reader.Execute()


def label_on_ct_grid(label: sitk.Image, ct: sitk.Image, flip_axes: tuple[int, ...] = ()) -> sitk.Image:
    """The label's voxels on the CT's geometry (optionally flipped along numpy axes).

    Raises:
        ValueError: if the voxel counts differ.
    """
    array = sitk.GetArrayFromImage(label).astype(np.uint8)
    if flip_axes:
        array = np.flip(array, axis=flip_axes).copy()
    if array.shape != sitk.GetArrayViewFromImage(ct).shape:
        raise ValueError(f"label {array.shape} and CT {sitk.GetArrayViewFromImage(ct).shape} differ in voxels")
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(ct)
    return out


def convert(ct_root: Path, label_root: Path, raw_root: Path, dataset_id: int = 82,
            flip_axes: tuple[int, ...] = (), keep_duplicates: bool = False) -> Path:
    patients = sorted(p for p in ct_root.glob("PANCREAS_*") if p.is_dir())
    if not patients:
        raise FileNotFoundError(f"No PANCREAS_XXXX folders under {ct_root}")
    out = raw_root / f"Dataset{dataset_id:03d}_NIHPancreas"
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(exist_ok=True)
    n = 0
    for patient in patients:
        number = patient.name.split("_")[1]
        if number in DUPLICATES and not keep_duplicates:
            continue
        label_file = label_root / f"label{number}.nii.gz"
        if not label_file.is_file():
            raise FileNotFoundError(f"{label_file} missing for {patient}")
        ct = read_series(patient)
        sitk.WriteImage(ct, str(out / "imagesTr" / f"pancreas_{number}_0000.nii.gz"))
        sitk.WriteImage(label_on_ct_grid(sitk.ReadImage(str(label_file)), ct, flip_axes),
                        str(out / "labelsTr" / f"pancreas_{number}.nii.gz"))
        n += 1
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "pancreas": 1}, "numTraining": n,
        "file_ending": ".nii.gz", "name": "NIHPancreas",
        "reference": "Roth et al., Data from Pancreas-CT, The Cancer Imaging Archive (2016)",
        "licence": "CC BY 3.0"}, indent=1), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="NIH Pancreas-CT (DICOM + NIfTI labels) -> nnU-Net raw dataset")
    parser.add_argument("--ct", required=True, type=Path, help="the Pancreas-CT folder (PANCREAS_XXXX/...)")
    parser.add_argument("--labels", required=True, type=Path, help="the TCIA_pancreas_labels folder")
    parser.add_argument("-o", required=True, type=Path, help="nnUNet_raw folder")
    parser.add_argument("-d", type=int, default=82, help="dataset id (default 82)")
    parser.add_argument("--flip-label-axes", type=int, nargs="*", default=[], help="numpy axes to flip labels on")
    parser.add_argument("--keep-duplicates", action="store_true", help="keep cases 25 and 70")
    args = parser.parse_args(argv)
    try:
        out = convert(args.ct, args.labels, args.o, args.d, tuple(args.flip_label_axes), args.keep_duplicates)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"convert_nih_pancreas: error: {e}", file=sys.stderr)
        return 1
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
