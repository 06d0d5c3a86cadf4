"""Pseudo-labels and the masks PICK hides from the encoder.

One convention throughout: a bool tensor named ``masked`` of shape (B, 1, X, Y[, Z]), True where the voxel is hidden
from the encoder (and where the MIM loss is computed). It broadcasts over the C image channels.

Sources: PICK Eq. 5 (pseudo-label), Eq. 6 (masked image) and Sec. 3.4 (attentive masking: mask the predicted
foreground). The other strategies of the paper's Table 7 are selected by name through :func:`compute_mask`.
"""

from __future__ import annotations

import torch

MASKING_STRATEGIES: tuple[str, ...] = ("attentive",)


def pseudo_label(logits: torch.Tensor, *, has_regions: bool) -> torch.Tensor:
    """Hard pseudo-label from segmentation logits (PICK Eq. 5), without gradient.

    Args:
        logits: primary-decoder logits, (B, heads, X, Y[, Z]), any float dtype.
        has_regions: True for region-based (sigmoid) heads, False for softmax label heads.

    Returns:
        Label maps: for labels, int64 (B, 1, X, Y[, Z]) with values in [0, heads), the argmax of the softmax
        (identical to the argmax of the logits); for regions, bool (B, heads, X, Y[, Z]), True where the region's
        probability exceeds 0.5 (logit > 0). The ignore label never appears: it has no output head.
    """
    with torch.no_grad():
        if has_regions:
            return logits.detach() > 0
        return logits.detach().argmax(1, keepdim=True)


def attentive_mask(pseudo: torch.Tensor, *, has_regions: bool) -> torch.Tensor:
    """PICK's attentive mask: hide the voxels predicted as foreground (Sec. 3.4, ``M = (ŷ != background)``).

    Args:
        pseudo: output of :func:`pseudo_label`.
        has_regions: as for :func:`pseudo_label`; with regions a voxel is masked when any region is on.

    Returns:
        ``masked``, bool (B, 1, X, Y[, Z]).
    """
    if has_regions:
        return pseudo.any(1, keepdim=True)
    return pseudo != 0


def compute_mask(strategy: str, pseudo: torch.Tensor, *, has_regions: bool) -> torch.Tensor:
    """Dispatch to a masking strategy by name (the trainer's ``masking`` attribute).

    Args:
        strategy: one of :data:`MASKING_STRATEGIES`.
        pseudo: output of :func:`pseudo_label`.
        has_regions: label or region heads.

    Returns:
        ``masked``, bool (B, 1, X, Y[, Z]).

    Raises:
        ValueError: for an unknown strategy.
    """
    if strategy == "attentive":
        return attentive_mask(pseudo, has_regions=has_regions)
    raise ValueError(f"Unknown masking strategy {strategy!r}; expected one of {MASKING_STRATEGIES}.")


def apply_mask(x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Masked image ``x ⊙ (1 − M)`` (PICK Eq. 6): hidden voxels become 0 in every channel.

    Args:
        x: images, float (B, C, X, Y[, Z]).
        masked: bool (B, 1, X, Y[, Z]).

    Returns:
        Tensor like ``x``.
    """
    return x.masked_fill(masked, 0)
