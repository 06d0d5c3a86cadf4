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
- **Restart the optimizer at the start** (:func:`two_stage_poly_lr`): the authors' released code pre-trains on
  labeled data as a separate stage and starts the semi-supervised stage with a fresh optimizer. In one nnU-Net run:
  the warm-up's poly learning rate decays to 0 over the warm-up, SGD's momentum buffers are cleared when the
  unlabeled phase starts, and a second poly decay starts from a lower rate (the fine-tuning rate of
  ``nnUNetTrainerPICK_finetune``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler


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


def two_stage_poly_lr(epoch: int, *, start: int, num_epochs: int, initial_lr: float, unlabeled_lr: float,
                      exponent: float = 0.9) -> float:
    """Learning rate of ``epoch`` when the labeled warm-up is a training of its own (the authors' recipe:
    labeled pre-training, then the semi-supervised stage with a fresh optimizer).

    nnU-Net's poly rule (``PolyLRScheduler``: ``lr0 (1 - t / T)^0.9``) applied twice: from ``initial_lr`` over the
    ``start`` warm-up epochs, then from ``unlabeled_lr`` over the ``num_epochs - start`` epochs of the unlabeled
    phase.

    Raises:
        ValueError: unless ``0 < start < num_epochs``.
    """
    if not 0 < start < num_epochs:
        raise ValueError(f"a two-stage schedule needs 0 < start ({start}) < num_epochs ({num_epochs})")
    if epoch < start:
        return initial_lr * (1 - epoch / start) ** exponent
    return unlabeled_lr * (1 - (epoch - start) / (num_epochs - start)) ** exponent


class TwoStagePolyLRScheduler(PolyLRScheduler):
    """nnU-Net's ``PolyLRScheduler`` (called the same way, ``step(epoch)`` in ``on_train_epoch_start``) with
    :func:`two_stage_poly_lr`, clearing the optimizer's state (SGD's momentum buffers) when epoch ``start`` begins.

    nnU-Net checkpoints the optimizer's state but not the scheduler, so a run continued with ``--c`` before the start
    clears the loaded warm-up momentum when it reaches the start, and one continued after it keeps the loaded
    post-restart state.
    """

    def __init__(self, optimizer, initial_lr: float, unlabeled_lr: float, start: int, num_epochs: int,
                 log: Callable[[str], None] = print):
        two_stage_poly_lr(0, start=start, num_epochs=num_epochs, initial_lr=initial_lr, unlabeled_lr=unlabeled_lr)
        self.unlabeled_lr, self.start, self.log = unlabeled_lr, start, log
        super().__init__(optimizer, initial_lr, num_epochs)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        if current_step == self.start and self.optimizer.state:
            self.optimizer.state.clear()
            self.log(f"unlabeled phase starts: optimizer state cleared (fresh momentum), learning rate "
                     f"{self.unlabeled_lr} with poly decay over the last {self.max_steps - self.start} epochs")
        lr = two_stage_poly_lr(current_step, start=self.start, num_epochs=self.max_steps, initial_lr=self.initial_lr,
                               unlabeled_lr=self.unlabeled_lr, exponent=self.exponent)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
