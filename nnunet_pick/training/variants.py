"""Every ``nnUNetTrainerPICK`` variant, declared once per family (nnU-Net's ``nnUNetTrainer_Xepochs`` style).

A variant is ``nnUNetTrainerPICK`` with a few attributes changed after ``__init__``; :func:`declare_variant` builds
the class (nnU-Net re-creates trainers by name with its fixed 5-argument constructor, so the attributes cannot be
constructor arguments). :data:`TRAINERS` maps every trainer name to its class; nnU-Net finds them through the
``trainers/`` module that :mod:`nnunet_pick._discovery` registers.
"""

from __future__ import annotations

import sys

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_pick.augmentation import random_cutmix
from nnunet_pick.training.pretrained import KeepPretrainedHeadsMixin
from nnunet_pick.training.progress_lines import TrainingProgressMixin
from nnunet_pick.training.trainer import nnUNetTrainerPICK

TRAINERS: dict[str, type[nnUNetTrainer]] = {"nnUNetTrainerPICK": nnUNetTrainerPICK}


def declare_variant(name: str, doc: str, base: type[nnUNetTrainer] = nnUNetTrainerPICK,
                    **settings) -> type[nnUNetTrainer]:
    """Create and register ``name``: ``base`` with ``settings`` assigned after ``base.__init__``.

    Args:
        name: class name (nnU-Net style, no ``__``).
        doc: one-line docstring of the class.
        base: the trainer to derive from.
        **settings: attribute -> value (``num_epochs=5``, ``lambda_mim=0.2``, ...).

    Returns:
        The new class, also available as ``nnunet_pick.training.variants.<name>`` and in :data:`TRAINERS`.

    Raises:
        ValueError: if the name is taken or contains ``__``.
    """
    if name in TRAINERS or "__" in name:
        raise ValueError(f"Invalid or duplicate trainer name {name!r}")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,  # noqa: N807
                 device: torch.device = torch.device("cuda")):
        base.__init__(self, plans, configuration, fold, dataset_json, device)
        for attribute, value in settings.items():
            setattr(self, attribute, value)

    cls = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__,
                               "__qualname__": name, "pick_settings": dict(settings)})
    TRAINERS[name] = cls
    setattr(sys.modules[__name__], name, cls)
    return cls


def lambda_suffix(value: float) -> str:
    """0.2 -> ``'0p2'``, 1.0 -> ``'1p0'`` (nnU-Net writes decimals with ``p``)."""
    return f"{value:.1f}".replace(".", "p")


# the paper's recipe as this project builds it (the method document: PICK Secs. 3-4, and its decisions where the
# paper is silent) under its own name, every setting a variant below changes pinned to that value, so the reproduction
# workflow keeps it when the default nnUNetTrainerPICK changes. Today they are the same recipe: no variant has beaten
# the paper's on the accuracy protocol (README "Does PICK help?", benchmarks/). The schedule (num_epochs, initial_lr,
# ...) stays nnU-Net's.
PAPER_SETTINGS = {
    "lambda_mim": 1.0,  # Eqs. 10-11, the paper's default
    # Sec. 3.3 fixed warm-up (25 %: the authors' 5 000 of 20 000 iterations), then one poly decay over all epochs
    "warmup_fraction": 0.25, "num_warmup_epochs": None, "unlabeled_phase_lr": None,
    "unlabeled_start_min_dice": None, "unlabeled_start_criterion": "validation",  # no Dice-based start
    "masking": "attentive", "startup_masking_min_fraction": 0.0,  # Sec. 3.2, from the first unlabeled step
    "train_mim_decoder": True, "train_aux_decoder": True,  # all three decoders (Table 6)
    # no mixing: Sec. 4.2 lists CutMix among the augmentations without saying where; the method document leaves it
    # optional (nnUNetTrainerPICK_CutMix), Fourier mixing is the M&Ms experiment's (nnUNetTrainerPICK_Fourier)
    "cutmix_probability": 0.0, "fourier_mix_eta": 0.0,
    "unlabeled_rampup_fraction": 0.0, "unlabeled_confidence_threshold": 0.0,  # full weight, every voxel
    "ema_teacher_decay": None,  # Eq. 5: pseudo-labels from the network being trained
}
declare_variant("nnUNetTrainerPICK_paper", "PICK as the paper describes it (the reproduction workflow's trainer; "
                "today also what nnUNetTrainerPICK does).", **PAPER_SETTINGS)

