"""``nnUNetv2_pick_plan_experiment -d D [D ...] [-pl PLANNER] [-gpu_memory_target G] [-overwrite_plans_name N]``.

nnU-Net's ``nnUNetv2_plan_experiment -pl`` searches planners inside the nnunetv2 package only, so the PICK planners
get this command. It finds ``-pl NAME`` in the folders of ``nnUNet_extPlanner`` (a user's own subclasses of the PICK
planners) and then in nnunet-pick's ``planners/`` folder (:func:`nnunet_pick._discovery.find_planner`), and runs it
through nnU-Net's own ``plan_experiment_dataset``.
"""

from __future__ import annotations

import argparse
import sys
from os.path import isdir, isfile, join


def build_parser() -> argparse.ArgumentParser:
    from nnunet_pick.planning import PLANNERS

    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_plan_experiment",
        description="Plan patch and batch sizes that fit the PICK training step (three decoders, an unlabeled batch, "
                    "branch-wise backward) in the GPU memory target. Needs nnU-Net's fingerprint "
                    "(nnUNetv2_extract_fingerprint or nnUNetv2_plan_and_preprocess). Train with -p PLANS_NAME.")
    parser.add_argument("-d", nargs="+", type=int, required=True, help="dataset ids")
    parser.add_argument("-pl", default="nnUNetPlannerPICK",
                        help=f"planner: one of {', '.join(sorted(PLANNERS))}, or your own subclass of one in a folder "
                             f"listed in the environment variable nnUNet_extPlanner (default: %(default)s)")
    parser.add_argument("-gpu_memory_target", type=float, default=None,
                        help="GPU memory in GB (default: the planner's, 8 / 8 / 24 / 40 as nnU-Net's counterparts)")
    parser.add_argument("-overwrite_plans_name", default=None, help="plans name (default: the planner's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_pick._discovery import find_planner

    try:
        planner = find_planner(args.pl)
    except LookupError as e:
        print(f"nnUNetv2_pick_plan_experiment: error: -pl {args.pl}: {e}", file=sys.stderr)
        return 2
    for dataset_id in args.d:
        try:
            plans, plans_name = plan_experiment_dataset(dataset_id, planner, args.gpu_memory_target,
                                                        overwrite_plans_name=args.overwrite_plans_name)
        except RuntimeError as e:
            print(f"nnUNetv2_pick_plan_experiment: error: dataset {dataset_id}: {e}", file=sys.stderr)
            return 1
        name = maybe_convert_to_dataset_name(dataset_id)
        folder = join(nnUNet_preprocessed, name)
        stock_file = join(folder, planner.nnunet_plans_identifier + ".json")
        stock = load_json(stock_file)["configurations"] if isfile(stock_file) else {}
        print(f"{name}: plans {plans_name} written to {join(folder, plans_name + '.json')}")
        to_preprocess = []
        for cfg, plan in plans["configurations"].items():
            if "patch_size" not in plan:
                continue  # the cascade's inheriting entry
            line = f"  {cfg:12s} patch {plan['patch_size']} batch {plan['batch_size']}"
            if cfg in stock:
                line += f" (nnU-Net's plans: patch {stock[cfg]['patch_size']} batch {stock[cfg]['batch_size']})"
            ready = isdir(join(folder, plan["data_identifier"]))
            line += f"; data {plan['data_identifier']}" + (" (preprocessed)" if ready else " (not preprocessed)")
            if not ready:
                to_preprocess.append(cfg)
            print(line)
        if to_preprocess:
            print(f"  next: nnUNetv2_preprocess -d {dataset_id} -plans_name {plans_name} -c {' '.join(to_preprocess)}")
        print(f"  train: nnUNetv2_train {dataset_id} CONFIGURATION FOLD -tr nnUNetTrainerPICK -p {plans_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
