"""Medical Segmentation Decathlon Task06_Lung -> nnU-Net raw dataset (lung tumour, PICK Table 1).

Input: the MSD download ``Task06_Lung/`` (``imagesTr/lung_XXX.nii.gz``, ``labelsTr/``, ``imagesTs/``, MSD
``dataset.json``). The conversion itself is nnU-Net's own MSD converter
(``nnunetv2.dataset_conversion.convert_MSD_dataset.convert_msd_dataset``); this command then, with
``--test-as-unlabeled``, moves the unlabeled ``imagesTs`` scans to ``imagesUnlabeled``, where ``nnUNetTrainerPICK``
uses them as unlabeled training data (the PICK paper's protocol uses the labeled cases only: 4-fold cross-validation
with 20 % (10) labeled, written afterwards with ``nnUNetv2_pick_make_splits -d ID --folds 4 --num-labeled 10``).
Licence: CC-BY-SA 4.0 (MSD); ``dataset.json`` keeps MSD's licence and reference fields.

Usage:
    nnUNet_raw=/data/nnUNet_raw python examples/convert_msd_lung.py -i /data/Task06_Lung [-d 6] [--test-as-unlabeled]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def convert(source: Path, dataset_id: int | None = None, test_as_unlabeled: bool = False,
            num_processes: int = 2) -> Path:
    """Run nnU-Net's MSD converter; optionally turn ``imagesTs`` into ``imagesUnlabeled``. Returns the folder."""
    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset
    from nnunetv2.paths import nnUNet_raw

    if not (source / "dataset.json").is_file():
        raise FileNotFoundError(f"{source} is not an MSD task folder (no dataset.json); expected .../Task06_Lung")
    task_id = int(source.name.split("_")[0][4:])
    convert_msd_dataset(str(source), dataset_id, num_processes=num_processes)
    out = Path(nnUNet_raw.get()) / f"Dataset{dataset_id or task_id:03d}_{source.name.split('_', 1)[1]}"
    if test_as_unlabeled and (out / "imagesTs").is_dir():
        shutil.move(str(out / "imagesTs"), str(out / "imagesUnlabeled"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MSD Task06_Lung -> nnU-Net raw dataset (nnU-Net's MSD converter)")
    parser.add_argument("-i", required=True, type=Path, help="the Task06_Lung folder")
    parser.add_argument("-d", type=int, default=None, help="dataset id (default: MSD's, 6)")
    parser.add_argument("--test-as-unlabeled", action="store_true", help="use imagesTs as imagesUnlabeled")
    parser.add_argument("-np", type=int, default=2, help="processes")
    args = parser.parse_args(argv)
    try:
        print(f"written: {convert(args.i, args.d, args.test_as_unlabeled, args.np)}")
    except (FileNotFoundError, ValueError, AssertionError) as e:
        print(f"convert_msd_lung: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