# training length, as nnU-Net's nnUNetTrainer_Xepochs
for _epochs in (1, 5, 10, 20, 50, 100, 250, 500):
    declare_variant(f"nnUNetTrainerPICK_{_epochs}epoch{'s' if _epochs > 1 else ''}",
                    f"nnUNetTrainerPICK with num_epochs={_epochs} (warm-up 25 % of it).", num_epochs=_epochs)

# lambda_mim: the paper's best values other than 1.0 (0.2, 1.2; Sec. 5.1) and its Fig. 4 sweep 0.1 ... 1.3
for _lam in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.1, 1.2, 1.3):
    declare_variant(f"nnUNetTrainerPICK_lambda{lambda_suffix(_lam)}",
                    f"nnUNetTrainerPICK with lambda_mim={_lam}.", lambda_mim=_lam)

# ablations, PICK Table 6 (the labeled-only baseline is nnU-Net's own nnUNetTrainer on the same splits)
declare_variant("nnUNetTrainerPICK_noAux", "PICK without the auxiliary decoder: primary + MIM (Table 6).",
                train_aux_decoder=False)
declare_variant("nnUNetTrainerPICK_noMIM", "PICK without the MIM decoder: the auxiliary decoder segments the "
                "masked image instead of the reconstructed one (Table 6).", train_mim_decoder=False)

# masking strategies, PICK Table 7 (attentive masking is nnUNetTrainerPICK itself)
declare_variant("nnUNetTrainerPICK_randomMaskV1", "Random masking v1: 60 % of 16-voxel blocks (Table 7).",
                masking="random_blocks")
declare_variant("nnUNetTrainerPICK_randomMaskV2", "Random masking v2: one block covering 60 % of the patch (Table 7).",
                masking="random_single_block")
declare_variant("nnUNetTrainerPICK_backgroundMask", "Background masking: hide the predicted background (Table 7).",
                masking="background")

# the authors' extra augmentations
declare_variant("nnUNetTrainerPICK_CutMix", "PICK with CutMix on every labeled batch (the authors used CutMix, "
                "Sec. 4.2; applying it to every batch is this project's choice).",
                cutmix_probability=1.0)
declare_variant("nnUNetTrainerPICK_Fourier", "PICK with Fourier amplitude mixing of all batches, eta = 1 (M&Ms, "
                "Sec. 4.3.5).", fourier_mix_eta=1.0)

# the schedule of the unlabeled phase and start-up masking (nnunet_pick.training.schedule, masking.with_startup_blocks):
# hypotheses for the gain measured too small on Hippocampus (at the end of the fixed warm-up no run predicted the
# posterior class; labeled masks were empty in the first epochs). The validation-Dice starts read validation labels:
# the accuracy protocol (validation = its test cases) refuses them (benchmark.protocol.check_trainers_hygiene).
declare_variant("nnUNetTrainerPICK_startAllClasses", "PICK whose unlabeled phase starts after the first epoch in "
                "which nnU-Net's validation predicted every class (Dice > 0), with no minimum warm-up.",
                unlabeled_start_min_dice=0.0, num_warmup_epochs=0)
declare_variant("nnUNetTrainerPICK_startDice0p5", "PICK whose unlabeled phase starts after the first epoch with "
                "validation Dice > 0.5 for every class, with no minimum warm-up.",
                unlabeled_start_min_dice=0.5, num_warmup_epochs=0)
# the Dice > 0.5 start on the labeled training batches' Dice (reads no validation labels: measurable in the accuracy
# protocol). No "Dice > 0" twin: an untrained network marks much of a patch as foreground, which overlaps every class
# (a 4-epoch x 4-iteration check on Dataset004 started the unlabeled phase after epoch 0).
declare_variant("nnUNetTrainerPICK_startTrainDice0p5", "PICK whose unlabeled phase starts after the first epoch with "
                "Dice > 0.5 for every class on the labeled training batches, with no minimum warm-up.",
                unlabeled_start_min_dice=0.5, unlabeled_start_criterion="training", num_warmup_epochs=0)
