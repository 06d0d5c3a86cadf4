"""``python -m nnunet_pick.benchmark.seeded_train SEED [--settings JSON] <nnUNetv2_train arguments>``: nnU-Net's own
training entry point (``nnunetv2.run.run_training.run_training_entry``) after seeding Python's ``random``, NumPy and
torch, optionally with trainer attributes set after nnU-Net has built the trainer.

nnU-Net has no seed option. Its data-augmentation workers are forked from this process (Linux), so they start from
these seeded states too; nnU-Net's non-deterministic worker interleaving and multithreaded kernels still make two
runs with one seed differ slightly, which is why benchmarks repeat runs with different seeds.

``--settings '{"num_epochs": 40, ...}'`` puts one schedule on every arm of a benchmark whatever its trainer class
(stock ``nnUNetTrainer``, ``nnUNetTrainerPICK`` or any variant named on a command line): nnU-Net's
``get_trainer_from_args`` builds the trainer as usual, then each attribute is set before training, continuing
(``--c``) or validating (``--val``) starts. nnU-Net reads these attributes only after construction
(``num_epochs`` in ``configure_optimizers``, the iteration counts in ``run_training``), so the effect equals a
subclass that sets them in ``__init__``. The settings are written to the training log.
"""

from __future__ import annotations

import json
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


def apply_trainer_settings(settings: dict) -> None:
    """Make nnU-Net's ``get_trainer_from_args`` (as ``run_training`` calls it) set ``settings`` on the new trainer.

    Raises:
        AttributeError: (when the trainer is built) if the trainer has no attribute of that name, so a misspelt
            setting fails instead of being ignored.
    """
    import nnunetv2.run.run_training as run_training

    build = run_training.get_trainer_from_args

    def get_trainer_with_settings(*args, **kwargs):
        trainer = build(*args, **kwargs)
        for name, value in settings.items():
            if not hasattr(trainer, name):
                raise AttributeError(f"{type(trainer).__name__} has no attribute {name!r} (benchmark setting)")
            setattr(trainer, name, value)
        trainer.print_to_log_file(f"nnunet-pick benchmark settings applied after construction: {settings}")
        return trainer

    run_training.get_trainer_from_args = get_trainer_with_settings


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].lstrip("-").isdigit():
        raise SystemExit("usage: python -m nnunet_pick.benchmark.seeded_train SEED [--settings JSON] DATASET "
                         "CONFIGURATION FOLD [...]")
    seed, rest = int(argv[0]), argv[1:]
    if rest[:1] == ["--settings"]:
        apply_trainer_settings(json.loads(rest[1]))
        rest = rest[2:]
    seed_everything(seed)
    from nnunetv2.run.run_training import run_training_entry

    sys.argv = ["nnUNetv2_train", *rest]
    run_training_entry()


if __name__ == "__main__":
    main()
