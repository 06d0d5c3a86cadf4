"""``python -m nnunet_pick.benchmark.seeded_train SEED <nnUNetv2_train arguments>``: nnU-Net's own training entry
point (``nnunetv2.run.run_training.run_training_entry``) after seeding Python's ``random``, NumPy and torch.

nnU-Net has no seed option. Its data-augmentation workers are forked from this process (Linux), so they start from
these seeded states too; nnU-Net's non-deterministic worker interleaving and multithreaded kernels still make two
runs with one seed differ slightly, which is why benchmarks repeat runs with different seeds.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].lstrip("-").isdigit():
        raise SystemExit("usage: python -m nnunet_pick.benchmark.seeded_train SEED DATASET CONFIGURATION FOLD [...]")
    seed_everything(int(argv[0]))
    from nnunetv2.run.run_training import run_training_entry

    sys.argv = ["nnUNetv2_train", *argv[1:]]
    run_training_entry()


if __name__ == "__main__":
    main()
