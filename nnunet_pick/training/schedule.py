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
- **Start on a training criterion** (``unlabeled_start_criterion = "training"``): the same rule on the Dice of the
  primary decoder's predictions on the epoch's labeled *training* batches (:func:`training_dice_counts`, counted as
  nnU-Net counts its online validation Dice). It reads no validation labels, so it can be measured where the
  validation cases are test cases (the accuracy protocol refuses the validation criterion there).
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

import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

#: where the start criterion reads its per-class Dice
START_CRITERIA = ("validation", "training")


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


def training_dice_counts(logits: torch.Tensor, target: torch.Tensor, *, has_regions: bool,
                         ignore_label: int | None) -> torch.Tensor:
    """Per foreground class (or region) true positives, false positives and false negatives of the hard prediction
    on a training batch, counted exactly as nnU-Net's ``nnUNetTrainer.validation_step`` counts its online Dice
    (argmax, or sigmoid > 0.5 for regions; ignore-label voxels excluded; nnU-Net's ``get_tp_fp_fn_tn``).

    Args:
        logits: full-resolution primary logits, (B, heads, X, Y[, Z]), any float dtype (not modified).
        target: full-resolution target of the same batch: labels (B, 1, X, Y[, Z]), or region one-hots
            (B, regions [+ 1 ignore channel], X, Y[, Z]) (not modified).
        has_regions: region-based (sigmoid) heads.
        ignore_label: the dataset's ignore label, or None.

    Returns:
        float32 (3, foreground classes) on the logits' device: tp, fp, fn in voxels.
    """
    with torch.no_grad():
        logits = logits.detach()
        axes = [0, *range(2, logits.ndim)]
        if has_regions:
            prediction = (logits > 0).long()  # sigmoid(x) > 0.5
        else:
            prediction = torch.zeros(logits.shape, device=logits.device, dtype=torch.float16)
            prediction.scatter_(1, logits.argmax(1, keepdim=True), 1)
        mask = None
        if ignore_label is not None:
            if has_regions:
                mask = (~target[:, -1:].bool()).float()
                target = target[:, :-1]
            else:
                mask = (target != ignore_label).float()
                target = torch.where(target == ignore_label, torch.zeros_like(target), target)
        tp, fp, fn, _ = get_tp_fp_fn_tn(prediction, target, axes=axes, mask=mask)
        counts = torch.stack([tp, fp, fn]).float()
        return counts if has_regions else counts[:, 1:]


def dice_from_counts(counts: torch.Tensor) -> list[float]:
    """Per-class Dice ``2 tp / (2 tp + fp + fn)`` of (3, C) counts; NaN where a class is neither present nor
    predicted (as nnU-Net's online Dice)."""
    tp, fp, fn = counts.double().cpu()
    denominator = 2 * tp + fp + fn
    return [float(2 * t / d) if d > 0 else math.nan for t, d in zip(tp, denominator, strict=True)]


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
