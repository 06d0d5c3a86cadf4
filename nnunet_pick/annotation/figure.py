"""The review picture of one suggested case (``nnUNetv2_pick_suggest``; drawn with ``matplotlib``)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def disagreement_slices(image: np.ndarray, primary: np.ndarray, auxiliary: np.ndarray) -> list[dict]:
    """For every spatial axis longer than 1, the slice with the most voxels where the two label maps differ.

    Args:
        image: (X, Y, Z) float, channel 0 of the preprocessed image.
        primary, auxiliary: (X, Y, Z) integer label maps of the primary and the auxiliary decoder (same shape).

    Returns:
        One dict per axis: ``axis``, ``index``, ``disagreeing_voxels`` and the 2D ``image``, ``primary``,
        ``auxiliary`` and bool ``disagreement`` slices (small: kept for every case until the ranking is known).
    """
    differ = primary != auxiliary
    out = []
    for axis in range(differ.ndim):
        if differ.shape[axis] == 1:
            continue
        per_slice = np.moveaxis(differ, axis, 0).reshape(differ.shape[axis], -1).sum(1)
        index = int(per_slice.argmax()) if per_slice.max() > 0 else differ.shape[axis] // 2
        take = lambda a, i=index, ax=axis: np.take(a, i, axis=ax)  # noqa: E731
        out.append({"axis": axis, "index": index, "disagreeing_voxels": int(per_slice[index]),
                    "image": take(image).astype(np.float32), "primary": take(primary).astype(np.int16),
                    "auxiliary": take(auxiliary).astype(np.int16), "disagreement": take(differ)})
    return out


def save_suggestion_figure(path: str, slices: list[dict], num_labels: int, title: str) -> None:
    """Save one row per slice of :func:`disagreement_slices`: image, primary, auxiliary, disagreement.

    Args:
        path: output PNG (written to a temporary name and renamed).
        slices: from :func:`disagreement_slices`.
        num_labels: highest label value + 1, for one colour scale in both segmentations.
        title: figure title (the case and its scores).
    """
    fig, axes = plt.subplots(len(slices), 4, figsize=(12, 3.2 * len(slices) + 0.6), squeeze=False)
    try:
        for row, s in zip(axes, slices, strict=True):
            lo, hi = np.percentile(s["image"], [0.5, 99.5])
            seg_kwargs = dict(cmap="viridis", vmin=0, vmax=max(1, num_labels - 1))
            panels = [
                ("image", s["image"], dict(cmap="gray", vmin=lo, vmax=hi)),
                ("primary decoder", s["primary"], seg_kwargs),
                ("auxiliary decoder", s["auxiliary"], seg_kwargs),
                (f"disagreement ({s['disagreeing_voxels']} voxels)", s["disagreement"],
                 dict(cmap="Reds", vmin=0, vmax=1)),
            ]
            for ax, (name, data, kwargs) in zip(row, panels, strict=True):
                ax.imshow(data, interpolation="nearest", **kwargs)
                ax.set_title(f"{name}\naxis {s['axis']}, slice {s['index']}", fontsize=9)
                ax.axis("off")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
