"""The module nnU-Net imports when it looks up a PICK trainer by name (``-tr nnUNetTrainerPICK...``).

nnU-Net searches the folders of ``nnUNet_extTrainer`` for a module with an attribute of the requested name;
nnunet-pick adds this folder to that variable (``nnunet_pick._discovery``). The classes live in the library
(``nnunet_pick.training``) so they stay importable and picklable after nnU-Net's lookup drops the modules it
imported from here; this module only exposes them, every variant by its name.
"""

from nnunet_pick.training.variants import TRAINERS

globals().update(TRAINERS)
__all__ = sorted(TRAINERS)
