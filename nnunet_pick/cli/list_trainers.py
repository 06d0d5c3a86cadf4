"""``nnUNetv2_pick_list_trainers``: every PICK trainer nnU-Net can find, with what it changes."""

from __future__ import annotations

import argparse
import sys

from nnunet_pick.console import print_text


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="nnUNetv2_pick_list_trainers",
                            description="List the nnUNetTrainerPICK variants and their settings.").parse_args(argv)
    from nnunet_pick.training.variants import TRAINERS

    width = max(len(n) for n in TRAINERS)
    print("Trainers nnU-Net finds once nnunet-pick is installed (use with nnUNetv2_train -tr NAME):")
    for name, cls in TRAINERS.items():
        settings = ", ".join(f"{k}={v}" for k, v in getattr(cls, "pick_settings", {}).items()) or "PICK defaults"
        print_text(f"{name:{width}s}  {settings:60s}  {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