declare_variant("nnUNetTrainerPICK_rampup", "PICK with the unlabeled terms ramped up by the sigmoid ramp over 25 % "
                "of the epochs after the warm-up.", unlabeled_rampup_fraction=0.25)
declare_variant("nnUNetTrainerPICK_startupBlocks", "PICK masking random blocks (60 % of 16-voxel tiles) in samples "
                "whose predicted foreground covers under 1 % of the patch.", startup_masking_min_fraction=0.01)

# beyond the paper (issue: the unlabeled auxiliary loss's gradient on the encoder is large and uncorrelated with the
# supervised one, and early pseudo-labels are wrong where the network is unsure): FixMatch's confidence threshold on
# the auxiliary decoder's unlabeled target, at UniMatch's 0.95 for segmentation (masking.confident_voxels)
declare_variant("nnUNetTrainerPICK_confident0p95", "PICK whose unlabeled auxiliary loss leaves out voxels whose "
                "pseudo-label probability is below 0.95 (beyond the paper).", unlabeled_confidence_threshold=0.95)

# beyond the paper (issue: the first pseudo-labels are unusable and the unlabeled gradient is noisy): pseudo-labels,
# masks and confidences from a Mean Teacher EMA copy of the encoder and primary decoder (training.ema_teacher), at
# Mean Teacher's early-training decay 0.99 (a memory of ~100 iterations, 2 epochs of the accuracy protocol)
declare_variant("nnUNetTrainerPICK_emaTeacher", "PICK whose unlabeled pseudo-labels and masks come from an "
                "exponential-moving-average copy (decay 0.99) of the encoder and primary decoder (beyond the paper).",
                ema_teacher_decay=0.99)

# the authors' recipe in one run: labeled pre-training (its own poly decay to 0 over two thirds of the epochs), then
# the unlabeled phase with a fresh optimizer at the fine-tuning rate (nnunet_pick.training.schedule.two_stage_poly_lr)
declare_variant("nnUNetTrainerPICK_twoStage", "PICK after a labeled pre-training of 2/3 of the epochs (own poly "
                "decay), then the unlabeled phase with a fresh optimizer at learning rate 1e-3.",
                warmup_fraction=2 / 3, unlabeled_phase_lr=1e-3)

# fine-tuning an existing nnU-Net model (nnUNetv2_train ... -pretrained_weights CHECKPOINT, see
# nnunet_pick.training.pretrained): the encoder and primary decoder are trained already, so no labeled-only warm-up
# and a tenth of nnU-Net's initial learning rate, over a quarter of nnU-Net's epochs. Not yet measured with the
# accuracy protocol.
declare_variant("nnUNetTrainerPICK_finetune", "PICK fine-tuning from a trained nnU-Net model: no warm-up, initial "
                "learning rate 1e-3, 250 epochs (use with -pretrained_weights).",
                num_warmup_epochs=0, initial_lr=1e-3, num_epochs=250)

# its labeled-only control: the same fine-tuning of the same checkpoint without unlabeled data (the accuracy protocol's
# -tr_finetune arms compare the two, so that "more iterations" is not counted as PICK's gain). It loads the
# segmentation heads as PICK does (nnU-Net's -pretrained_weights restarts them; see nnunet_pick.training.pretrained).
class nnUNetTrainerKeepingHeads(KeepPretrainedHeadsMixin, nnUNetTrainer):
    """nnU-Net's nnUNetTrainer whose -pretrained_weights keeps matching segmentation heads (not listed: the base of
    the fine-tuning control)."""


declare_variant("nnUNetTrainer_finetune", "nnU-Net's nnUNetTrainer fine-tuning from a trained model (labeled data "
                "only, segmentation heads loaded too): initial learning rate 1e-3, 250 epochs (use with "
                "-pretrained_weights).", base=nnUNetTrainerKeepingHeads, initial_lr=1e-3, num_epochs=250)
