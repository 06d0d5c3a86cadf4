"""How unsure a trained PICK model is about a case: the scores ``nnUNetv2_pick_suggest`` ranks the unlabeled pool by.

All scores are computed on the network's logits in the preprocessed (network) geometry, one case at a time:

- **disagreement** (per class and its mean over classes): ``1 - Dice`` between the primary decoder's and the
  auxiliary decoder's hard segmentations. The auxiliary decoder was trained (PICK Eqs. 9-11) to segment the image
  whose predicted foreground was hidden and re-drawn by the MIM decoder, against the primary decoder's labels; where
  the two disagree, the anatomy the encoder learned does not support the primary prediction. ``1 - Dice`` is
  normalised by the structure's size, so a large organ is not ranked first for its size alone, and it is on the scale
  of the error it predicts (``1 - Dice`` against the truth).
- **entropy**: the primary decoder's predictive entropy summed over all voxels, divided by the number of voxels the
  primary decoder calls foreground (at least 1): the uncertain boundary per unit of predicted structure. Voxel
  entropies are normalised to [0, 1] (``/ log(heads)`` for softmax labels; binary entropy ``/ log 2`` averaged over
  regions for sigmoid regions).
- **fold disagreement** (several folds only): mean over pairs of folds of the mean per-class ``1 - Dice`` between
  their primary segmentations.

A class that is empty in both segmentations compared scores 0 (they agree). The combined score that orders the list
is :func:`combined_scores`: the mean percentile rank of the available scores over the pool.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata


def class_masks(logits: torch.Tensor, *, has_regions: bool) -> torch.Tensor:
    """Hard per-class foreground masks from one case's logits.

    Args:
        logits: (heads, X, Y[, Z]) float, one case (no batch dimension).
        has_regions: sigmoid region heads (True) or softmax label heads (False).

    Returns:
        bool (n_classes, X, Y[, Z]): for labels ``argmax == c`` for c = 1 .. heads - 1 (background dropped); for
        regions ``logit > 0`` (probability > 0.5) for every region head.
    """
    if has_regions:
        return logits > 0
    seg = logits.argmax(0)
    return torch.stack([seg == c for c in range(1, logits.shape[0])])


def dice_disagreement(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-class ``1 - Dice`` between two sets of masks.

    Args:
        a, b: bool (n_classes, X, Y[, Z]), e.g. from :func:`class_masks`.

    Returns:
        float64 (n_classes,), each in [0, 1]; 0 where a class is empty in both.

    Raises:
        ValueError: if the shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"masks of shape {tuple(a.shape)} and {tuple(b.shape)} cannot be compared")
    a, b = a.flatten(1), b.flatten(1)
    overlap = (a & b).sum(1).double()
    total = a.sum(1).double() + b.sum(1).double()
    dice = torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))
    return (1 - dice).numpy()


def normalised_entropy(logits: torch.Tensor, *, has_regions: bool) -> torch.Tensor:
    """Voxel-wise predictive entropy in [0, 1] of one case's logits.

    Args:
        logits: (heads, X, Y[, Z]) float.
        has_regions: as for :func:`class_masks`.

    Returns:
        float32 (X, Y[, Z]): softmax entropy ``/ log(heads)`` for labels; for regions the binary entropy of each
        sigmoid ``/ log 2``, averaged over regions.
    """
    logits = logits.float()
    if has_regions:
        p = torch.sigmoid(logits)
        h = -(p * torch.nn.functional.logsigmoid(logits) + (1 - p) * torch.nn.functional.logsigmoid(-logits))
        return h.mean(0) / math.log(2)
    log_p = torch.log_softmax(logits, 0)
    return -(log_p.exp() * log_p).sum(0) / math.log(logits.shape[0])


def case_scores(primary_logits: Sequence[torch.Tensor], aux_logits: Sequence[torch.Tensor], *,
                has_regions: bool) -> dict:
    """All scores of one case from the per-fold logits of both decoders.

    The folds' logits are averaged per decoder first, as nnU-Net's predictor averages folds; the disagreement and
    the entropy are taken on these ensembles, the fold disagreement between the folds' own primary segmentations.

    Args:
        primary_logits: one (heads, X, Y[, Z]) tensor per fold, primary decoder.
        aux_logits: one tensor per fold, auxiliary decoder (same shapes).
        has_regions: sigmoid region heads or softmax label heads.

    Returns:
        ``{"disagreement": float, "disagreement_per_class": ndarray (n_classes,), "entropy": float,
        "fold_disagreement": float (NaN with one fold), "foreground_voxels": int}`` (voxels of the network
        geometry).

    Raises:
        ValueError: if no fold is given or the numbers of folds differ.
    """
    if not primary_logits or len(primary_logits) != len(aux_logits):
        raise ValueError(f"need the same positive number of folds for both decoders, got {len(primary_logits)} "
                         f"primary and {len(aux_logits)} auxiliary")
    primary = torch.stack([p.float() for p in primary_logits]).mean(0)
    aux = torch.stack([a.float() for a in aux_logits]).mean(0)
    primary_masks = class_masks(primary, has_regions=has_regions)
    per_class = dice_disagreement(primary_masks, class_masks(aux, has_regions=has_regions))
    foreground = int(primary_masks.any(0).sum())
    entropy = float(normalised_entropy(primary, has_regions=has_regions).double().sum()) / max(1, foreground)
    if len(primary_logits) > 1:
        fold_masks = [class_masks(p.float(), has_regions=has_regions) for p in primary_logits]
        fold = float(np.mean([dice_disagreement(a, b).mean() for a, b in itertools.combinations(fold_masks, 2)]))
    else:
        fold = math.nan
    return {"disagreement": float(per_class.mean()), "disagreement_per_class": per_class, "entropy": entropy,
            "fold_disagreement": fold, "foreground_voxels": foreground}


def combined_scores(scores: dict[str, Sequence[float]]) -> np.ndarray:
    """The score that orders the suggestion list: the mean percentile rank of each available score over the pool.

    Why ranks: the scores have different units (a ``1 - Dice`` fraction, an entropy per foreground voxel) and
    different spreads; percentile ranks put them on one scale without weights that would have to be tuned per
    dataset, and a score that is large for one odd case cannot dominate the sum. Each score catches another failure:
    the decoders' disagreement a prediction the learned anatomy does not support, the entropy an unsure boundary, the
    fold disagreement a prediction that depends on the training split.

    Args:
        scores: score name -> one value per case (same length for all). A score that is NaN for every case (fold
            disagreement with one fold) is left out; a NaN of a single case ranks lowest for that score.

    Returns:
        float64 (n_cases,) in (0, 1]: ``mean_s rank_s / n`` with SciPy's average ranks for ties (1 = lowest score).

    Raises:
        ValueError: for lengths that differ or when no score has a value.
    """
    lengths = {len(v) for v in scores.values()}
    if len(lengths) != 1:
        raise ValueError(f"every score needs one value per case; got lengths {sorted(lengths)}")
    n = lengths.pop()
    used = [np.asarray(v, dtype=float) for v in scores.values() if not np.all(np.isnan(np.asarray(v, dtype=float)))]
    if not used:
        raise ValueError("no score has a value")
    ranks = [rankdata(np.nan_to_num(v, nan=-np.inf), method="average") / n for v in used]
    return np.mean(ranks, axis=0)
