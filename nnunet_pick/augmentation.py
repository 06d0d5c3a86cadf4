"""Batch-level augmentations the PICK authors used besides nnU-Net's per-sample ones.

- CutMix (Yun et al., ICCV 2019) on labeled batches (PICK Sec. 4.2): a box of one sample's image and label is pasted
  into another sample of the batch.
- Fourier amplitude mixing (Xu et al., CVPR 2021, "A Fourier-based Framework for Domain Generalization"; PICK
  Sec. 4.3.5 on M&Ms): an image keeps its phase spectrum and takes a random mix of its own and another image's
  amplitude spectrum, which changes style (scanner, contrast) but not anatomy.

Both mix samples of one batch, so they run in the trainer on the collated batch, not in nnU-Net's per-sample
transforms. Randomness comes from a ``torch.Generator`` argument (``None``: torch's global one).
"""

from __future__ import annotations

import math

import torch


def cutmix_box(spatial: tuple[int, ...], *, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """A CutMix box: volume fraction ``1 - λ`` of the patch with ``λ ~ U(0, 1)`` (Beta(1, 1), Yun et al.), centre
    uniform in the patch, clipped at the border.

    Args:
        spatial: (X, Y[, Z]) in voxels.
        generator: random source.

    Returns:
        [(start, stop), ...] per axis, half-open, in voxels.
    """
    lam = float(torch.rand((), generator=generator))
    edge_fraction = (1 - lam) ** (1 / len(spatial))
    box = []
    for size in spatial:
        edge = int(round(size * edge_fraction))
        centre = int(torch.randint(0, size, (), generator=generator))
        box.append((max(0, centre - edge // 2), min(size, centre - edge // 2 + edge)))
    return box


def _scaled(box: list[tuple[int, int]], full: tuple[int, ...], scaled: tuple[int, ...]) -> list[slice]:
    return [slice(math.floor(a * s / f), math.ceil(b * s / f)) for (a, b), f, s in zip(box, full, scaled, strict=True)]


def cutmix(data: torch.Tensor, target: torch.Tensor | list[torch.Tensor], box: list[tuple[int, int]],
           partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
    """Paste ``box`` of sample ``partner[i]`` into sample ``i``, in the images and in every target.

    Args:
        data: (B, C, X, Y[, Z]) images.
        target: (B, K, X', Y'[, Z']) label map or region one-hot, or nnU-Net's deep-supervision list of them at
            lower resolutions; the box is scaled to each target's grid (floor at the start, ceil at the end).
        box: from :func:`cutmix_box`, in ``data``'s voxels.
        partner: int64 (B,), the sample each sample takes the box from (a permutation of ``range(B)``).

    Returns:
        New (data, target); the inputs are not modified.
    """
    def paste(x: torch.Tensor) -> torch.Tensor:
        region = (slice(None), slice(None), *_scaled(box, tuple(data.shape[2:]), tuple(x.shape[2:])))
        out = x.clone()
        out[region] = x[partner][region]
        return out

    mixed_target = [paste(t) for t in target] if isinstance(target, list) else paste(target)
    return paste(data), mixed_target


def random_cutmix(data: torch.Tensor, target: torch.Tensor | list[torch.Tensor], probability: float
                  ) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor]]:
    """With ``probability``, :func:`cutmix` of the batch with a random :func:`cutmix_box` and a random partner
    permutation (on ``data``'s device); otherwise the inputs unchanged. One draw for the whole batch, as PICK's labeled
    batches (``nnUNetTrainerPICK_CutMix``) and its labeled-only control (``nnUNetTrainer_CutMix``) use it.

    Args:
        data: (B, C, X, Y[, Z]) images.
        target: as for :func:`cutmix`.
        probability: in [0, 1]; 0 leaves every batch unchanged without drawing a random number.

    Returns:
        (data, target), mixed or the inputs themselves.
    """
    if probability <= 0 or float(torch.rand(())) >= probability:
        return data, target
    box = cutmix_box(tuple(data.shape[2:]))
    return cutmix(data, target, box, torch.randperm(data.shape[0], device=data.device))


def fourier_amplitude_mix(x: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Mix amplitude spectra, keep phases: ``F⁻¹[((1 − λ)|F(x_i)| + λ|F(x_j)|) · exp(i∠F(x_i))]``, j = partner[i].

    The spectrum is taken over the spatial axes per channel, in float32.

    Args:
        x: (B, C, X, Y[, Z]) images.
        lam: (B,) mixing ratios in [0, 1] (Xu et al. draw ``λ ~ U(0, η)``, η = 1).
        partner: int64 (B,) sample whose amplitude is mixed in.

    Returns:
        Tensor like ``x`` (same dtype); ``lam = 0`` returns ``x`` up to FFT rounding.
    """
    dims = tuple(range(2, x.ndim))
    spectrum = torch.fft.fftn(x.float(), dim=dims)
    amplitude, phase = spectrum.abs(), spectrum.angle()
    weight = lam.to(amplitude).view(-1, *[1] * (x.ndim - 1))
    mixed = (1 - weight) * amplitude + weight * amplitude[partner]
    return torch.fft.ifftn(torch.polar(mixed, phase), dim=dims).real.to(x.dtype)
