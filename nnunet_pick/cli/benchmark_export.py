"""``nnUNetv2_pick_benchmark_export -i PICK_MODEL_FOLDER -e EXPORTED_MODEL_FOLDER -imgs INPUT_FOLDER [-f F ...]
[-chk NAME] [-n REPEATS] [-device cpu|cuda] [--max-cases N] [--json FILE]``."""

from __future__ import annotations

import argparse
import json
import sys

from nnunet_pick.console import print_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_benchmark_export",
        description="Inference time of a model exported with nnUNetv2_pick_export against its PICK model folder, "
                    "both run by nnU-Net's predictor on the same images (models alternating), and whether their "
                    "segmentations are voxel-identical. Exit status 1 if they are not.")
    parser.add_argument("-i", required=True, help="PICK model folder, e.g. .../nnUNetTrainerPICK__nnUNetPlans__2d")
    parser.add_argument("-e", required=True, help="exported model folder (nnUNetTrainer__PLANS__CONFIG)")
    parser.add_argument("-imgs", required=True, help="images as for nnUNetv2_predict -i")
    parser.add_argument("-f", nargs="+", default=["0"], help="folds (default: 0)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default checkpoint_final.pth)")
    parser.add_argument("-n", type=int, default=3, help="timed repeats over all cases, after one untimed (default 3)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    parser.add_argument("--max-cases", type=int, default=None, help="predict only the first N cases (default: all)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file (default: none)")
    args = parser.parse_args(argv)
    from nnunet_pick.benchmark.inference_benchmark import run_inference_benchmark

    folds = tuple(f if f == "all" else int(f) for f in args.f)
    try:
        result = run_inference_benchmark(args.i, args.e, args.imgs, folds, args.chk, repeats=args.n,
                                         device=args.device, max_cases=args.max_cases)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # RuntimeError: nnU-Net cannot find the trainer class
        print(f"nnUNetv2_pick_benchmark_export: error: {e}", file=sys.stderr)
        return 1
    print_text(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.as_json(), f, indent=2)
        print_text(f"written: {args.json}")
    if not result.identical:
        print("nnUNetv2_pick_benchmark_export: error: the exported model's segmentations differ from the PICK "
              "model's; export again with nnUNetv2_pick_export from this model folder", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
