"""PICK's figures: progress.png for a 1-epoch and a 20-epoch log, and the MIM figure on a real Hippocampus image.

Asserted on the matplotlib objects (markers, axis limits, legend entries) and on the written PNGs (sizes)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
import torch
from matplotlib.colors import to_rgba
from PIL import Image

from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.training.mim_figure import draw_mim_figure, save_mim_figure
from nnunet_pick.training.progress import PICKLocalLogger, draw_pick_panels


def logger_of(epochs: int, warmup: int) -> PICKLocalLogger:
    """A log shaped like the demo's: Dice+CE falling below 0, L_mim 0 until the model predicts foreground in epoch 3,
    a masked fraction of about 5 %, unlabeled terms NaN in warm-up."""
    log = PICKLocalLogger()
    for e in range(epochs):
        w = e < warmup
        values = {"train_losses": 0.3 - 0.05 * e, "val_losses": 0.32 - 0.05 * e, "mean_fg_dice": min(0.05 * e, 0.8),
                  "ema_fg_dice": min(0.04 * e, 0.8), "dice_per_class_or_region": [0.4, 0.3], "lrs": 0.01,
                  "epoch_start_timestamps": 40.0 * e, "epoch_end_timestamps": 40.0 * e + 31,
                  "train_loss_seg": 0.3 - 0.05 * e, "train_loss_mim_labeled": 0.0 if e < 3 else 0.02 / e,
                  "train_loss_mim_unlabeled": math.nan if w else 0.015, "train_loss_aux_labeled": 0.6 - 0.02 * e,
                  "train_loss_aux_unlabeled": math.nan if w else 0.45,
                  "masked_fraction_labeled": 0.0 if e < 3 else 0.052,
                  "masked_fraction_unlabeled": math.nan if w else 0.047, "warmup": float(w),
                  "confident_fraction_unlabeled": math.nan if w else 1.0,
                  "train_dice_per_class": []}  # every key once per epoch, as the trainer logs them
        for key, value in values.items():
            log.log(key, value, e)
    return log


@pytest.mark.parametrize(("epochs", "warmup"), [(1, 1), (20, 12)])
def test_pick_panels_have_markers_a_warmup_legend_and_a_fitted_masked_fraction_axis(epochs, warmup):
    log = logger_of(epochs, warmup).my_fantastic_logging
    fig = draw_pick_panels(log, epochs)
    try:
        losses, fractions = fig.axes
        for ax in (losses, fractions):
            assert all(line.get_marker() == "o" for line in ax.get_lines())  # a single epoch shows as points
            labels = [t.get_text() for t in ax.get_legend().get_texts()]
            assert "warm-up epochs (labeled data only)" in labels
            assert len(ax.patches) == 1  # the shading, over the warm-up epochs only
            x0, x1 = ax.patches[0].get_x(), ax.patches[0].get_x() + ax.patches[0].get_width()
            assert (x0, x1) == (-0.5, warmup - 0.5)
        assert len(losses.get_lines()) == 5
        assert "negative once Dice dominates" in losses.get_xlabel()
        assert "L_mim is 0 while nothing is masked" in losses.get_xlabel()
        assert "loss_tr (left) is PICK's total" in losses.get_xlabel()  # nnU-Net's panel plots the total
        top = fractions.get_ylim()[1]
        if epochs == 1:  # nothing masked yet: the axis keeps 0-1
            assert fractions.get_ylim() == (0.0, 1.0)
        else:  # values of about 5 % fill the axis
            assert fractions.get_ylim()[0] == 0.0
            assert top == pytest.approx(0.052 * 1.15)
    finally:
        plt.close(fig)


@pytest.mark.parametrize(("epochs", "warmup"), [(1, 1), (20, 12)])
def test_progress_png_is_written_with_pick_panels_beside_nnunets(epochs, warmup, tmp_path):
    logger_of(epochs, warmup).plot_progress_png(str(tmp_path))
    image = Image.open(tmp_path / "progress.png")
    assert image.size == (3000, 2700)  # nnU-Net's 3000 x 5400 at half size, PICK's panels beside it
    pixels = np.asarray(image.convert("RGB"))
    # the PICK half is not blank: the first loss curve's colour (matplotlib's default cycle, C0) appears there
    c0 = np.round(np.array(to_rgba("C0")[:3]) * 255)
    assert (np.abs(pixels[:, 1500:].astype(int) - c0).sum(-1) < 30).sum() > 100


def test_mim_figure_of_a_real_slice_has_big_panels_and_a_colour_legend(tmp_path):
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / "hippocampus_004_0000.nii.gz")))
    image = torch.from_numpy(volume.astype(np.float32))[None]  # (1, X, Y, Z)
    image = (image - image.mean()) / image.std()
    masked = torch.zeros((1, *image.shape[1:]), dtype=torch.bool)
    masked[:, 10:20, 15:30, 10:25] = True
    aux = torch.zeros((3, *image.shape[1:]))
    aux[0] = 1
    aux[1, 10:20, 15:22] = 2
    aux[2, 10:20, 22:30] = 2
    kwargs = dict(has_regions=False, class_names=["background", "Anterior", "Posterior"],
                  title="nnUNetTrainerPICK_demo, after epoch 14 (PICK; epochs 0-17), unlabeled patch")
    fig = draw_mim_figure(image, masked, image.masked_fill(masked, 0), image, aux, **kwargs)
    try:
        assert fig.get_size_inches()[0] >= 20  # five panels of 4 inches
        legend = [t.get_text() for t in fig.axes[4].get_legend().get_texts()]
        assert legend == ["background", "Anterior", "Posterior"]
        assert "slice 10 of axis 0" in fig._suptitle.get_text()  # the first slice with the most masked voxels
        shown = fig.axes[4].get_images()[0].get_array()
        assert set(np.unique(shown)) == {0, 1, 2}
        renderer = fig.canvas.get_renderer()
        for ax in (fig.axes[1], fig.axes[4]):  # every legend entry inside the figure (one was cut off)
            box = ax.get_legend().get_window_extent(renderer)
            assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.x1
        note = fig.texts[-1].get_text()
        assert "counts the hidden voxels only" in note and "Nothing is hidden" not in note
        assert fig.texts[-1].get_window_extent(renderer).y1 < box.y0  # below the legends
    finally:
        plt.close(fig)
    empty = draw_mim_figure(image, torch.zeros_like(masked), image, image, aux, **kwargs)
    assert "Nothing is hidden here" in empty.texts[-1].get_text()
    plt.close(empty)
    save_mim_figure(str(tmp_path / "mim.png"), image, masked, image.masked_fill(masked, 0), image, aux, **kwargs)
    assert Image.open(tmp_path / "mim.png").size == (2000, 560)
    with pytest.raises(ValueError, match="name 2 classes, but the auxiliary decoder has 3 output channels"):
        draw_mim_figure(image, masked, image, image, aux, has_regions=False, class_names=["a", "b"], title="t")
