"""Experiment planners that size patch and batch for the PICK training step: ``nnUNetPlannerPICK`` and the residual
encoder counterparts ``nnUNetPlannerPICKResEncM`` / ``L`` / ``XL``.

nnU-Net's planners (``ExperimentPlanner.get_plans_for_configuration``) shrink the patch until a VRAM estimate fits a
reference scaled to the GPU memory target, then fill the rest with batch. The estimate
(``static_estimate_VRAM_usage``) is the number of feature-map elements of one forward pass of the U-Net for one
sample. PICK's step (``nnUNetTrainerPICK.train_step``) differs in three ways, and the PICK planners account for each:

1. It back-propagates branch by branch, so the activations of only one branch are alive at a time: encoder + primary
   decoder, encoder + MIM decoder (C outputs) or encoder + auxiliary decoder (K outputs). The per-sample estimate is
   nnU-Net's for the largest of these, i.e. nnU-Net's estimate with ``max(K, C)`` output channels.
2. Tensors live across branches: the labeled and unlabeled images, the reconstruction (C channels each), the mask,
   the pseudo-label and the auxiliary target (one channel each): ``(3 C + 3) * prod(patch)`` elements per sample are
   added.
3. Two more decoders' parameters, gradients and SGD momentum buffers (3 float32 values per parameter), a constant
   that does not scale with the batch: it is taken off the GPU memory target before nnU-Net's sizing runs (the
   configuration is planned once to know its decoder, then again with the reduced target).

The unlabeled batch equals the labeled one (``nnUNetTrainerPICK.unlabeled_batch_size``), and with branch-wise backward
it is not alive at the same time as the labeled activations, so it adds nothing beyond (2). The result: PICK plans
differ from nnU-Net's only where the extra memory does not fit, usually by a smaller batch.

Preprocessed data depends on spacing, normalisation and transposition, not on patch or batch: ``2d`` and
``3d_fullres`` use nnU-Net's default data (``nnUNetPlans_2d``, ``nnUNetPlans_3d_fullres``, as nnU-Net's own ResEnc
planners do), and ``3d_lowres`` reuses the nnU-Net counterpart's when its geometry matches
(:func:`reuse_matching_lowres_data`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncL,
    nnUNetPlannerResEncM,
    nnUNetPlannerResEncXL,
)
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

BYTES_PER_PARAMETER = 3 * 4  # float32 weight, gradient and SGD momentum buffer
GIGABYTE = 1e9
#: configuration keys that decide the preprocessed data (besides the plans-level transposition and intensities)
GEOMETRY_KEYS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                 "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs", "preprocessor_name")


class PICKPlannerMixin:
    """PICK's VRAM model on top of any nnU-Net planner (see the module docstring). Put it first in the bases."""

    #: the plans file of the nnU-Net planner this one extends (its data is reused)
    nnunet_plans_identifier = "nnUNetPlans"

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float | None = None,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str | None = None,
                 overwrite_target_spacing=None, suppress_transpose: bool = False):
        """nnU-Net's planner arguments; the defaults are the nnU-Net counterpart's GPU memory target (8, 8, 24 or
        40 GB, as its own ``__init__`` sets it) and plans named ``nnunet_plans_identifier + "PICK"``."""
        target = {} if gpu_memory_target_in_gb is None else {"gpu_memory_target_in_gb": gpu_memory_target_in_gb}
        super().__init__(dataset_name_or_id, preprocessor_name=preprocessor_name,
                         plans_name=plans_name or self.nnunet_plans_identifier + "PICK",
                         overwrite_target_spacing=overwrite_target_spacing, suppress_transpose=suppress_transpose,
                         **target)

    def static_estimate_VRAM_usage(  # noqa: N802 (nnU-Net's name)
            self, patch_size: tuple[int, ...], input_channels: int, output_channels: int, arch_class_name: str,
            arch_kwargs: dict, arch_kwargs_req_import: tuple[str, ...]):
        """Feature-map elements per sample of the PICK step's largest branch, plus the tensors kept across branches.

        Args:
            patch_size: (X, Y[, Z]) in voxels.
            input_channels: C.
            output_channels: K, segmentation outputs.
            arch_class_name, arch_kwargs, arch_kwargs_req_import: the plans' architecture (nnU-Net's arguments).

        Returns:
            An element count in the units of nnU-Net's ``static_estimate_VRAM_usage`` (which it calls).
        """
        largest_branch = super().static_estimate_VRAM_usage(patch_size, input_channels,
                                                            max(output_channels, input_channels), arch_class_name,
                                                            arch_kwargs, arch_kwargs_req_import)
        kept_across_branches = (3 * input_channels + 3) * int(np.prod(patch_size, dtype=np.int64))
        return largest_branch + kept_across_branches

    def extra_decoder_gigabytes(self, plan: dict) -> float:
        """GB of the MIM and auxiliary decoders' parameters, gradients and momentum for a configuration's plan."""
        arch = plan["architecture"]
        num_input_channels = len(self.dataset_json["channel_names"])
        net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     num_input_channels, len(self.dataset_json["labels"]), allow_init=False)
        decoder_parameters = sum(p.numel() for p in net.decoder.parameters())
        return 2 * decoder_parameters * BYTES_PER_PARAMETER / GIGABYTE

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        """nnU-Net's sizing with PICK's estimate, run a second time with the extra decoders' memory taken off the
        target.

        Raises:
            ValueError: if the extra decoders alone exceed the GPU memory target.
        """
        first = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                    approximate_n_voxels_dataset, _cache)
        target = self.UNet_vram_target_GB
        extra = self.extra_decoder_gigabytes(first)
        if extra >= target:
            raise ValueError(f"the two extra PICK decoders need {extra:.2f} GB of parameters and optimizer state, more "
                             f"than the GPU memory target of {target} GB; raise -gpu_memory_target")
        self.UNet_vram_target_GB = target - extra
        try:
            return super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                       approximate_n_voxels_dataset, _cache)
        finally:
            self.UNet_vram_target_GB = target

    def generate_data_identifier(self, configuration_name: str) -> str:
        """``nnUNetPlans_2d`` / ``nnUNetPlans_3d_fullres`` (nnU-Net's default data, which its ResEnc planners reuse
        too); other configurations get this plans' own identifier unless :func:`reuse_matching_lowres_data` applies."""
        if configuration_name in ("2d", "3d_fullres"):
            return f"nnUNetPlans_{configuration_name}"
        return f"{self.plans_identifier}_{configuration_name}"

    def plan_experiment(self):
        plans = super().plan_experiment()
        if reuse_matching_lowres_data(plans, self.dataset_name, self.nnunet_plans_identifier):
            self.save_plans(plans)
        return plans


