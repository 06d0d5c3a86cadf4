"""Pseudo-labels from an exponential-moving-average (EMA) copy of the encoder and primary decoder (beyond the paper).

PICK (Eq. 5) takes the unlabeled pseudo-label and the attentive mask from the network being trained. Issue 10 measured
that these first pseudo-labels are unusable (no run predicted the posterior hippocampus at the end of the warm-up) and
that the unlabeled auxiliary loss's gradient on the encoder is large and uncorrelated with the supervised one. The
Mean Teacher rule (Tarvainen & Valpola, NeurIPS 2017) gives a smoother source: a copy of the weights updated after
every optimizer step as ``teacher <- d * teacher + (1 - d) * student``, with their ramp ``d = min(decay, 1 - 1 / (n
+ 1))`` over the ``n`` updates so far, so that a new teacher is the plain average of the student states since it was
made until ``n`` reaches ``1 / (1 - decay)``, and exponential after. Opt-in (``nnUNetTrainerPICK_emaTeacher``);
inference keeps using the student's primary decoder, which is what nnU-Net's checkpoint holds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher(nn.Module):
    """A frozen copy of ``network.encoder`` and ``network.decoder`` (the primary path of a
    :class:`~nnunet_pick.network.PICKNetwork`), averaged towards the student by :meth:`update`.

    Attributes:
        decay: the largest per-update decay ``d`` (Mean Teacher: 0.99 early in training, 0.999 later).
        num_updates: updates so far (a buffer, so it travels with :meth:`state_dict`).
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        """Copy the student's encoder and primary decoder (on the student's device, no gradient).

        Args:
            network: a module with ``encoder`` and ``decoder`` attributes (nnU-Net's U-Nets, ``PICKNetwork``).
            decay: in [0, 1).

        Raises:
            ValueError: for a decay outside [0, 1).
        """
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA teacher decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        # one deepcopy of both keeps the decoder's reference to its encoder pointing at the copied encoder
        copied = copy.deepcopy(nn.ModuleDict({"encoder": network.encoder, "decoder": network.decoder}))
        self.encoder, self.decoder = copied["encoder"], copied["decoder"]
        if hasattr(self.decoder, "deep_supervision"):
            self.decoder.deep_supervision = False  # only the full-resolution logits are used
        self.requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long, device=_device_of(network)))

    def current_decay(self) -> float:
        """The decay the next :meth:`update` uses: ``min(decay, 1 - 1 / (num_updates + 1))`` (0 for the first)."""
        n = int(self.num_updates)
        return min(self.decay, 1.0 - 1.0 / (n + 1))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """``teacher <- d * teacher + (1 - d) * student`` for every parameter (``d`` = :meth:`current_decay`);
        buffers are copied. Call after each optimizer step of the student.

        Raises:
            ValueError: if ``network``'s encoder and decoder do not have this teacher's parameters.
        """
        d = self.current_decay()
        mine = list(self.encoder.parameters()) + [p for n, p in self.decoder.named_parameters()
                                                  if not n.startswith("encoder.")]
        theirs = list(network.encoder.parameters()) + [p for n, p in network.decoder.named_parameters()
                                                       if not n.startswith("encoder.")]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs, strict=False)):
            raise ValueError("EMATeacher.update: the student's encoder/decoder do not match the teacher's parameters")
        torch._foreach_lerp_(mine, [p.detach() for p in theirs], 1.0 - d)
        for (_, a), (_, b) in zip(_primary_buffers(self), _primary_buffers(network), strict=True):
            a.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution primary logits of the teacher, (B, heads, X, Y[, Z]), for images (B, C, X, Y[, Z])."""
        return self.decoder(self.encoder(x))


def _device_of(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _primary_buffers(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Named buffers of ``module.encoder`` and ``module.decoder`` (instance-norm running statistics, if tracked)."""
    return [(f"encoder.{n}", b) for n, b in module.encoder.named_buffers()] + \
        [(f"decoder.{n}", b) for n, b in module.decoder.named_buffers() if not n.startswith("encoder.")]
