"""``nnUNetv2_pick_export -i TRAINED_MODEL_FOLDER -o OUTPUT_FOLDER [-chk NAME ...]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_pick_export",
        description="Write a standard nnU-Net model folder (nnUNetTrainer__PLANS__CONFIG, encoder + primary decoder "
                    "only) from a PICK model folder, for nnUNetv2_predict_from_modelfolder where nnunet-pick is not "
                    "installed.")
    parser.add_argument("-i", required=True,
                        help="trained model folder, e.g. .../nnUNetTrainerPICK__nnUNetPlans__3d_fullres")
    parser.add_argument("-o", required=True, help="output folder; the model folder is created inside")
    parser.add_argument("-chk", nargs="+", default=["checkpoint_final.pth"],
                        help="checkpoints to export (default: checkpoint_final.pth)")
    args = parser.parse_args(argv)
    from nnunet_pick.export import export_plain_nnunet

    try:
        out = export_plain_nnunet(args.i, args.o, tuple(args.chk))
    except (FileNotFoundError, ValueError) as e:
        print(f"nnUNetv2_pick_export: error: {e}", file=sys.stderr)
        return 1
    print(f"exported: {out}\npredict with: nnUNetv2_predict_from_modelfolder -i INPUT -o OUTPUT -m {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
