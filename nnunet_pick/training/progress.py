"""PICK's per-epoch curves in nnU-Net's logger, and ``progress.png`` with them beside nnU-Net's own panels.

nnU-Net's ``LocalLogger`` accepts only keys it knows and plots ``progress.png`` from them; this subclass adds PICK's
keys (each logged exactly once per epoch, as ``LocalLogger`` requires) and appends a column of PICK panels to the
image nnU-Net draws (nnU-Net's plot is reused as is; ``matplotlib`` draws ours, ``Pillow`` places them side by side).
"""

from __future__ import annotations

import io
import os
from os.path import join

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402
from PIL import Image  # noqa: E402

#: key -> legend label; losses are the unweighted terms of PICK Eqs. 8, 9 and nnU-Net's Dice+CE for the primary.
PICK_LOSS_CURVES: dict[str, str] = {
    "train_loss_seg": "L_seg (primary, labeled)",
    "train_loss_mim_labeled": "L_mim labeled",
    "train_loss_mim_unlabeled": "L_mim unlabeled",
    "train_loss_aux_labeled": "L_aux labeled",
    "train_loss_aux_unlabeled": "L_aux unlabeled",
}
PICK_OTHER_CURVES: dict[str, str] = {
    "masked_fraction_labeled": "masked voxel fraction, labeled",
    "masked_fraction_unlabeled": "masked voxel fraction, unlabeled",
    # unlabeled voxels whose pseudo-label is a target of L_aux^u (1 in PICK; < 1 with a confidence threshold)
    "confident_fraction_unlabeled": "confident voxel fraction, unlabeled",
    "warmup": "warm-up epoch (1) / PICK epoch (0)",
}
PICK_CURVES: tuple[str, ...] = (*PICK_LOSS_CURVES, *PICK_OTHER_CURVES)
LOSS_PANEL_NOTE = ("L_seg is nnU-Net's Dice+CE: it adds -Dice, so it is negative once Dice dominates (best about -1)."
                   "\nL_mim is 0 while nothing is masked; the unlabeled terms start after the warm-up."
                   "\nnnU-Net's loss_tr (left) is PICK's total: the sum of these terms (L_mim x lambda_mim).")
MASK_PANEL_NOTE = ("Only voxels predicted as foreground are masked: the fraction is about the structures' share of"
                   "\nthe patch, and 0 while the network predicts no foreground yet.")
PIXEL_REDUCTION = 2


#: per epoch, the primary decoder's Dice per foreground class on the labeled training batches (an empty list when not
#: counted: it is counted only for ``unlabeled_start_criterion = "training"``, nnunet_pick.training.schedule)
TRAIN_DICE_KEY = "train_dice_per_class"


