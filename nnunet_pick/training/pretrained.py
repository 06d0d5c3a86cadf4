"""Fine-tune an existing nnU-Net model with PICK: ``nnUNetv2_train D C F -tr nnUNetTrainerPICK -pretrained_weights
<checkpoint of an nnUNetTrainer run>``.

nnU-Net loads ``-pretrained_weights`` in ``nnunetv2.run.run_training.maybe_load_checkpoint`` with the module function
``load_pretrained_weights(network, fname)``, which requires every key of the network to be in the file. A PICK
network has two decoders a plain nnU-Net checkpoint lacks, so that function cannot load into it, and a trainer has no
method nnU-Net would call instead. :func:`install` therefore replaces ``run_training``'s reference with
:func:`load_pretrained_weights_pick_aware`: a PICK network gets :func:`load_into_pick_network`, every other network
nnU-Net's own function, unchanged. It is installed when the PICK trainer module is imported, which nnU-Net does
(looking the trainer up by name) before it loads weights, in every DDP process too.

What a PICK network gets from a plain nnU-Net checkpoint (the choices the paper leaves open, stated in the log):

- encoder and primary decoder: every tensor, the segmentation heads included when their shapes match (same labels:
  fine-tuning); heads of another shape (another label set) keep their initialisation, as nnU-Net's own transfer
  does for ``.seg_layers.``;
- auxiliary decoder: the primary decoder's weights (same architecture and heads: it starts as a copy of the trained
  segmenter, so its Dice+CE on reconstructed images is meaningful from the first step);
- MIM decoder: the primary decoder's weights wherever shapes match (all convolution stages); its output head
  (C image channels instead of the segmentation heads) keeps its He initialisation.

A checkpoint of a PICK run (all four parts present) is loaded as it is.

The same rule (every tensor, matching segmentation heads included) serves the labeled-only fine-tuning control
``nnUNetTrainer_finetune``: nnU-Net's own loader skips ``.seg_layers.`` (made for transfer to another label set), so a
stock nnU-Net network fine-tuned from a model of the same labels restarts its heads, and the accuracy protocol
measured that control's validation Dice restarting near 30 % while PICK's kept heads did not (issue "PICK that beats
the labeled-only nnU-Net"). Trainers opt in with :class:`KeepPretrainedHeadsMixin`; every other nnU-Net network gets
nnU-Net's function, unchanged.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunet_pick.network import PICKNetwork

EXTRA_DECODERS = ("mim_decoder", "aux_decoder")

#: plain nnU-Net networks whose trainer asked for the segmentation heads to be loaded too (KeepPretrainedHeadsMixin)
_NETWORKS_KEEPING_HEADS: weakref.WeakSet[nn.Module] = weakref.WeakSet()


class KeepPretrainedHeadsMixin:
    """Trainer mixin: ``-pretrained_weights`` loads every tensor of the checkpoint, the segmentation heads included
    where their shapes match (fine-tuning a model of the same plans and labels), like PICK networks do; heads of
    another shape keep their initialisation. Put it before the nnU-Net trainer in the bases."""

    def initialize(self) -> None:
        super().initialize()
        _NETWORKS_KEEPING_HEADS.add(_unwrap(self.network))


def _unwrap(network: nn.Module) -> nn.Module:
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def load_into_pick_network(network: nn.Module, pretrained: dict[str, torch.Tensor]) -> list[str]:
    """Load a plain nnU-Net (or PICK) state dict into ``network`` as the module docstring says.

    Args:
        network: the PICK network, or a plain nnU-Net network (encoder and decoder only), unwrapped.
        pretrained: ``checkpoint["network_weights"]`` of an nnU-Net trainer (keys ``encoder.*``, ``decoder.*``).

    Returns:
        Lines describing what was loaded and what was initialised how.

    Raises:
        ValueError: naming the first key whose tensor is missing or of another shape in the encoder or in the
            primary decoder's convolutions (the checkpoint comes from other plans).
    """
    target = network.state_dict()
    loaded, heads_kept, copied, kept = 0, [], {d: 0 for d in EXTRA_DECODERS}, {d: [] for d in EXTRA_DECODERS}
    from_pick = all(any(k.startswith(d + ".") for k in pretrained) for d in EXTRA_DECODERS)
    for key, value in target.items():
        part, rest = key.split(".", 1)
        if part in ("encoder", "decoder") or from_pick:
            source = pretrained.get(key)
            if source is not None and source.shape == value.shape:
                target[key] = source.to(value.dtype)
                loaded += 1
            elif ".seg_layers." in key and source is not None:
                heads_kept.append(key)
            else:
                found = "missing" if source is None else f"of shape {tuple(source.shape)}"
                raise ValueError(f"Pretrained weights: {key} is {found} in the checkpoint, the network needs "
                                 f"{tuple(value.shape)}. The checkpoint was trained with other plans or another "
                                 f"configuration; fine-tune from a model of the same plans and configuration.")
            continue
        # an extra decoder: its share of the encoder is the shared encoder, the rest comes from the primary decoder
        source = pretrained.get(f"decoder.{rest}")
        if source is not None and source.shape == value.shape:
            target[key] = source.to(value.dtype)
            copied[part] += 1
        else:
            kept[part].append(key)
    network.load_state_dict(target)
    if from_pick:
        return [f"PICK checkpoint: all {loaded} tensors loaded"]
    lines = [f"encoder and primary decoder: {loaded} tensors loaded from the checkpoint"]
    if heads_kept:
        lines.append(f"primary segmentation heads of another shape (another label set) keep their initialisation: "
                     f"{heads_kept}")
    for decoder in (d for d in EXTRA_DECODERS if hasattr(network, d)):
        lines.append(f"{decoder}: {copied[decoder]} tensors initialised from the primary decoder"
                     + (f", {len(kept[decoder])} keep their initialisation ({', '.join(kept[decoder])})"
                        if kept[decoder] else ""))
    return lines


def load_pretrained_weights_pick_aware(network: nn.Module, fname: str, verbose: bool = False) -> None:
    """Drop-in for ``nnunetv2.run.load_pretrained_weights.load_pretrained_weights``: PICK networks and those of
    :class:`KeepPretrainedHeadsMixin` trainers get :func:`load_into_pick_network` (what was done is printed), others
    nnU-Net's function."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    module = _unwrap(network)
    if not isinstance(module, PICKNetwork) and module not in _NETWORKS_KEEPING_HEADS:
        load_pretrained_weights(network, fname, verbose=verbose)
        return
    import torch.distributed as dist

    device = torch.device("cuda", dist.get_rank()) if dist.is_initialized() else torch.device("cpu")
    checkpoint = torch.load(fname, map_location=device, weights_only=False)
    lines = load_into_pick_network(module, checkpoint["network_weights"])
    print(f"nnunet-pick: pretrained weights from {fname} ({checkpoint.get('trainer_name', 'unknown trainer')}):")
    for line in lines:
        print(f"  {line}")


def install() -> None:
    """Point ``nnunetv2.run.run_training.load_pretrained_weights`` at :func:`load_pretrained_weights_pick_aware`
    (idempotent)."""
    import nnunetv2.run.run_training as run_training

    run_training.load_pretrained_weights = load_pretrained_weights_pick_aware
