"""The module ``nnUNetv2_pick_plan_experiment -pl NAME`` imports when it looks up a PICK planner by name.

nnU-Net 2.8 resolves ``nnUNetv2_plan_experiment -pl`` inside its own package only, so nnunet-pick's command searches
this folder, after the folders a user lists in ``nnUNet_extPlanner``, with nnU-Net's own class lookup
(``nnunet_pick._discovery.find_planner``). The classes and their VRAM model live in the library
(``nnunet_pick.planning``); this module only exposes them, every planner by its name.
"""

from nnunet_pick.planning import PLANNERS

globals().update(PLANNERS)
__all__ = sorted(PLANNERS)
