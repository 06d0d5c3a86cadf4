"""``nnUNetv2_pick_self_training -d D -c C -f F [-p PLANS] [-tr TEACHER] [-tr_student STUDENT]``: nnU-Net's
self-training recipe (teacher -> pseudo-labels -> student) in one command; see :mod:`nnunet_pick.self_training`."""

from __future__ import annotations

import argparse
import os
import sys
from os.path import join

from nnunet_pick.console import print_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_self_training",
        description="nnU-Net's own recipe for unlabeled data: the labeled-only model of the fold (trained first if "
                    "missing) predicts the fold's unlabeled cases (imagesUnlabeled and the split's 'unlabeled' ids), "
                    "then a stock nnU-Net trainer learns from labeled + pseudo-labeled cases with the same plans and "
                    "validation cases, in a derived dataset (the source dataset is never modified). Resumes where "
                    "it stopped.")
    parser.add_argument("-d", required=True, help="source dataset name or id")
    parser.add_argument("-c", required=True, help="configuration of teacher and student (e.g. 3d_fullres)")
    parser.add_argument("-f", type=int, required=True, help="fold of the source's splits_final.json")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("-tr", default="nnUNetTrainer", help="teacher trainer (default: nnUNetTrainer)")
    parser.add_argument("-tr_student", default="nnUNetTrainer", help="student trainer (default: nnUNetTrainer)")
    parser.add_argument("-device", choices=("cuda", "cpu"), default="cuda", help="device (default: cuda)")
    parser.add_argument("--disable_tta", action="store_true",
                        help="predict pseudo-labels without mirroring (default: with, as nnUNetv2_predict)")
    parser.add_argument("-np", type=int, default=2, help="processes for preprocessing and export (default: 2)")
    parser.add_argument("--derived-id", type=int, default=None,
                        help="dataset id of a new derived dataset (default: the first free id from 500)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_pick.fold_runs import fold_state, model_folder, train_fold
    from nnunet_pick.self_training import Teacher, run_self_training

    try:
        source = maybe_convert_to_dataset_name(int(args.d) if args.d.isdigit() else args.d)
        logs = join(str(nnUNet_results), source, "self_training_logs")
        os.makedirs(logs, exist_ok=True)
        log = join(logs, f"fold_{args.f}.log")
        env = dict(os.environ)

        def train(dataset: str, fold: int, trainer: str) -> None:
            folder = join(model_folder(str(nnUNet_results), dataset, trainer, args.p, args.c), f"fold_{fold}")
            if fold_state(folder) == "done":
                return
            print_text(f"[self-training] nnUNetv2_train {dataset} {args.c} {fold} -tr {trainer} -p {args.p} "
                       f"(log: {log}; nnU-Net's own log in {folder})")
            train_fold(dataset, args.c, fold, trainer, args.p, fold_folder=folder, env=env, log=log,
                       device=args.device)

        derived = run_self_training(
            source, args.c, args.f, teacher=Teacher(args.tr, args.p, args.c), student_trainer=args.tr_student,
            train=train, env=env, log=log, device=args.device, use_mirroring=not args.disable_tta,
            derived_id=args.derived_id, num_processes=args.np)
    except (FileNotFoundError, ValueError, RuntimeError, IndexError, NotImplementedError) as e:
        print(f"nnUNetv2_pick_self_training: error: {e}", file=sys.stderr)
        return 1
    student = join(model_folder(str(nnUNet_results), derived, args.tr_student, args.p, args.c), f"fold_{args.f}")
    print_text(f"[self-training] done. Student: {student}\n"
               f"Predict with: nnUNetv2_predict -i INPUT -o OUTPUT -d {derived[7:10]} -c {args.c} "
               f"-tr {args.tr_student} -p {args.p} -f {args.f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
