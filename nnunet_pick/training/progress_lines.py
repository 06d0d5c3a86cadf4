"""Progress a user can follow while nnU-Net trains: where the log is, how long it will take, one line per epoch.

nnU-Net prints its per-epoch lines only when an epoch ends, which on a CPU (or for a ``3d_fullres`` epoch of 250
iterations) can be many minutes of silence. :class:`TrainingProgressMixin` adds to any nnU-Net trainer, through
nnU-Net's own ``print_to_log_file`` (so every line is in the training log and on the console, rank 0 only):

- at the start: the training log's path and what the per-epoch numbers mean;
- after the first two iterations: an estimate, measured on this machine, of the epoch and of the whole training;
- inside an epoch: a line at least every ``progress_every_seconds`` (30) with the iteration and the time left;
- after every epoch: one line with its duration, nnU-Net's losses and pseudo Dice, and the time left.

Epochs are numbered from 0, as in nnU-Net's ``Epoch N`` lines and checkpoints.
"""

from __future__ import annotations

import re
import time

import numpy as np

#: Messages (after nnU-Net's timestamp) that the mixin prints; the demo shows exactly these on its console.
PROGRESS_MESSAGE = re.compile(r"^(Training log: |Reading the progress lines: |Time estimate |Still training: |"
                              r"epoch \d+ \(of 0-\d+\) done|PICK epoch \d+: )")

LOSS_SIGN_NOTE = ("train_loss and val_loss are nnU-Net's Dice + cross-entropy loss, which adds -Dice: they turn "
                  "negative once the Dice term dominates (lower is better, about -1 is the best possible)")


