"""A picture of what the MIM branch learns, for one unlabeled patch (drawn with ``matplotlib``)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

#: inches per panel; 5 panels side by side at :data:`DPI` give a 2000 px wide PNG
PANEL_INCHES = 4.0
DPI = 100
#: colours of the auxiliary prediction: background black, then matplotlib's ``tab10`` (distinct, colour-blind aware)
AUX_COLOURS = ["black", *plt.get_cmap("tab10").colors]


def _slice(volume: np.ndarray, index: int | None) -> np.ndarray:
    """(X, Y) or (X, Y, Z) -> 2D; for 3D the slice ``index`` along the first axis."""
    return volume if volume.ndim == 2 else volume[index]


def draw_mim_figure(image: torch.Tensor, masked: torch.Tensor, masked_image: torch.Tensor,
                    reconstruction: torch.Tensor, auxiliary_logits: torch.Tensor, *, has_regions: bool,
                    class_names: list[str] | None = None, title: str) -> Figure:
    """Draw the five panels: image, pseudo-label mask, masked image, reconstruction, auxiliary prediction.

    For 3D patches the slice along the first spatial axis with the most masked voxels is shown (the middle one if
    nothing is masked); images show channel 0 on one grey scale. The mask and the auxiliary prediction carry a
    colour legend.

    Args:
        image: one sample (C, X, Y[, Z]) float.
        masked: (1, X, Y[, Z]) bool, True where hidden.
        masked_image: (C, X, Y[, Z]) the MIM decoder's input.
        reconstruction: (C, X, Y[, Z]) the MIM decoder's output.
        auxiliary_logits: (heads, X, Y[, Z]) the auxiliary decoder's output on the reconstructed image.
        has_regions: region heads (shown as the number of regions on) or label heads (argmax).
        class_names: for label heads, the name of each output channel (background first); ``None`` numbers them.
        title: figure title.

    Returns:
        The matplotlib figure (the caller saves and closes it).

    Raises:
        ValueError: if ``class_names`` does not name every output channel.
    """
    heads = auxiliary_logits.shape[0]
    if not has_regions and class_names is not None and len(class_names) != heads:
        raise ValueError(f"class_names {class_names} name {len(class_names)} classes, but the auxiliary decoder has "
                         f"{heads} output channels; pass one name per channel, background first")
    img = image[0].float().cpu().numpy()
    msk = masked[0].cpu().numpy()
    aux = auxiliary_logits.float().cpu()
    aux_seg = ((aux > 0).sum(0) if has_regions else aux.argmax(0)).numpy()
    index = None
    if img.ndim == 3:
        per_slice = msk.reshape(msk.shape[0], -1).sum(1)
        index = int(per_slice.argmax()) if per_slice.max() > 0 else msk.shape[0] // 2
    lo, hi = np.percentile(img, [0.5, 99.5])
    grey = dict(cmap="gray", vmin=lo, vmax=hi)
    # regions: 0 .. heads regions on; labels: one colour per output channel
    n_values = heads + 1 if has_regions else heads
    aux_cmap = ListedColormap([AUX_COLOURS[i % len(AUX_COLOURS)] for i in range(n_values)])
    if has_regions:
        aux_names = [f"{k} region{'s' if k != 1 else ''} on" for k in range(n_values)]
    else:
        aux_names = list(class_names) if class_names is not None else [f"class {k}" for k in range(n_values)]
    panels = [
        ("image", _slice(img, index), grey),
        ("pseudo-label mask\n(white = hidden from the encoder)", _slice(msk, index), dict(cmap="gray", vmin=0, vmax=1)),
        ("masked image (MIM input)", _slice(masked_image[0].float().cpu().numpy(), index), grey),
        ("reconstruction (MIM output)", _slice(reconstruction[0].float().cpu().numpy(), index), grey),
        ("auxiliary prediction on the\nreconstructed image", _slice(aux_seg, index),
         dict(cmap=aux_cmap, vmin=-0.5, vmax=n_values - 0.5)),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_INCHES * len(panels), PANEL_INCHES + 1.6), dpi=DPI)
    for ax, (name, data, kwargs) in zip(axes, panels, strict=True):
        ax.imshow(data, interpolation="nearest", **kwargs)
        ax.set_title(name, fontsize=12)
        ax.axis("off")
    axes[1].legend(handles=[Patch(facecolor="white", edgecolor="grey", label="hidden (predicted foreground)"),
                            Patch(facecolor="black", edgecolor="grey", label="visible")],
                   loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=10, frameon=False)
    axes[4].legend(handles=[Patch(facecolor=aux_cmap(k), edgecolor="grey", label=aux_names[k])
                            for k in range(n_values)],
                   loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=10, frameon=False,
                   ncol=min(3, n_values))
    where = "" if index is None else f" (slice {index} of axis 0)"
    fig.suptitle(title + where, fontsize=13)
    note = ("Hidden voxels are set to 0 (mid-grey for nnU-Net's z-score normalised images). The MIM loss (L1) counts "
            "the hidden voxels only: outside them the reconstruction is not trained and may show artefacts.")
    if not msk.any():
        note += " Nothing is hidden here: the network predicts no foreground in this patch (yet; typical early on)."
    fig.text(0.5, 0.015, note, ha="center", va="bottom", fontsize=10)
    # the top 7 % for the title, above the two-line panel titles; the bottom 17 % for the legends below the panels
    # and the note (a new user found the mask legend's second entry cut off by the figure's edge)
    fig.tight_layout(rect=(0, 0.17, 1, 0.93))
    return fig


def save_mim_figure(path: str, image: torch.Tensor, masked: torch.Tensor, masked_image: torch.Tensor,
                    reconstruction: torch.Tensor, auxiliary_logits: torch.Tensor, *, has_regions: bool,
                    class_names: list[str] | None = None, title: str) -> None:
    """Save :func:`draw_mim_figure`'s five panels as a PNG at ``path`` (written atomically); same arguments."""
    fig = draw_mim_figure(image, masked, masked_image, reconstruction, auxiliary_logits, has_regions=has_regions,
                          class_names=class_names, title=title)
    try:
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
