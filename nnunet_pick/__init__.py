"""nnunet-pick: PICK ("Predict and Mask") semi-supervised segmentation for nnU-Net v2.

``from nnunet_pick import nnUNetTrainerPICK`` (or any variant name) works for subclassing. Attributes are resolved
lazily (PEP 562) because this package is imported at interpreter start-up by ``nnunet_pick.pth`` to register the
trainers with nnU-Net (see :mod:`nnunet_pick._discovery`); importing torch there would slow every Python start.
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    if name.startswith("nnUNetTrainer"):
        from nnunet_pick.training.variants import TRAINERS

        if name in TRAINERS:
            return TRAINERS[name]
    if name == "PICKNetwork":
        from nnunet_pick.network import PICKNetwork

        return PICKNetwork
    raise AttributeError(f"module 'nnunet_pick' has no attribute {name!r}")
