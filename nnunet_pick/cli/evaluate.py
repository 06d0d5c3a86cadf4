"""``nnUNetv2_pick_evaluate REF_FOLDER PRED_FOLDER -djfile dataset.json [-o FILE]``."""

from __future__ import annotations

import argparse
import json
import sys
from os.path import join


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_evaluate",
        description="Dice, Jaccard, ASD and HD95 (voxels and mm) per case and label, with mean and std, in the "
                    "layout of nnU-Net's summary.json (plus a CSV). Surface distances: MedPy asd / hd95.")
    parser.add_argument("reference_folder", help="reference segmentations (e.g. labelsTs or gt_segmentations)")
    parser.add_argument("prediction_folder", help="predicted segmentations (same file names)")
    parser.add_argument("-djfile", required=True, help="the dataset's dataset.json")
    parser.add_argument("-o", default=None, help="output JSON (default: PRED_FOLDER/summary_pick.json); the CSV "
                                                 "is written beside it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunet_pick.evaluation import METRICS, evaluate_folder

    output = args.o or join(args.prediction_folder, "summary_pick.json")
    try:
        with open(args.djfile, encoding="utf-8") as f:
            dataset_json = json.load(f)
        summary = evaluate_folder(args.reference_folder, args.prediction_folder, dataset_json, output)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"nnUNetv2_pick_evaluate: error: {e}", file=sys.stderr)
        return 1
    # the summary's keys are label values as nnU-Net writes them (the same lookup as the protocol's run_scores);
    # the console adds the names, regions keep their key
    names = {str(v): k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    rows = {label: f"{label} {names[label]}" if label in names else label for label in summary["mean"]}
    width = max(len("label"), *map(len, rows.values()))
    print(f"{len(summary['metric_per_case'])} cases; mean +/- std (NaN-free cases):")
    print(f"{'label':{width}s} " + "  ".join(f"{m:>16s}" for m in METRICS))
    for label, means in summary["mean"].items():
        cells = [f"{means[m]:8.4f} +/- {summary['std'][label][m]:6.4f}" for m in METRICS]
        print(f"{rows[label]:{width}s} " + "  ".join(cells))
    print(f"written: {output} and {output.rsplit('.', 1)[0]}.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
