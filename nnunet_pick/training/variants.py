"""Every ``nnUNetTrainerPICK`` variant, declared once per family (nnU-Net's ``nnUNetTrainer_Xepochs`` style).

A variant is ``nnUNetTrainerPICK`` with a few attributes changed after ``__init__``; :func:`declare_variant` builds
the class (nnU-Net re-creates trainers by name with its fixed 5-argument constructor, so the attributes cannot be
constructor arguments). :data:`TRAINERS` maps every trainer name to its class; nnU-Net finds them through the
``trainers/`` module that :mod:`nnunet_pick._discovery` registers.
"""

from __future__ import annotations

import sys

import torch

from nnunet_pick.training.trainer import nnUNetTrainerPICK

TRAINERS: dict[str, type[nnUNetTrainerPICK]] = {"nnUNetTrainerPICK": nnUNetTrainerPICK}


def declare_variant(name: str, doc: str, base: type[nnUNetTrainerPICK] = nnUNetTrainerPICK,
                    **settings) -> type[nnUNetTrainerPICK]:
    """Create and register ``name``: ``base`` with ``settings`` assigned after ``base.__init__``.

    Args:
        name: class name (nnU-Net style, no ``__``).
        doc: one-line docstring of the class.
        base: the trainer to derive from.
        **settings: attribute -> value (``num_epochs=5``, ``lambda_mim=0.2``, ...).

    Returns:
        The new class, also available as ``nnunet_pick.training.variants.<name>`` and in :data:`TRAINERS`.

    Raises:
        ValueError: if the name is taken or contains ``__``.
    """
    if name in TRAINERS or "__" in name:
        raise ValueError(f"Invalid or duplicate trainer name {name!r}")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,  # noqa: N807
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        for attribute, value in settings.items():
            setattr(self, attribute, value)

    cls = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__,
                               "__qualname__": name, "pick_settings": dict(settings)})
    TRAINERS[name] = cls
    setattr(sys.modules[__name__], name, cls)
    return cls


def lambda_suffix(value: float) -> str:
    """0.2 -> ``'0p2'``, 1.0 -> ``'1p0'`` (nnU-Net writes decimals with ``p``)."""
    return f"{value:.1f}".replace(".", "p")


# training length, as nnU-Net's nnUNetTrainer_Xepochs
for _epochs in (1, 5, 10, 20, 50, 100, 250, 500):
    declare_variant(f"nnUNetTrainerPICK_{_epochs}epoch{'s' if _epochs > 1 else ''}",
                    f"nnUNetTrainerPICK with num_epochs={_epochs} (warm-up 25 % of it).", num_epochs=_epochs)

# the paper's best lambda_mim values other than the default 1.0 (PICK Sec. 5.1, Fig. 4)
for _lam in (0.2, 1.2):
    declare_variant(f"nnUNetTrainerPICK_lambda{lambda_suffix(_lam)}",
                    f"nnUNetTrainerPICK with lambda_mim={_lam}.", lambda_mim=_lam)

# the embedded demo's CPU schedule (nnUNetv2_pick_demo, see nnunet_pick.demo for why the warm-up is 60 %)
declare_variant("nnUNetTrainerPICK_demo", "nnUNetTrainerPICK on the demo's short CPU schedule.",
                num_epochs=18, num_iterations_per_epoch=25, num_val_iterations_per_epoch=5, num_warmup_epochs=12,
                mim_figure_every=5)
