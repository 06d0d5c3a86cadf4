"""A picture of what the MIM branch learns, for one unlabeled patch (drawn with ``matplotlib``)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _slice(volume: np.ndarray, index: int | None) -> np.ndarray:
    """(X, Y) or (X, Y, Z) -> 2D; for 3D the slice ``index`` along the first axis."""
    return volume if volume.ndim == 2 else volume[index]


def save_mim_figure(path: str, image: torch.Tensor, masked: torch.Tensor, masked_image: torch.Tensor,
                    reconstruction: torch.Tensor, auxiliary_logits: torch.Tensor, *, has_regions: bool,
                    title: str) -> None:
    """Save a five-panel PNG: image, pseudo-label mask, masked image, reconstruction, auxiliary prediction.

    For 3D patches the slice along the first spatial axis with the most masked voxels is shown (the middle one if
    nothing is masked); images show channel 0 on one grey scale.

    Args:
        path: output PNG file (written atomically).
        image: one sample (C, X, Y[, Z]) float.
        masked: (1, X, Y[, Z]) bool, True where hidden.
        masked_image: (C, X, Y[, Z]) the MIM decoder's input.
        reconstruction: (C, X, Y[, Z]) the MIM decoder's output.
        auxiliary_logits: (heads, X, Y[, Z]) the auxiliary decoder's output on the reconstructed image.
        has_regions: region heads (shown as the number of regions on) or label heads (argmax).
        title: figure title.
    """
    img = image[0].float().cpu().numpy()
    msk = masked[0].cpu().numpy()
    aux = auxiliary_logits.float().cpu()
    aux_seg = ((aux > 0).sum(0) if has_regions else aux.argmax(0)).numpy()
    index = None
    if img.ndim == 3:
        per_slice = msk.reshape(msk.shape[0], -1).sum(1)
        index = int(per_slice.argmax()) if per_slice.max() > 0 else msk.shape[0] // 2
    lo, hi = np.percentile(img, [0.5, 99.5])
    panels = [
        ("image", _slice(img, index), dict(cmap="gray", vmin=lo, vmax=hi)),
        ("pseudo-label mask (hidden)", _slice(msk, index), dict(cmap="gray", vmin=0, vmax=1)),
        ("masked image (MIM input)", _slice(masked_image[0].float().cpu().numpy(), index),
         dict(cmap="gray", vmin=lo, vmax=hi)),
        ("reconstruction (MIM output)", _slice(reconstruction[0].float().cpu().numpy(), index),
         dict(cmap="gray", vmin=lo, vmax=hi)),
        ("auxiliary prediction", _slice(aux_seg, index), dict(cmap="viridis", vmin=0, vmax=max(1, aux.shape[0] - 1))),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.6))
    try:
        for ax, (name, data, kwargs) in zip(axes, panels, strict=False):
            ax.imshow(data, interpolation="nearest", **kwargs)
            ax.set_title(name, fontsize=10)
            ax.axis("off")
        where = "" if index is None else f" (slice {index} of axis 0)"
        fig.suptitle(title + where, fontsize=11)
        fig.tight_layout()
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
