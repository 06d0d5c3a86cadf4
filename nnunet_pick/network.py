"""The PICK network: nnU-Net's planned U-Net plus an MIM decoder and an auxiliary decoder on the same encoder.

PICK paper Sec. 3.2 / Fig. 2: one shared encoder ``f_E`` and three decoders of identical architecture. The encoder
and the primary decoder are exactly the network nnU-Net builds from the plans (``get_network_from_plans``), under the
attribute names nnU-Net relies on (``encoder``, ``decoder``: ``set_deep_supervision_enabled`` and checkpoints use
them). The MIM decoder (one linear output channel per input channel) and the auxiliary decoder (segmentation heads)
are further decoders of the same class, built by the same architecture class from the same plans, so that any
dynamic-network-architectures U-Net whose decoder takes its encoder as first argument works (PlainConvUNet,
ResidualEncoderUNet, 2D or 3D).
"""

from __future__ import annotations

from typing import Literal

import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from torch import nn

Branch = Literal["primary", "mim", "aux"]
BRANCHES: tuple[str, ...] = ("primary", "mim", "aux")


def _single_head_decoder(decoder: nn.Module, encoder: nn.Module) -> nn.Module:
    """Re-attach ``decoder`` to the shared ``encoder`` and keep only its full-resolution output head.

    A dynamic-network-architectures decoder registers its encoder as a submodule and always builds one 1x1 output
    conv per stage (for deep supervision). The MIM and auxiliary decoders are never deeply supervised, so their
    lower-resolution heads would be parameters that never receive a gradient: dead weight in the checkpoint and a
    crash under DDP (``find_unused_parameters=False``). They are replaced by parameter-free ``nn.Identity`` so the
    decoder's ``forward`` (which indexes ``seg_layers[-1]`` when deep supervision is off) is unchanged.
    """
    decoder.encoder = encoder
    decoder.deep_supervision = False
    heads = list(decoder.seg_layers)
    decoder.seg_layers = nn.ModuleList([nn.Identity() for _ in heads[:-1]] + [heads[-1]])
    return decoder


class PICKNetwork(nn.Module):
    """Shared encoder with primary, MIM and auxiliary decoders (PICK Fig. 2).

    Attributes:
        encoder: the plans' encoder (``PlainConvEncoder`` / ``ResidualEncoder``). Returns the skips.
        decoder: primary decoder, ``num_segmentation_heads`` output channels, deep supervision as configured.
            The only decoder used at inference.
        mim_decoder: masked-image-modelling decoder, ``num_input_channels`` linear output channels (Eq. 7).
        aux_decoder: auxiliary segmentation decoder on reconstructed images, ``num_segmentation_heads`` output
            channels (Eq. 9), no deep supervision.

    ``forward(x)`` keeps nnU-Net's contract, so nnU-Net's ``validation_step``, ``perform_actual_validation`` and
    ``nnUNetPredictor`` use it unchanged. The other decoders are reached through the same ``forward`` with
    ``branch=`` so that DDP and ``torch.compile`` see a single entry point.
    """

    def __init__(self, base: nn.Module, mim_base: nn.Module, aux_base: nn.Module) -> None:
        """Assemble from three networks built from the same plans (see :meth:`from_plans`).

        Args:
            base: the plans' network with ``num_segmentation_heads`` outputs; its encoder and decoder are kept.
            mim_base: the same architecture with ``num_input_channels`` outputs; only its decoder is kept.
            aux_base: the same architecture with ``num_segmentation_heads`` outputs; only its decoder is kept.

        Raises:
            ValueError: if a network lacks the ``encoder`` / ``decoder`` attributes of nnU-Net's U-Nets.
        """
        super().__init__()
        for net in (base, mim_base, aux_base):
            if not (hasattr(net, "encoder") and hasattr(net, "decoder")):
                raise ValueError(
                    f"PICK needs an encoder/decoder U-Net (dynamic-network-architectures style), got "
                    f"{type(net).__name__}. Use a plans configuration with PlainConvUNet or ResidualEncoderUNet."
                )
        self.encoder = base.encoder
        self.decoder = base.decoder
        self.mim_decoder = _single_head_decoder(mim_base.decoder, self.encoder)
        self.aux_decoder = _single_head_decoder(aux_base.decoder, self.encoder)

    @classmethod
    def from_plans(
        cls,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        *,
        enable_deep_supervision: bool = True,
        allow_init: bool = True,
    ) -> PICKNetwork:
        """Build the PICK network for a plans configuration (follows ``nnUNetTrainer.build_network_architecture``).

        The primary network is built first with nnU-Net's own ``get_network_from_plans``, so under a fixed seed the
        encoder and primary decoder get the same initial weights as stock nnU-Net's network. The MIM and auxiliary
        decoders come from two more builds of the same class and are initialised by the architecture's own
        ``initialize`` (He init for nnU-Net's U-Nets).

        Args:
            configuration_manager: the plans configuration (``network_arch_class_name``, ``network_arch_init_kwargs``).
            num_input_channels: C, image channels (the MIM decoder's output channels).
            num_output_channels: segmentation heads (``label_manager.num_segmentation_heads``).
            enable_deep_supervision: deep supervision of the primary decoder only.
            allow_init: passed to ``get_network_from_plans``.

        Returns:
            The assembled :class:`PICKNetwork` (on the CPU).
        """
        def build(n_out: int, deep_supervision: bool) -> nn.Module:
            return get_network_from_plans(
                configuration_manager.network_arch_class_name,
                configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import,
                num_input_channels,
                n_out,
                allow_init=allow_init,
                deep_supervision=deep_supervision,
            )

        base = build(num_output_channels, enable_deep_supervision)
        return cls(base, build(num_input_channels, False), build(num_output_channels, False))

    def forward(self, x: torch.Tensor, branch: Branch = "primary") -> torch.Tensor | list[torch.Tensor]:
        """Run the encoder and one decoder.

        Args:
            x: images, float, (B, C, X, Y[, Z]) in voxels of the plans' patch grid.
            branch: ``"primary"`` (segmentation logits, nnU-Net's contract: a list of logits, full resolution
                first, when deep supervision is on, else one (B, heads, X, Y[, Z]) tensor), ``"mim"``
                (reconstruction, (B, C, X, Y[, Z]), linear) or ``"aux"`` (auxiliary logits, (B, heads, X, Y[, Z])).

        Raises:
            ValueError: for an unknown branch.
        """
        skips = self.encoder(x)
        if branch == "primary":
            return self.decoder(skips)
        if branch == "mim":
            return self.mim_decoder(skips)
        if branch == "aux":
            return self.aux_decoder(skips)
        raise ValueError(f"Unknown PICK branch {branch!r}; expected one of {BRANCHES}.")

    def compute_conv_feature_map_size(self, input_size: tuple[int, ...]) -> int:
        """Summed feature-map elements for one sample through the encoder and all three decoders.

        Same contract as the dynamic-network-architectures method nnU-Net's planners use for VRAM estimates.
        """
        return int(
            self.encoder.compute_conv_feature_map_size(input_size)
            + self.decoder.compute_conv_feature_map_size(input_size)
            + self.mim_decoder.compute_conv_feature_map_size(input_size)
            + self.aux_decoder.compute_conv_feature_map_size(input_size)
        )
