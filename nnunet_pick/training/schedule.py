"""When unlabeled data starts to count, and how much: the schedule of PICK's unlabeled phase.

PICK's paper starts the unlabeled terms after a fixed labeled-only warm-up (this project: 25 % of the epochs) at full
weight. Two opt-in alternatives, for the failure measured on Hippocampus (issue "PICK that beats the labeled-only
nnU-Net"): at the end of a fixed warm-up no run predicted the posterior hippocampus at all, so the first pseudo-labels
and attentive masks were unusable.

- **Start on a validation criterion** (:func:`unlabeled_start_epoch`): the unlabeled phase begins after the first
  epoch (at or after a minimum) whose nnU-Net validation Dice exceeds a threshold for every foreground class
  (threshold 0: the primary decoder predicts every class somewhere correctly). The criterion reads nnU-Net's own
  logged ``dice_per_class_or_region``, which is checkpointed and identical on every DDP rank, so the start is
  recomputed rather than stored, and ``--c`` resumes in the right phase.
- **Ramp the unlabeled weight up** (:func:`sigmoid_rampup`): the sigmoid ramp of the semi-supervised literature
  (Laine & Aila 2017, Tarvainen & Valpola 2017), ``exp(-5 (1 - t / T)^2)`` for ``t < T`` epochs after the start, 1
  after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def unlabeled_start_epoch(dice_per_class: Sequence[Sequence[float]], *, min_epochs: int,
                          min_dice: float) -> int | None:
    """First epoch of the unlabeled phase under the validation criterion, or None while it is not met.

    Args:
        dice_per_class: per epoch, nnU-Net's validation Dice per foreground class (``dice_per_class_or_region``
            of ``nnUNetLogger``), epoch 0 first.
        min_epochs: labeled-only epochs at least (the phase never starts before this epoch).
        min_dice: every class's Dice must exceed this (0: the class is predicted, with some overlap).

    Returns:
        ``max(e + 1, min_epochs)`` for the first epoch ``e`` that meets the criterion; None if none did yet.
    """
    for epoch, dice in enumerate(dice_per_class):
        if len(dice) and all(not math.isnan(d) and d > min_dice for d in dice):
            return max(epoch + 1, min_epochs)
    return None


def sigmoid_rampup(epochs_since_start: float, rampup_epochs: int) -> float:
    """Weight in (0, 1] of the unlabeled terms ``epochs_since_start`` epochs into the unlabeled phase.

    ``exp(-5 (1 - t / T)^2)`` for ``0 <= t < T``, 1 for ``t >= T`` or ``T <= 0`` (no ramp); 0 before the start.
    At the start the weight is exp(-5) = 0.0067.
    """
    if rampup_epochs <= 0:
        return 1.0 if epochs_since_start >= 0 else 0.0
    if epochs_since_start < 0:
        return 0.0
    t = min(epochs_since_start, rampup_epochs) / rampup_epochs
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