# the labeled-only control of nnUNetTrainerPICK_CutMix: the same CutMix of every labeled batch on nnU-Net's own
# nnUNetTrainer, so that what CutMix alone gives is not counted as the unlabeled data's gain (accuracy protocol,
# benchmarks/hippocampus-cpu-cutmix/: this control +1.9 [1.0, 2.8] Dice over labeled-only on 4 paired repeats;
# PICK_CutMix -0.9 [-21.1, 19.2] against it on 2)
class nnUNetTrainerWithCutMix(nnUNetTrainer):
    """nnU-Net's nnUNetTrainer whose labeled batches go through CutMix (``nnunet_pick.augmentation.random_cutmix``,
    probability ``cutmix_probability``) before its own ``train_step`` (not listed: the base of the CutMix control)."""

    cutmix_probability = 0.0

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step on the CutMix'ed batch (``data`` (B, C, X, Y[, Z]) and ``target``, a tensor or nnU-Net's
        deep-supervision list, pasted with the same box)."""
        data, target = random_cutmix(batch["data"], batch["target"], self.cutmix_probability)
        return super().train_step({**batch, "data": data, "target": target})


declare_variant("nnUNetTrainer_CutMix", "nnU-Net's nnUNetTrainer (labeled only) with CutMix on every labeled batch: "
                "the control of nnUNetTrainerPICK_CutMix.", base=nnUNetTrainerWithCutMix, cutmix_probability=1.0)
# labeled-only at PICK's wall time (issue: "schedule length at equal wall time"): PICK's run costs 2.2-3.2 x the
# labeled-only run's on the CPU accuracy protocol (same-repeat ratios in runs.json of benchmarks/hippocampus-cpu*:
# 12-01 2.2-2.5 x, cutmix 2.9-3.2 x), so this arm trains 3 x the epochs of the schedule it gets: nnU-Net's 1000 -> 3000
# here, and the protocol's 40 -> 120 (the protocol reads schedule_factor, see protocol.arm_schedule). Measured in
# benchmarks/hippocampus-cpu-equal-time/: 2.6 x the labeled-only wall time, +1.3 Dice over it on 2 repeats.
declare_variant("nnUNetTrainer_3xEpochs", "nnU-Net's nnUNetTrainer (labeled only) with 3 x the epochs (3000; in the "
                "accuracy protocol 3 x its schedule): labeled-only at about PICK's wall time.",
                base=nnUNetTrainer, num_epochs=3000, schedule_factor=3)
declare_variant("nnUNetTrainerPICK_startDice0p5Rampup", "PICK whose unlabeled phase starts after the first epoch "
                "with validation Dice > 0.5 for every class, then ramps the unlabeled terms up (sigmoid, 25 % of the "
                "epochs).", unlabeled_start_min_dice=0.5, num_warmup_epochs=0, unlabeled_rampup_fraction=0.25)

# the embedded demo's CPU schedule (nnUNetv2_pick_demo, see nnunet_pick.demo for why the warm-up is 60 %)
declare_variant("nnUNetTrainerPICK_demo", "nnUNetTrainerPICK on the demo's short CPU schedule.",
                num_epochs=18, num_iterations_per_epoch=25, num_val_iterations_per_epoch=5, num_warmup_epochs=12,
                mim_figure_every=5)

# the demo's labeled-only arm (nnUNetv2_pick_demo --compare): stock nnUNetTrainer on the same schedule, with the
# progress lines PICK prints (TrainingProgressMixin only adds log lines; training is nnU-Net's, unchanged)
class nnUNetTrainerWithProgress(TrainingProgressMixin, nnUNetTrainer):
    """nnU-Net's nnUNetTrainer with nnunet-pick's progress lines (not listed: the base of the demo's baseline)."""


declare_variant("nnUNetTrainer_demo", "nnU-Net's nnUNetTrainer (labeled only) on the demo's short CPU schedule.",
                base=nnUNetTrainerWithProgress, num_epochs=18, num_iterations_per_epoch=25,
                num_val_iterations_per_epoch=5)
declare_variant("nnUNetTrainer_demoFull", "nnU-Net's nnUNetTrainer, 100 epochs: the baseline of nnUNetv2_pick_demo "
                "--full --compare.", base=nnUNetTrainerWithProgress, num_epochs=100)
