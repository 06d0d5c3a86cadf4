"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, 13 organs) -> a test set with AMOS's labels.

For the PICK paper's cross-cohort test (train on AMOS, test on BTCV): the 30 labeled BTCV training scans
(``RawData/Training/img/imgXXXX.nii.gz``, ``label/labelXXXX.nii.gz``) are written to ``<output>/imagesTs`` and
``labelsTs`` with their labels renumbered to AMOS's classes. BTCV's "portal vein and splenic vein" (10) has no AMOS
class and becomes background; AMOS's duodenum, bladder and prostate/uterus do not exist in BTCV, so score only the
12 shared organs. Predict ``imagesTs`` with the AMOS model (``nnUNetv2_predict``) and score with
``nnUNetv2_pick_evaluate <output>/labelsTs PRED -djfile <output>/dataset.json``. Licence: Synapse BTCV terms
(register at synapse.org, syn3193805); cite Landman et al., MICCAI 2015 workshop.

Usage:
    python examples/convert_btcv.py -i /data/RawData -o /data/BTCV_as_AMOS
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

BTCV_LABELS = {1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder", 5: "esophagus", 6: "liver",
               7: "stomach", 8: "aorta", 9: "inferior vena cava", 10: "portal vein and splenic vein",
               11: "pancreas", 12: "right adrenal gland", 13: "left adrenal gland"}
AMOS_LABELS = {"background": 0, "spleen": 1, "right kidney": 2, "left kidney": 3, "gallbladder": 4, "esophagus": 5,
               "liver": 6, "stomach": 7, "aorta": 8, "postcava": 9, "pancreas": 10, "right adrenal gland": 11,
               "left adrenal gland": 12, "duodenum": 13, "bladder": 14, "prostate/uterus": 15}
#: BTCV label -> AMOS label (0: no AMOS class)
BTCV_TO_AMOS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9, 10: 0, 11: 10, 12: 11, 13: 12}


def map_labels(label: np.ndarray) -> np.ndarray:
    """Renumber a BTCV label map to AMOS's classes (:data:`BTCV_TO_AMOS`).

    Raises:
        ValueError: for a value that is not a BTCV label.
    """
    unknown = sorted(set(np.unique(label).tolist()) - set(BTCV_TO_AMOS))
    if unknown:
        raise ValueError(f"label values {unknown} are not BTCV labels 0-13")
    lut = np.zeros(max(BTCV_TO_AMOS) + 1, dtype=np.uint8)
    for btcv, amos in BTCV_TO_AMOS.items():
        lut[btcv] = amos
    return lut[label]


def convert(raw_data: Path, output: Path) -> Path:
    images = sorted((raw_data / "Training" / "img").glob("img*.nii.gz"))
    if not images:
        raise FileNotFoundError(f"No Training/img/img*.nii.gz under {raw_data} (expected BTCV's RawData folder)")
    (output / "imagesTs").mkdir(parents=True, exist_ok=True)
    (output / "labelsTs").mkdir(exist_ok=True)
    for image in images:
        number = image.name[len("img"): -len(".nii.gz")]
        label_file = raw_data / "Training" / "label" / f"label{number}.nii.gz"
        label = sitk.ReadImage(str(label_file))
        mapped = sitk.GetImageFromArray(map_labels(sitk.GetArrayFromImage(label).astype(np.int64)))
        mapped.CopyInformation(label)
        sitk.WriteImage(sitk.ReadImage(str(image)), str(output / "imagesTs" / f"btcv_{number}_0000.nii.gz"))
        sitk.WriteImage(mapped, str(output / "labelsTs" / f"btcv_{number}.nii.gz"))
    (output / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": AMOS_LABELS, "numTraining": 0, "file_ending": ".nii.gz",
        "name": "BTCV_as_AMOS", "description": "BTCV training scans as a test set, labels renumbered to AMOS's "
        "(portal/splenic vein -> background; no duodenum, bladder, prostate/uterus in BTCV)",
        "reference": "Landman et al., MICCAI 2015 Multi-Atlas Labeling Beyond the Cranial Vault",
        "licence": "Synapse BTCV terms (syn3193805)"}, indent=1), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="BTCV -> test set with AMOS labels")
    parser.add_argument("-i", required=True, type=Path, help="BTCV RawData folder (with Training/img, Training/label)")
    parser.add_argument("-o", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)
    try:
        print(f"written: {convert(args.i, args.o)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"convert_btcv: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
