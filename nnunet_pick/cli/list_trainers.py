"""``nnUNetv2_pick_list_trainers``: every PICK trainer nnU-Net can find, with what it changes."""

from __future__ import annotations

import argparse
import sys
import textwrap

from nnunet_pick.console import print_text

#: the longest line printed (a terminal of 120 columns shows each line unbroken)
LINE_WIDTH = 120


def trainer_lines(width: int = LINE_WIDTH) -> list[str]:
    """The listing: per trainer its name, then its settings and its description (``settings -- description``),
    wrapped to ``width`` characters in a column beside the name."""
    from nnunet_pick.training.variants import TRAINERS

    indent = max(len(n) for n in TRAINERS) + 2
    lines = []
    for name, cls in TRAINERS.items():
        settings = ", ".join(f"{k}={v}" for k, v in getattr(cls, "pick_settings", {}).items()) or "PICK defaults"
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        text = textwrap.wrap(f"{settings} -- {doc}", width - indent, break_on_hyphens=False)
        lines.append(f"{name:{indent}s}{text[0]}")
        lines.extend(" " * indent + t for t in text[1:])
    return lines


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="nnUNetv2_pick_list_trainers",
                            description="List the nnUNetTrainerPICK variants and their settings.").parse_args(argv)
    print("Trainers nnU-Net finds once nnunet-pick is installed (use with nnUNetv2_train -tr NAME), with their "
          "settings:")
    for line in trainer_lines():
        print_text(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
