"""Learning curves: nnU-Net's per-epoch validation Dice against training iterations, per arm and repeat.

The values are nnU-Net's own (``nnUNetLogger``'s ``dice_per_class_or_region`` and ``mean_fg_dice``, kept in every
checkpoint under ``logging``): after each epoch nnU-Net runs ``num_val_iterations_per_epoch`` batches of the fold's
validation cases and computes one Dice per class over all of them ("pseudo Dice": patches, no sliding window).
They show whether an arm converged and how fast; the table's numbers come from the final sliding-window
validation instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from os.path import isfile

import numpy as np


def curve_from_checkpoint(checkpoint_file: str, iterations_per_epoch: int) -> dict:
    """``{"iterations": [...], "mean": [...], "per_class": [[class 1, class 2, ...] per epoch]}`` of one run.

    Args:
        checkpoint_file: an nnU-Net checkpoint (``checkpoint_final.pth``).
        iterations_per_epoch: training iterations per epoch (x axis = (epoch + 1) * this).
    """
    import torch

    logging = torch.load(checkpoint_file, map_location="cpu", weights_only=False)["logging"]
    per_class = [[float(v) for v in epoch] for epoch in logging["dice_per_class_or_region"]]
    n = len(per_class)
    return {"iterations": [(e + 1) * iterations_per_epoch for e in range(n)],
            "mean": [float(v) for v in logging["mean_fg_dice"][:n]], "per_class": per_class}


def cached_curve(checkpoint_file: str, iterations_per_epoch: int, cache_file: str) -> dict:
    """:func:`curve_from_checkpoint`, stored as JSON in ``cache_file`` and read from there next time."""
    if isfile(cache_file) and os.path.getmtime(cache_file) >= os.path.getmtime(checkpoint_file):
        with open(cache_file, encoding="utf-8") as f:
            return json.load(f)
    curve = curve_from_checkpoint(checkpoint_file, iterations_per_epoch)
    os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    with open(cache_file, "w", encoding="utf-8") as f:
        json.dump(curve, f)
    return curve


def plot_learning_curves(curves: dict[str, list[dict]], class_names: Sequence[str], output_file: str,
                         title: str = ""):
    """One PNG: a panel for the mean foreground Dice and one per class; per arm one colour, each repeat a thin
    line and the mean over repeats a thick one (over the epochs all repeats reached).

    Args:
        curves: arm label -> curves of its repeats (:func:`curve_from_checkpoint` dicts).
        class_names: foreground class names in label order (panel titles).
        output_file: PNG path.

    Returns:
        The matplotlib figure (already saved; close it with ``matplotlib.pyplot.close``).
    """
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    panels = ["mean foreground", *class_names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for index, (arm, runs) in enumerate(curves.items()):
        colour = colours(index % 10)
        for p, ax in enumerate(axes[0]):
            series = [(np.array(c["iterations"]), 100 * (np.array(c["mean"]) if p == 0 else
                                                         np.array(c["per_class"])[:, p - 1])) for c in runs]
            for x, y in series:
                ax.plot(x, y, color=colour, linewidth=0.7, alpha=0.35)
            if series:
                n = min(len(x) for x, _ in series)
                mean = np.mean([y[:n] for _, y in series], axis=0)
                ax.plot(series[0][0][:n], mean, color=colour, linewidth=2.4,
                        label=f"{arm} (n={len(series)})" if p == 0 else None)
    for p, ax in enumerate(axes[0]):
        ax.set_title(panels[p])
        ax.set_xlabel("training iterations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation Dice (%, nnU-Net's per-epoch pseudo Dice)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(output_file, dpi=110)
    return fig

