"""PICK's loss terms that nnU-Net does not have: the masked L1 reconstruction loss and the auxiliary decoder's input
and target. The segmentation losses themselves are nnU-Net's (``DC_and_CE_loss`` / ``DC_and_BCE_loss``, built by
``nnUNetTrainer._build_loss``).
"""

from __future__ import annotations

import torch


def masked_l1_loss(reconstruction: torch.Tensor, image: torch.Tensor, masked: torch.Tensor,
                   masked_voxels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute reconstruction error over the masked voxels (PICK Eq. 8).

    ``L_mim = Σ |x_mim − x| ⊙ M / (C · Σ M)``, computed in float32 whatever the input dtype (autocast is disabled
    inside). When nothing is masked (``Σ M = 0``) the numerator is exactly 0 and the denominator is clamped to 1, so
    the loss is exactly 0 and every gradient is exactly 0: no NaN, no data-dependent branch.

    Args:
        reconstruction: MIM decoder output, (B, C, X, Y[, Z]), any float dtype.
        image: the unmasked image the MIM decoder reconstructs, (B, C, X, Y[, Z]).
        masked: bool (B, 1, X, Y[, Z]), True where hidden (see :mod:`nnunet_pick.masking`).
        masked_voxels: ``Σ M`` the mean is taken over, a scalar tensor; default this batch's. Under DDP the trainer
            passes the count over all ranks' batches, so that the ranks' losses add up to the loss of the whole
            batch (a per-rank mean would weight ranks with few masked voxels up).

    Returns:
        Scalar float32 tensor, in the images' intensity units (nnU-Net-normalised).

    Raises:
        ValueError: if the shapes do not match.
    """
    if reconstruction.shape != image.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and image {tuple(image.shape)} differ in shape")
    if masked.shape[0] != image.shape[0] or masked.shape[1] != 1 or masked.shape[2:] != image.shape[2:]:
        raise ValueError(f"masked must be (B, 1, *spatial) = ({image.shape[0]}, 1, *{tuple(image.shape[2:])}), "
                         f"got {tuple(masked.shape)}")
    with torch.autocast(device_type=image.device.type, enabled=False):
        weight = masked.to(torch.float32)
        error = (reconstruction.float() - image.float()).abs() * weight
        count = weight.sum() if masked_voxels is None else masked_voxels.to(torch.float32)
        denominator = (count * image.shape[1]).clamp_min(1.0)
        return error.sum() / denominator


def paste_reconstruction(image: torch.Tensor, reconstruction: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The auxiliary decoder's input: the reconstruction pasted into the unmasked context.

    ``x_rec = x ⊙ (1 − M) + stopgrad(x_mim) ⊙ M`` (the method spec's decision for PICK Eq. 4, as in the authors'
    code). The reconstruction is detached, so the auxiliary loss never trains the MIM decoder.

    Args:
        image: (B, C, X, Y[, Z]) float.
        reconstruction: MIM decoder output, same shape.
        masked: bool (B, 1, X, Y[, Z]).

    Returns:
        Tensor like ``image`` (no gradient path to ``reconstruction``).
    """
    return torch.where(masked, reconstruction.detach().to(image.dtype), image)


def auxiliary_target(pseudo: torch.Tensor, *, has_regions: bool, has_ignore_label: bool,
                     kept: torch.Tensor | None = None, ignore_value: int | None = None) -> torch.Tensor:
    """Format a pseudo-label as the target nnU-Net's segmentation loss expects (for ``L_aux``, PICK Eq. 9).

    Args:
        pseudo: from :func:`nnunet_pick.masking.pseudo_label`: int64 (B, 1, ...) labels, or bool (B, R, ...) regions.
        has_regions: region-based training (``DC_and_BCE_loss``).
        has_ignore_label: the loss expects an ignore label. For regions nnU-Net's loss then expects one extra last
            channel that marks ignored voxels (1 = ignored).
        kept: optional bool (B, 1, ...), False where the pseudo-label is not a target (low confidence,
            :func:`nnunet_pick.masking.confident_voxels`); None keeps every voxel (PICK).
        ignore_value: the label value nnU-Net's ``DC_and_CE_loss`` ignores (its ``ignore_label``); required for
            labels when ``kept`` is given.

    Returns:
        Labels: the int64 (B, 1, ...) map, ``ignore_value`` where not kept. Regions: float32 one-hot (B, R[+1], ...),
        the extra channel 1 where not kept.

    Raises:
        ValueError: if ``kept`` is given without an ignore label to mark it (regions without ``has_ignore_label``,
            labels without ``ignore_value``).
    """
    if not has_regions:
        if kept is None:
            return pseudo
        if ignore_value is None:
            raise ValueError("auxiliary_target: kept needs the ignore_value of the loss")
        return torch.where(kept, pseudo, torch.full_like(pseudo, ignore_value))
    target = pseudo.to(torch.float32)
    if kept is not None and not has_ignore_label:
        raise ValueError("auxiliary_target: kept needs a region loss with an ignore channel (has_ignore_label)")
    if has_ignore_label:
        ignored = torch.zeros_like(target[:, :1]) if kept is None else (~kept).to(torch.float32)
        target = torch.cat((target, ignored), 1)
    return target