def format_duration(seconds: float) -> str:
    """``42`` -> ``'42 s'``, ``468`` -> ``'7.8 min'``, ``9000`` -> ``'2.5 h'`` (for progress lines)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class TrainingProgressMixin:
    """Progress lines for an nnU-Net trainer; put it before the trainer class (``class T(Mixin, nnUNetTrainer)``).

    A subclass that replaces ``train_step`` without calling ``super().train_step`` calls
    :meth:`note_iteration_done` at its end (``nnUNetTrainerPICK`` does). :meth:`epoch_detail_lines` and
    :meth:`estimate_note` let a subclass add its own terms.

    Attributes:
        progress_every_seconds (float, 30): the longest time between two lines inside an epoch.
    """

    progress_every_seconds: float = 30.0
    # set by the hooks below; None outside nnU-Net's training loop (e.g. a benchmark calling train_step directly)
    _progress_epoch_start: float | None = None
    _progress_first_epoch: int = 0

    # ------------------------------------------------------------------ nnU-Net hooks
    def on_train_start(self) -> None:
        super().on_train_start()
        self.print_to_log_file(f"Training log: {self.log_file}")
        self.print_to_log_file(f"Reading the progress lines: {self.progress_legend()}")
        self._progress_first_epoch = self.current_epoch

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._progress_iteration = 0
        self._progress_epoch_start = time.perf_counter()
        self._progress_after_first = None  # time when the first iteration (with its start-up costs) ended
        self._progress_last_line = self._progress_epoch_start

    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        self.note_iteration_done()
        return result

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        super().on_epoch_end()
        for line in self.epoch_detail_lines(epoch):
            self.print_to_log_file(line)
        self.print_to_log_file(self.epoch_summary_line(epoch))

    # ------------------------------------------------------------------ lines
    def progress_legend(self) -> str:
        """What the per-epoch lines mean (printed once at the start)."""
        return (f"epochs count from 0 (nnU-Net's 'Epoch N'); {self.loss_note()}; pseudo Dice is nnU-Net's Dice on "
                f"validation patches, from 0 (no overlap) to 1 (perfect)")

    def loss_note(self) -> str:
        """What train_loss and val_loss are (part of :meth:`progress_legend`); nnU-Net's Dice + CE by default."""
        return LOSS_SIGN_NOTE

    def estimate_note(self) -> str:
        """Extra words for time estimates (e.g. that later epochs are slower); empty by default."""
        return ""

    def epoch_detail_lines(self, epoch: int) -> list[str]:
        """Lines a subclass prints before the summary of ``epoch`` (its own loss terms); none by default."""
        return []

    def note_iteration_done(self) -> None:
        """Count one training iteration; print the first time estimate or a 'still training' line when due."""
        if self._progress_epoch_start is None:
            return
        self._progress_iteration += 1
        now = time.perf_counter()
        if self._progress_iteration == 1:
            self._progress_after_first = now
        first_estimate = self._progress_iteration == 2 and self.current_epoch == self._progress_first_epoch
        if not first_estimate and now - self._progress_last_line < self.progress_every_seconds:
            return
        per_iteration = self._seconds_per_iteration(now)
        epoch_left = per_iteration * (self.num_iterations_per_epoch - self._progress_iteration)
        later_epochs = self.num_epochs - self.current_epoch - 1
        training_left = epoch_left + self._seconds_of_epochs_after(self.current_epoch,
                                                                   self._seconds_per_unit(per_iteration))
        if first_estimate:
            self.print_to_log_file(
                f"Time estimate on this machine, from the first iterations: {per_iteration:.1f} s per iteration, "
                f"so about {format_duration(per_iteration * self.num_iterations_per_epoch)} per epoch of "
                f"{self.num_iterations_per_epoch} iterations and {format_duration(training_left)} for the "
                f"{later_epochs + 1} epochs left, plus nnU-Net's final validation{self.estimate_note()}")
        else:
            self.print_to_log_file(
                f"Still training: epoch {self.current_epoch}, iteration {self._progress_iteration} of "
                f"{self.num_iterations_per_epoch} ({per_iteration:.1f} s each); this epoch ends in about "
                f"{format_duration(epoch_left)}, training in about {format_duration(training_left)}"
                f"{self.estimate_note()}")
        self._progress_last_line = now

    def epoch_summary_line(self, epoch: int) -> str:
        """``epoch 3 (of 0-17) done in 31 s: train_loss ..., val_loss ..., pseudo Dice ...; about 7.3 min left``."""
        log = self.logger.local_logger.my_fantastic_logging
        seconds = log["epoch_end_timestamps"][epoch] - log["epoch_start_timestamps"][epoch]
        dice = log["dice_per_class_or_region"][epoch]
        names = self._foreground_names(len(dice))
        dice_text = " ".join(f"{n} {d:.3f}" for n, d in zip(names, dice, strict=True))
        left = self.num_epochs - epoch - 1
        if left > 0:
            seconds_left = self._seconds_of_epochs_after(epoch, self._recent_unit_seconds(epoch))
            remaining = (f"about {format_duration(seconds_left)} left "
                         f"({left} epoch{'s' if left > 1 else ''}, then the final validation)"
                         f"{self.estimate_note()}")
        else:
            remaining = "last epoch; the final validation follows"
        return (f"epoch {epoch} (of 0-{self.num_epochs - 1}) done in {format_duration(seconds)}: "
                f"train_loss {log['train_losses'][epoch]:.4f}, val_loss {log['val_losses'][epoch]:.4f}, "
                f"pseudo Dice {dice_text}; {remaining}")

    # ------------------------------------------------------------------ helpers
    def _seconds_per_iteration(self, now: float) -> float:
        """Seconds per iteration in this epoch, leaving out the first (data-loader start, first-batch costs)."""
        if self._progress_iteration >= 2 and self._progress_after_first is not None:
            return (now - self._progress_after_first) / (self._progress_iteration - 1)
        return (now - self._progress_epoch_start) / self._progress_iteration

    def epoch_cost_weights(self, epochs: range) -> np.ndarray:
        """Relative cost of each of ``epochs`` for the time estimates (float64, one per epoch): 1 for every epoch
        here; a trainer whose epochs differ in cost (PICK's warm-up and unlabeled phases) returns its ratios, and the
        estimates weight the epochs left by them instead of assuming they all cost what the recent ones did."""
        return np.ones(len(epochs))

    def _seconds_of_epochs_after(self, epoch: int, unit_seconds: float) -> float:
        """Estimated seconds of epochs ``epoch + 1 .. num_epochs - 1``: ``unit_seconds`` x their cost weights."""
        return unit_seconds * float(self.epoch_cost_weights(range(epoch + 1, self.num_epochs)).sum())

    def _seconds_per_unit(self, per_iteration: float) -> float:
        """Seconds of an epoch of weight 1: measured on earlier epochs of this run if any, else the current epoch's
        iterations x ``per_iteration``."""
        finished = len(self.logger.local_logger.my_fantastic_logging["epoch_end_timestamps"])
        if self.current_epoch > self._progress_first_epoch and finished >= self.current_epoch:
            return self._recent_unit_seconds(self.current_epoch - 1)
        current = range(self.current_epoch, self.current_epoch + 1)
        return per_iteration * self.num_iterations_per_epoch / float(self.epoch_cost_weights(current)[0])

    def _recent_unit_seconds(self, epoch: int) -> float:
        """Mean duration (s, training and validation) of the last up to 3 epochs up to ``epoch``, each divided by its
        :meth:`epoch_cost_weights`."""
        log = self.logger.local_logger.my_fantastic_logging
        first = max(0, epoch - 2)
        ends = np.asarray(log["epoch_end_timestamps"][first:epoch + 1], dtype=float)
        starts = np.asarray(log["epoch_start_timestamps"][first:epoch + 1], dtype=float)
        weights = self.epoch_cost_weights(range(first, epoch + 1))
        return float(np.mean((ends - starts) / weights))

    def _foreground_names(self, count: int) -> list[str]:
        """Names of the labels or regions nnU-Net's pseudo Dice is reported for (``dataset.json``'s order)."""
        labels = self.dataset_json.get("labels", {})
        ignore = self.label_manager.ignore_label
        names = [name for name, value in labels.items()
                 if value not in (0, ignore) and value != [0] and name != "background"]
        return names if len(names) == count else [f"class {i + 1}" for i in range(count)]
