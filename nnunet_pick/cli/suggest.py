"""``nnUNetv2_pick_suggest -d D -c C -f F [F ...] [-tr TRAINER] [-p PLANS] [-chk NAME] [-n K] [-o OUT]
[--cases ID ...] [-device cpu|cuda] [--disable_tta] [--step_size S]``."""

from __future__ import annotations

import argparse
import sys
from os.path import join

import numpy as np

from nnunet_pick.console import print_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_suggest",
        description="Rank the unlabeled cases of a dataset (imagesUnlabeled and the folds' 'unlabeled' ids of "
                    "splits_final.json) by how unsure a trained PICK model is about them: disagreement between the "
                    "primary and the auxiliary decoder, the primary decoder's entropy and, with several folds, the "
                    "folds' disagreement. Writes suggestions.csv / .md, the top-K segmentations and figures.")
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", required=True, help="configuration, e.g. 3d_fullres")
    parser.add_argument("-f", nargs="+", required=True, help="folds of the trained model (logits averaged)")
    parser.add_argument("-tr", default="nnUNetTrainerPICK", help="trainer (default nnUNetTrainerPICK)")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    parser.add_argument("-n", type=int, default=10, help="K: cases written with segmentation and figure (default: 10)")
    parser.add_argument("-o", default=None, help="output folder, empty or new (default: pick_suggestions in the "
                                                 "current folder)")
    parser.add_argument("--cases", nargs="+", default=None,
                        help="score only these unlabeled case ids (default: the whole pool)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    parser.add_argument("--disable_tta", action="store_true", help="no test-time mirroring (as nnUNetv2_predict)")
    parser.add_argument("--step_size", type=float, default=0.5, help="sliding-window step (default: 0.5, nnU-Net's)")
    args = parser.parse_args(argv)

    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from nnunet_pick.annotation.suggest import Suggester, restrict_pool, suggest, unlabeled_pool

    folds = [f if f == "all" else int(f) for f in args.f]
    output = args.o or "pick_suggestions"
    try:
        dataset_name = maybe_convert_to_dataset_name(args.d)
        model_folder = get_output_folder(dataset_name, args.tr, args.p, args.c)
        suggester = Suggester(model_folder, folds, args.chk, args.device, use_mirroring=not args.disable_tta,
                              tile_step_size=args.step_size)
        pool = unlabeled_pool(join(nnUNet_raw.require(), dataset_name), suggester.predictor.dataset_json,
                              join(nnUNet_preprocessed.require(), dataset_name, "splits_final.json"), folds)
        if args.cases is not None:
            pool = restrict_pool(pool, args.cases)
        if pool.excluded:
            print_text(f"left out {len(pool.excluded)} 'unlabeled' ids that are labeled training data of another "
                       f"given fold: {pool.excluded}")
        print_text(f"{len(pool.cases)} unlabeled cases of {dataset_name}; model {model_folder}, folds {folds}")
        rows = suggest(suggester, pool, output, num_top=args.n)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_pick_suggest: error: {e}", file=sys.stderr)
        return 1
    top = rows[: args.n]
    print_text("rank  case  combined  disagreement  entropy  fold_disagreement")
    for r in top:
        print_text(f"{r['rank']:>4}  {r['case']}  {r['combined']:.3f}  {r['disagreement']:.3f}  {r['entropy']:.3f}"
                   f"  {r['fold_disagreement']:.3f}")
    seconds = [r["seconds"] for r in rows]
    print_text(f"{len(rows)} cases, median {np.median(seconds):.2f} s per case on {args.device}. Written to {output}: "
               f"suggestions.csv, suggestions.md, segmentations/ and figures/ of the top {min(args.n, len(rows))}. "
               f"Correct the segmentations, then: nnUNetv2_pick_promote -d {args.d} -i CORRECTED_FOLDER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