def reuse_matching_lowres_data(plans: dict, dataset_name: str, nnunet_plans_identifier: str) -> bool:
    """Point ``3d_lowres`` at the nnU-Net plans' preprocessed data when its geometry is the same.

    Args:
        plans: PICK plans (modified in place).
        dataset_name: ``DatasetXXX_Name``.
        nnunet_plans_identifier: the nnU-Net plans to compare with (must exist in ``nnUNet_preprocessed``).

    Returns:
        True if ``plans`` was changed.
    """
    other_file = join(nnUNet_preprocessed, dataset_name, nnunet_plans_identifier + ".json")
    ours = plans["configurations"].get("3d_lowres")
    if ours is None or not isfile(other_file):
        return False
    other_plans = load_json(other_file)
    theirs = other_plans["configurations"].get("3d_lowres")
    if theirs is None or other_plans.get("transpose_forward") != plans.get("transpose_forward"):
        return False
    if any(_as_json(ours.get(k)) != _as_json(theirs.get(k)) for k in GEOMETRY_KEYS):
        return False
    ours["data_identifier"] = theirs["data_identifier"]
    return True


def _as_json(value: Any) -> Any:
    """Compare plan values the way they are stored (tuples and numpy types become lists and floats)."""
    tmp = {"v": value}
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    recursive_fix_for_json_export(tmp)
    return tmp["v"]


class nnUNetPlannerPICK(PICKPlannerMixin, ExperimentPlanner):  # noqa: N801 (nnU-Net naming)
    """nnU-Net's default planner (PlainConvUNet, 8 GB) sized for the PICK step; plans ``nnUNetPlansPICK``."""


class nnUNetPlannerPICKResEncM(PICKPlannerMixin, nnUNetPlannerResEncM):  # noqa: N801
    """nnU-Net's ResEnc M planner (8 GB) sized for the PICK step; plans ``nnUNetResEncUNetMPlansPICK``."""

    nnunet_plans_identifier = "nnUNetResEncUNetMPlans"


class nnUNetPlannerPICKResEncL(PICKPlannerMixin, nnUNetPlannerResEncL):  # noqa: N801
    """nnU-Net's ResEnc L planner (24 GB) sized for the PICK step; plans ``nnUNetResEncUNetLPlansPICK``."""

    nnunet_plans_identifier = "nnUNetResEncUNetLPlans"


class nnUNetPlannerPICKResEncXL(PICKPlannerMixin, nnUNetPlannerResEncXL):  # noqa: N801
    """nnU-Net's ResEnc XL planner (40 GB) sized for the PICK step; plans ``nnUNetResEncUNetXLPlansPICK``."""

    nnunet_plans_identifier = "nnUNetResEncUNetXLPlans"


PLANNERS: dict[str, type[ExperimentPlanner]] = {
    cls.__name__: cls
    for cls in (nnUNetPlannerPICK, nnUNetPlannerPICKResEncM, nnUNetPlannerPICKResEncL, nnUNetPlannerPICKResEncXL)
}
