"""``nnUNetv2_pick_promote -d D -i CORRECTED_LABELS_FOLDER [--cases ID ...]``."""

from __future__ import annotations

import argparse
import sys
from os.path import join

from nnunet_pick.console import print_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_promote",
        description="Move corrected cases from imagesUnlabeled to imagesTr, their labels into labelsTr, count them in "
                    "dataset.json's numTraining, add them to 'train' of every fold of splits_final.json and delete "
                    "their preprocessed imagesUnlabeled files. Checks everything first and changes nothing if any "
                    "check fails; never overwrites; a re-run finishes an interrupted promotion.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-i", required=True, help="folder with the corrected labels, CASE<file_ending>")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="case ids to promote (default: every label file in -i)")
    args = parser.parse_args(argv)

    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_pick.annotation.promote import promote, resume_promotion

    try:
        dataset_name = maybe_convert_to_dataset_name(args.d)
        raw = join(nnUNet_raw.require(), dataset_name)
        preprocessed = join(nnUNet_preprocessed.get(), dataset_name) if nnUNet_preprocessed.is_set() else None
        resumed = resume_promotion(raw)
        done = list(resumed.cases) if resumed else []
        if done:
            print_text(f"finished an interrupted promotion of {done}")
        todo = args.cases
        if resumed:  # what the interrupted run already promoted is no new request
            requested = todo if todo is not None else _label_files(args.i, raw)
            todo = [c for c in requested if c not in done]
            if not todo:
                return _next_steps(args.d, done)
        plan = promote(raw, preprocessed, args.i, todo)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"nnUNetv2_pick_promote: error: {e}", file=sys.stderr)
        return 1
    print_text(f"promoted {len(plan.cases)} cases to labeled training data: {plan.cases}; numTraining is now "
               f"{plan.num_training}; {len(plan.stale)} stale preprocessed imagesUnlabeled files deleted; "
               f"updated {plan.dataset_json_files + plan.splits_files}")
    return _next_steps(args.d, done + plan.cases)


def _label_files(corrected_folder: str, raw_dataset_folder: str) -> list[str]:
    """Case ids of the label files in ``corrected_folder`` (by the dataset's file ending)."""
    import os

    from batchgenerators.utilities.file_and_folder_operations import load_json

    ending = load_json(join(raw_dataset_folder, "dataset.json"))["file_ending"]
    if not os.path.isdir(corrected_folder):
        return []
    return sorted(f[: -len(ending)] for f in os.listdir(corrected_folder) if f.endswith(ending)
                  and not f.startswith("."))


def _next_steps(dataset: str, cases: list[str]) -> int:
    print_text(f"next: preprocess the labeled data again so that the {len(cases)} new case(s) are included, e.g. "
               f"nnUNetv2_preprocess -d {dataset} -c CONFIGURATION (their preprocessed imagesUnlabeled files are "
               f"gone, so PICK no longer uses them as unlabeled data), then train, e.g. fine-tune the current "
               f"model: nnUNetv2_train {dataset} CONFIGURATION FOLD -tr nnUNetTrainerPICK -pretrained_weights "
               f"PATH/TO/fold_X/checkpoint_final.pth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