class PICKLocalLogger(LocalLogger):
    """nnU-Net's ``LocalLogger`` with PICK's curves (:data:`PICK_CURVES`, :data:`TRAIN_DICE_KEY`) and a wider
    ``progress.png``."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(verbose)
        for key in (*PICK_CURVES, TRAIN_DICE_KEY):
            self.my_fantastic_logging[key] = []

    def load_checkpoint(self, checkpoint: dict) -> None:
        """nnU-Net's restore; a checkpoint written before a key existed gets "not computed" for each of its epochs
        (NaN for a curve of :data:`PICK_CURVES`, an empty list for :data:`TRAIN_DICE_KEY`), so that ``--c``
        continues it."""
        super().load_checkpoint(checkpoint)
        epochs = len(self.my_fantastic_logging.get("epoch_end_timestamps", []))
        if TRAIN_DICE_KEY not in self.my_fantastic_logging:
            self.my_fantastic_logging[TRAIN_DICE_KEY] = [[] for _ in range(epochs)]
        for key in PICK_CURVES:
            if key not in self.my_fantastic_logging:
                self.my_fantastic_logging[key] = [float("nan")] * epochs

    def plot_progress_png(self, output_folder: str) -> None:
        """Write nnU-Net's ``progress.png``, then widen it with PICK's panels on the right (atomically replaced)."""
        # markers on nnU-Net's own curves too (through matplotlib's rc defaults, nnU-Net's plot code unchanged),
        # so that a run of one epoch shows points instead of empty panels
        with plt.rc_context({"lines.marker": "o", "lines.markersize": 12}):
            super().plot_progress_png(output_folder)
        epochs = min(len(v) for v in self.my_fantastic_logging.values())
        if epochs == 0:
            return
        path = join(output_folder, "progress.png")
        with Image.open(path) as nnunet_png:
            # nnU-Net's figure is 3000 x 5400 px; both halves are stored at half that resolution so that writing
            # the widened image costs about as much as nnU-Net's own plot (it is redrawn every epoch)
            nnunet_half = nnunet_png.convert("RGB").reduce(PIXEL_REDUCTION)
        pick_png = self._render_pick_panels(epochs, nnunet_half.size[1])
        combined = Image.new("RGB", (nnunet_half.size[0] + pick_png.size[0], nnunet_half.size[1]), "white")
        combined.paste(nnunet_half, (0, 0))
        combined.paste(pick_png, (nnunet_half.size[0], 0))
        tmp = path + ".tmp.png"
        combined.save(tmp, compress_level=1)
        os.replace(tmp, path)

    def _render_pick_panels(self, epochs: int, height_px: int) -> Image.Image:
        fig = draw_pick_panels(self.my_fantastic_logging, epochs)
        try:
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        finally:
            plt.close(fig)
        buffer.seek(0)
        image = Image.open(buffer).convert("RGB")
        if image.size[1] != height_px:
            image = image.resize((round(image.size[0] * height_px / image.size[1]), height_px))
        return image


def draw_pick_panels(log: dict[str, list], epochs: int) -> Figure:
    """PICK's two panels of ``progress.png``: the loss terms, and the fraction of voxels masked.

    Warm-up epochs are shaded in both panels (with a legend entry); every value has a marker, so that a run of one
    epoch shows points rather than nothing. The masked-fraction axis runs from 0 to a little above the largest
    value (to 1 only if nothing was masked yet), since the masked fraction is often a few percent.

    Args:
        log: the logger's ``my_fantastic_logging`` with :data:`PICK_CURVES` (one value per epoch; NaN = not
            computed, e.g. unlabeled terms in warm-up).
        epochs: the first ``epochs`` values of each curve are drawn.

    Returns:
        The figure, 3000 x 5400 px at nnU-Net's scale (the caller saves and closes it).
    """
    with plt.rc_context(PANEL_STYLE):
        return _draw_pick_panels(log, epochs)


#: font sizes matching nnU-Net's panels (seaborn's font_scale=2.5, which nnU-Net sets only while it draws its own)
PANEL_STYLE = {"font.size": 28, "axes.labelsize": 30, "xtick.labelsize": 27, "ytick.labelsize": 27,
               "legend.fontsize": 27}


def _draw_pick_panels(log: dict[str, list], epochs: int) -> Figure:
    x = np.arange(epochs)
    warmup = np.asarray(log["warmup"][:epochs], dtype=float) > 0
    fig, axes = plt.subplots(2, 1, figsize=(30, 54), dpi=100 // PIXEL_REDUCTION)
    style = dict(linewidth=4, marker="o", markersize=14)
    ax = axes[0]
    for key, label in PICK_LOSS_CURVES.items():
        ax.plot(x, np.asarray(log[key][:epochs], dtype=float), label=label, **style)
    ax.set_ylabel("PICK loss terms (unweighted)")
    ax = axes[1]
    fractions = []
    for key in ("masked_fraction_labeled", "masked_fraction_unlabeled"):
        values = np.asarray(log[key][:epochs], dtype=float)
        fractions.append(values)
        ax.plot(x, values, label=PICK_OTHER_CURVES[key], **style)
    finite = np.concatenate(fractions)
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) * 1.15 if finite.size and finite.max() > 0 else 1.0
    ax.set_ylim(0, top)
    ax.set_ylabel("fraction of voxels masked")
    for ax, note in zip(axes, (LOSS_PANEL_NOTE, MASK_PANEL_NOTE), strict=True):
        if warmup.any():
            ax.axvspan(-0.5, float(np.flatnonzero(warmup).max()) + 0.5, color="grey", alpha=0.15,
                       label="warm-up epochs (labeled data only)")
        ax.set_xlim(-0.5, max(epochs - 0.5, 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers (no 2.5 or -0.4 ticks)
        ax.set_xlabel(f"epoch (from 0, as in the training log)\n\n{note}", loc="left")
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0))
    fig.tight_layout()
    return fig
