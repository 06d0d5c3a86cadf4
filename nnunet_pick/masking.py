"""Pseudo-labels and the masks PICK hides from the encoder.

One convention throughout: a bool tensor named ``masked`` of shape (B, 1, X, Y[, Z]), True where the voxel is hidden
from the encoder (and where the MIM loss is computed). It broadcasts over the C image channels.

Sources: PICK Eq. 5 (pseudo-label), Eq. 6 (masked image) and Sec. 3.4 (attentive masking: mask the predicted
foreground). The other strategies of the paper's Table 7 (random v1 / v2, background) are selected by name through
:func:`compute_mask`.
"""

from __future__ import annotations

import math

import torch

MASKING_STRATEGIES: tuple[str, ...] = ("attentive", "background", "random_blocks", "random_single_block")
#: PICK Table 7: random masking hides 60 % of the patch
RANDOM_MASK_RATIO = 0.6
#: PICK Table 7, random v1: blocks of 16 voxels per axis (16x16x16 in 3D, 16x16 in 2D)
RANDOM_MASK_BLOCK = 16


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


def confident_voxels(logits: torch.Tensor, threshold: float, *, has_regions: bool) -> torch.Tensor:
    """Voxels whose pseudo-label (:func:`pseudo_label`) the primary decoder is confident of.

    Beyond the paper (opt-in, ``nnUNetTrainerPICK.unlabeled_confidence_threshold``): the confidence threshold of
    FixMatch (Sohn et al. 2020) and UniMatch (Yang et al. 2023, 0.95 for segmentation), applied to the auxiliary
    decoder's unlabeled target. Motivation measured on Hippocampus: the unlabeled auxiliary loss's gradient on the
    encoder is large and uncorrelated with the supervised one, and the first pseudo-labels are wrong where the
    network is unsure.

    Args:
        logits: primary-decoder logits, (B, heads, X, Y[, Z]), any float dtype.
        threshold: probability in [0, 1]; 0 keeps every voxel.
        has_regions: True for region-based (sigmoid) heads: a voxel is confident when every region's probability
            is at least ``threshold`` or at most ``1 - threshold``. False (softmax): when the largest class
            probability is at least ``threshold``.

    Returns:
        bool (B, 1, X, Y[, Z]), True where the pseudo-label is kept.

    Raises:
        ValueError: if ``threshold`` is outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"the confidence threshold is a probability in [0, 1], got {threshold}")
    with torch.no_grad():
        logits = logits.detach().float()
        if has_regions:
            probability = torch.sigmoid(logits)
            return (torch.maximum(probability, 1 - probability) >= threshold).all(1, keepdim=True)
        return torch.softmax(logits, 1).amax(1, keepdim=True) >= threshold


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


def random_block_mask(batch: int, spatial: tuple[int, ...], *, block: int = RANDOM_MASK_BLOCK,
                      ratio: float = RANDOM_MASK_RATIO, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """PICK Table 7 "random v1": the patch is tiled into ``block``-voxel cubes (squares in 2D) and a random
    ``round(ratio * n_blocks)`` of them are masked, independently per sample. Edge tiles are cut at the border.

    Args:
        batch: B.
        spatial: (X, Y[, Z]) in voxels.
        block: tile edge in voxels.
        ratio: fraction of tiles masked.
        device: where the mask is made.
        generator: random source (``None``: torch's global one).

    Returns:
        ``masked``, bool (B, 1, X, Y[, Z]).
    """
    grid = [math.ceil(s / block) for s in spatial]
    n_tiles = math.prod(grid)
    n_masked = round(ratio * n_tiles)
    scores = torch.rand(batch, n_tiles, generator=generator, device=device if generator is None else generator.device)
    chosen = scores.argsort(1)[:, :n_masked]
    tiles = torch.zeros(batch, n_tiles, dtype=torch.bool, device=chosen.device)
    tiles.scatter_(1, chosen, True)
    tiles = tiles.view(batch, 1, *grid)
    for axis in range(len(spatial)):
        tiles = tiles.repeat_interleave(block, dim=axis + 2)
    return tiles[(slice(None), slice(None), *[slice(0, s) for s in spatial])].to(device)


def random_single_block_mask(batch: int, spatial: tuple[int, ...], *, ratio: float = RANDOM_MASK_RATIO,
                             device: torch.device | str = "cpu",
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """PICK Table 7 "random v2": one axis-aligned box covering ``ratio`` of the patch, at a random position per sample.

    Each edge is ``round(size * ratio ** (1 / ndim))`` voxels, so the box's volume is ``ratio`` of the patch (up to
    rounding).

    Args / Returns: as :func:`random_block_mask`.
    """
    edges = [max(1, round(s * ratio ** (1 / len(spatial)))) for s in spatial]
    masked = torch.zeros(batch, 1, *spatial, dtype=torch.bool)
    for b in range(batch):
        box = []
        for size, edge in zip(spatial, edges, strict=True):
            start = int(torch.randint(0, size - edge + 1, (1,), generator=generator))
            box.append(slice(start, start + edge))
        masked[(b, 0, *box)] = True
    return masked.to(device)


def compute_mask(strategy: str, pseudo: torch.Tensor, *, has_regions: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Dispatch to a masking strategy by name (the trainer's ``masking`` attribute).

    Args:
        strategy: one of :data:`MASKING_STRATEGIES`: ``attentive`` (PICK: hide the predicted foreground),
            ``background`` (hide the predicted background, ``1 - M``), ``random_blocks`` (random v1),
            ``random_single_block`` (random v2).
        pseudo: output of :func:`pseudo_label` (random strategies use only its shape and device).
        has_regions: label or region heads.
        generator: random source for the random strategies.

    Returns:
        ``masked``, bool (B, 1, X, Y[, Z]).

    Raises:
        ValueError: for an unknown strategy.
    """
    if strategy == "attentive":
        return attentive_mask(pseudo, has_regions=has_regions)
    if strategy == "background":
        return ~attentive_mask(pseudo, has_regions=has_regions)
    spatial = tuple(pseudo.shape[2:])
    if strategy == "random_blocks":
        return random_block_mask(pseudo.shape[0], spatial, device=pseudo.device, generator=generator)
    if strategy == "random_single_block":
        return random_single_block_mask(pseudo.shape[0], spatial, device=pseudo.device, generator=generator)
    raise ValueError(f"Unknown masking strategy {strategy!r}; expected one of {MASKING_STRATEGIES}.")


