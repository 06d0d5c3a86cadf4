"""The one transform unlabeled patches need before nnU-Net's training pipeline."""

from __future__ import annotations

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform


class OutsideMaskFromZeroImageTransform(BasicTransform):
    """Recreate nnU-Net's "outside the non-zero mask" marker (segmentation -1) from the image alone.

    nnU-Net marks voxels outside the crop-to-non-zero mask with -1 in the segmentation file; for configurations with
    ``use_mask_for_norm`` its ``MaskImageTransform`` uses the marker to zero them again after augmentation. Unlabeled
    patches carry no segmentation, but with ``use_mask_for_norm`` nnU-Net's normalisation has already set exactly
    those voxels to 0 in every masked channel, so the marker is recovered as "0 in all masked channels".

    Args:
        channels: the channels normalised within the mask (``use_mask_for_norm[c]`` true).

    Input / output: ``image`` float (C, X, Y[, Z]); ``segmentation`` int (1, X, Y[, Z]) with -1 written where every
    listed channel is exactly 0.
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        if not channels:
            raise ValueError("OutsideMaskFromZeroImageTransform needs at least one channel.")
        self.channels = list(channels)

    def apply(self, data_dict: dict, **params) -> dict:
        outside = (data_dict["image"][self.channels] == 0).all(0, keepdim=True)
        data_dict["segmentation"] = torch.where(outside, torch.full_like(data_dict["segmentation"], -1),
                                                data_dict["segmentation"])
        return data_dict