def with_startup_blocks(masked: torch.Tensor, min_fraction: float, *,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Start-up masking: samples whose mask hides less than ``min_fraction`` of their voxels get random 16-voxel
    blocks (:func:`random_block_mask`, 60 %) instead.

    Early in training the primary decoder predicts little or no foreground, so attentive masks are empty and the
    MIM decoder learns nothing (measured: empty labeled masks for the first epochs on Hippocampus). The authors'
    released code masks random blocks for its first 1 000 iterations for the same reason; here the switch is per
    sample, with no time limit: a sample gets blocks whenever its predicted foreground is under ``min_fraction``.
    Measured on the CPU accuracy protocol (``benchmarks/hippocampus-cpu-masking-lambda/NOTES.md``, 0.01): that is
    not only a start-up phase. Many Hippocampus 2D patches hold under 1 % of predicted foreground at every stage, so
    the masked fraction stayed at 0.12-0.22 (labeled) and 0.22-0.29 (unlabeled) to the end of training, against
    0.03-0.06 with attentive masks alone.

    Args:
        masked: bool (B, 1, X, Y[, Z]) from :func:`compute_mask`.
        min_fraction: fraction of a sample's voxels below which its mask is replaced; 0 disables.
        generator: random source of the blocks.

    Returns:
        bool (B, 1, X, Y[, Z]), ``masked`` where it is large enough.
    """
    if min_fraction <= 0:
        return masked
    small = masked.flatten(1).float().mean(1) < min_fraction
    if not bool(small.any()):
        return masked
    blocks = random_block_mask(masked.shape[0], tuple(masked.shape[2:]), device=masked.device, generator=generator)
    return torch.where(small.view(-1, *([1] * (masked.ndim - 1))), blocks, masked)


def apply_mask(x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Masked image ``x ⊙ (1 − M)`` (PICK Eq. 6): hidden voxels become 0 in every channel.

    Args:
        x: images, float (B, C, X, Y[, Z]).
        masked: bool (B, 1, X, Y[, Z]).

    Returns:
        Tensor like ``x``.
    """
    return x.masked_fill(masked, 0)
