"""``nnUNetTrainerPICK``: nnU-Net's trainer with PICK's semi-supervised training step.

Everything but the step and the unlabeled data is nnU-Net's: plans, network from the plans, augmentation, SGD with poly
LR, validation, checkpoints, ``--c``, final validation and ``summary.json``. What this class adds:

- the network (:class:`~nnunet_pick.network.PICKNetwork`): the plans' U-Net plus MIM and auxiliary decoders;
- a second data loader over unlabeled patches (:mod:`nnunet_pick.unlabeled`), preprocessed on first use;
- the PICK step (:meth:`nnUNetTrainerPICK.train_step`), following ``PICK_method.md``: labeled branches (Eq. 11)
  in every epoch, unlabeled branches (Eq. 10) after the warm-up epochs, each branch back-propagated on its own;
- PICK's curves in the log and ``progress.png``, and a PNG of the MIM branch on an unlabeled patch;
- progress lines while it trains (:class:`~nnunet_pick.training.progress_lines.TrainingProgressMixin`).
- start-up checks of the raw files it trains on (:meth:`nnUNetTrainerPICK.check_input_files`: complete, finite,
  declared labels), an unlabeled pool that is what ``imagesUnlabeled`` holds now, a ``--c`` / ``--val`` that refuses a
  checkpoint trained with other plans (:meth:`nnUNetTrainerPICK.load_checkpoint`), and skipped-step warnings that name
  the cases of the step.

PICK settings are attributes set in ``__init__``; a subclass overrides them after ``super().__init__``.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from os.path import join

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import load_json
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from nnunetv2.paths import nnUNet_raw
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_pick.augmentation import fourier_amplitude_mix, random_cutmix
from nnunet_pick.losses import auxiliary_target, masked_l1_loss, paste_reconstruction
from nnunet_pick.masking import (
    MASKING_STRATEGIES,
    apply_mask,
    compute_mask,
    confident_voxels,
    pseudo_label,
    with_startup_blocks,
)
from nnunet_pick.network import PICKNetwork
from nnunet_pick.training import pretrained as _pretrained
from nnunet_pick.training.batch_cases import CaseRecordingLoader, case_ids
from nnunet_pick.training.checkpoint_plans import plans_differences, refuse_changed_plans
from nnunet_pick.training.ema_teacher import EMATeacher
from nnunet_pick.training.mim_figure import save_mim_figure
from nnunet_pick.training.progress import PICK_CURVES, TRAIN_DICE_KEY, PICKLocalLogger
from nnunet_pick.training.progress_lines import TrainingProgressMixin
from nnunet_pick.training.schedule import (
    START_CRITERIA,
    TwoStagePolyLRScheduler,
    dice_from_counts,
    sigmoid_rampup,
    training_dice_counts,
    unlabeled_start_epoch,
)
from nnunet_pick.unlabeled.dataset import nnUNetDatasetUnlabeled
from nnunet_pick.unlabeled.pool import (
    complete_case_folders,
    list_raw_unlabeled_cases,
    preprocessed_unlabeled_folder,
    preprocessing_state,
    raw_unlabeled_folder,
    unlabeled_ids_from_split,
)
from nnunet_pick.unlabeled.preprocess import preprocess_unlabeled
from nnunet_pick.unlabeled.transforms import OutsideMaskFromZeroImageTransform
from nnunet_pick.unlabeled.validate import check_unlabeled_folder, integrity_cache_file, raise_if_problems

# nnUNetv2_train -pretrained_weights <plain nnU-Net checkpoint> must load into the PICK network (see the module)
_pretrained.install()


EMA_TEACHER_KEY = "pick_ema_teacher"  # the EMA teacher's state_dict in checkpoints of ema_teacher_decay runs


def _nanmean(values) -> float:
    """Mean over the finite entries; NaN when there are none (e.g. unlabeled terms in warm-up)."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


class nnUNetTrainerPICK(TrainingProgressMixin, nnUNetTrainer):  # noqa: N801 (nnU-Net naming)
    """nnU-Net trainer for PICK semi-supervised segmentation (Zeng et al., IJCV 2025).

    Same constructor as ``nnUNetTrainer``. PICK settings (instance attributes):

    - ``lambda_mim`` (float, 1.0): λ of PICK Eqs. 10-11, the weight of the masked-image-modelling loss.
    - ``num_warmup_epochs`` (int): labeled-only epochs before unlabeled data is used; ``warmup_fraction`` (0.25)
      of ``num_epochs`` (rounded) unless set.
    - ``unlabeled_phase_lr`` (float or None): if set, the warm-up is a labeled training of its own and the unlabeled
      phase restarts the optimizer at this learning rate (:class:`~nnunet_pick.training.schedule.
      TwoStagePolyLRScheduler`); None (PICK): one poly decay over all epochs.
    - ``unlabeled_batch_size`` (int): unlabeled patches per iteration (over all GPUs); the plans' batch size.
    - ``masking`` (str, ``"attentive"``): masking strategy (:data:`nnunet_pick.masking.MASKING_STRATEGIES`).
    - ``mim_figure_every`` (int, 10): write ``mim_epoch_XXXX.png`` every this many epochs (and ``mim_final.png``).
    - ``grad_clip_norm`` (float, 12): gradient-norm clip, nnU-Net's value.
    - ``train_mim_decoder`` / ``train_aux_decoder`` (bool, True): ablations of PICK Table 6. Without the MIM decoder
      the auxiliary decoder segments the masked image; without the auxiliary decoder only primary + MIM train.
    - ``cutmix_probability`` (float, 0): CutMix on labeled batches with this probability (Yun et al. 2019).
    - ``fourier_mix_eta`` (float, 0): Fourier amplitude mixing of every batch with ``λ ~ U(0, eta)`` (Xu et al.
      2021); 0 disables it.
    - ``unlabeled_start_min_dice`` (float or None): start the unlabeled phase after the first epoch whose Dice
      exceeds this for every foreground class (at the earliest after ``num_warmup_epochs``); None: after
      ``num_warmup_epochs``. ``unlabeled_start_criterion`` (``"validation"``): whose Dice, nnU-Net's online
      validation or (``"training"``) the primary decoder's on the epoch's labeled training batches
      (:mod:`nnunet_pick.training.schedule`).
    - ``unlabeled_rampup_fraction`` (float, 0): sigmoid ramp of the unlabeled terms over this fraction of
      ``num_epochs`` after the start; ``startup_masking_min_fraction`` (float, 0): random blocks instead of the
      attentive mask for samples with less predicted foreground than this.
    - ``unlabeled_confidence_threshold`` (float, 0; beyond the paper): unlabeled voxels whose primary-decoder
      probability is below this are left out of ``L_aux^u`` (nnU-Net's loss with an ignore label;
      :func:`nnunet_pick.masking.confident_voxels`). The attentive mask and ``L_mim^u`` are unchanged. The kept
      fraction is logged as ``confident_fraction_unlabeled`` (1 with the threshold off).
    - ``ema_teacher_decay`` (float or None, None; beyond the paper): take the unlabeled pseudo-label, attentive mask
      and confidence from an exponential-moving-average copy of the encoder and primary decoder
      (:class:`~nnunet_pick.training.ema_teacher.EMATeacher`, Mean Teacher's rule with this decay), made when the
      unlabeled phase starts and saved in the checkpoint (``"pick_ema_teacher"``); None: from the network itself.
    - ``max_nonfinite_steps_in_a_row`` (int, 5): a step with a non-finite loss or gradient is skipped and logged;
      this many in a row stop training with a ``RuntimeError``.

    Every default is the paper's (``nnUNetTrainerPICK_paper`` pins them). The variants of
    :mod:`nnunet_pick.training.variants` that change them were measured against the labeled-only nnU-Net on the CPU
    accuracy protocol (README "Does PICK help?", ``benchmarks/README.md``). None beat the paper's recipe, which gained
    +1.1 [-0.0, 2.2] Dice at 4 labeled Hippocampus cases (18 % of the gap to full supervision, 4 paired repeats), so no
    default departs from the paper.

    Raises:
        NotImplementedError: for cascaded configurations (unlabeled cases have no previous-stage prediction).
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_cascaded:
            raise NotImplementedError(
                f"nnUNetTrainerPICK does not support cascaded configurations ({configuration!r} uses the previous "
                f"stage {self.configuration_manager.previous_stage_name!r}, which unlabeled cases lack). Train "
                f"3d_fullres, 3d_lowres or 2d with PICK instead.")
        self.lambda_mim = 1.0
        self._num_warmup_epochs: int | None = None
        self.warmup_fraction = 0.25
        self.unlabeled_phase_lr: float | None = None
        self.unlabeled_batch_size = self.configuration_manager.batch_size
        self.masking = "attentive"
        self.mim_figure_every = 10
        self.grad_clip_norm = 12.0
        # ablations (PICK Table 6) and the authors' extra augmentations (Sec. 4.2, 4.3.5); off in PICK itself
        self.train_mim_decoder = True
        self.train_aux_decoder = True
        self.cutmix_probability = 0.0
        self.fourier_mix_eta = 0.0
        # opt-in schedule of the unlabeled phase and start-up masking (nnunet_pick.training.schedule, masking.py);
        # off in PICK itself
        self.unlabeled_start_min_dice: float | None = None
        self.unlabeled_start_criterion = "validation"
        self._train_dice_counts: torch.Tensor | None = None  # (3, classes) tp, fp, fn of this epoch's labeled batches
        self.unlabeled_rampup_fraction = 0.0
        self.startup_masking_min_fraction = 0.0
        self.unlabeled_confidence_threshold = 0.0  # beyond the paper, off in PICK itself
        self.ema_teacher_decay: float | None = None  # beyond the paper, off in PICK itself
        self.ema_teacher: EMATeacher | None = None  # made when the unlabeled phase first needs it
        self._unlabeled_aux_loss: tuple[nn.Module, int | None] | None = None  # built when first needed
        self._branch_weight = 1.0  # weight of the branch being back-propagated (the unlabeled ramp)
        # a step whose loss or gradient is not finite is skipped; this many in a row stop training
        self.max_nonfinite_steps_in_a_row = 5
        self._nonfinite_in_a_row = 0
        self._labeled_cases: list[str] | None = None  # case ids of the current step's labeled batch

        self.logger.local_logger = PICKLocalLogger()
        self.dataloader_unlabeled = None
        self.unlabeled_case_folders: dict[str, str] = {}
        self.aux_loss: nn.Module | None = None
        self._batch_dim_dynamic = False  # set in on_train_start; see _forward

    # ------------------------------------------------------------------ which cases a step used (issue 11)
    @property
    def dataloader_unlabeled(self):
        """The unlabeled batch iterator, wrapped so that it remembers the case ids of its last batch
        (:class:`~nnunet_pick.training.batch_cases.CaseRecordingLoader`); assign any batch iterator."""
        return self._dataloader_unlabeled

    @dataloader_unlabeled.setter
    def dataloader_unlabeled(self, loader) -> None:
        if loader is not None and not isinstance(loader, CaseRecordingLoader):
            loader = CaseRecordingLoader(loader)
        self._dataloader_unlabeled = loader

    def _cases_of_this_step(self) -> str:
        """"labeled [...], unlabeled [...]" for the step being run, over all DDP ranks (called on every rank)."""
        unlabeled = None if self.is_warmup_epoch() or self.dataloader_unlabeled is None \
            else self.dataloader_unlabeled.last_cases
        mine = (self._labeled_cases, unlabeled)
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, mine)
        else:
            gathered = [mine]

        def join_cases(part: int) -> str:
            if part == 1 and self.is_warmup_epoch():
                return "none (warm-up)"
            ids = [c for g in gathered for c in (g[part] or [])]
            return str(ids) if ids else "unknown (the batch carries no case ids)"

        return f"labeled {join_cases(0)}, unlabeled {join_cases(1)}"

    # ------------------------------------------------------------------ settings
    @property
    def num_warmup_epochs(self) -> int:
        """Labeled-only epochs; ``warmup_fraction`` of ``num_epochs`` unless set explicitly."""
        if self._num_warmup_epochs is None:
            return int(round(self.warmup_fraction * self.num_epochs))
        return self._num_warmup_epochs

    @num_warmup_epochs.setter
    def num_warmup_epochs(self, value: int) -> None:
        self._num_warmup_epochs = value

    def is_warmup_epoch(self, epoch: int | None = None) -> bool:
        """True if ``epoch`` (default: the current one) uses labeled data only. Same on every DDP rank."""
        start = self.unlabeled_phase_start()
        return start is None or (self.current_epoch if epoch is None else epoch) < start

    def unlabeled_phase_start(self) -> int | None:
        """First epoch with unlabeled data: ``num_warmup_epochs``, or with ``unlabeled_start_min_dice`` set the
        epoch after the Dice of ``unlabeled_start_criterion`` (nnU-Net's validation, or the labeled training
        batches') first exceeded it for every class (at least ``num_warmup_epochs``; None until then;
        :func:`nnunet_pick.training.schedule.unlabeled_start_epoch`)."""
        if self.unlabeled_start_min_dice is None:
            return self.num_warmup_epochs
        key = "dice_per_class_or_region" if self.unlabeled_start_criterion == "validation" else TRAIN_DICE_KEY
        return unlabeled_start_epoch(self.logger.local_logger.my_fantastic_logging[key],
                                     min_epochs=self.num_warmup_epochs, min_dice=self.unlabeled_start_min_dice)

    def unlabeled_weight(self, epoch: int | None = None) -> float:
        """Weight of the unlabeled terms in ``epoch`` (default: the current one): the sigmoid ramp over
        ``unlabeled_rampup_fraction`` of ``num_epochs`` after the phase start, 1 without a ramp, 0 in warm-up."""
        epoch = self.current_epoch if epoch is None else epoch
        start = self.unlabeled_phase_start()
        ramp = int(round(self.unlabeled_rampup_fraction * self.num_epochs))
        return 0.0 if start is None else sigmoid_rampup(epoch - start, ramp)

    # ------------------------------------------------------------------ network and losses
    @staticmethod
    def build_network_architecture(plans_manager: PlansManager,
                                   configuration_manager: ConfigurationManager,
                                   num_input_channels: int,
                                   num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        """The plans' network plus MIM and auxiliary decoders (see :class:`~nnunet_pick.network.PICKNetwork`).

        nnU-Net's predictor calls this on the class with ``enable_deep_supervision=False`` and loads checkpoints
        strictly, so inference rebuilds exactly the trained module tree; ``forward(x)`` then runs the encoder and the
        primary decoder only.
        """
        return PICKNetwork.from_plans(configuration_manager, num_input_channels, num_output_channels,
                                      enable_deep_supervision=enable_deep_supervision)

    def initialize(self) -> None:
        if self.masking not in MASKING_STRATEGIES:
            raise ValueError(f"{type(self).__name__}.masking = {self.masking!r}; expected one of {MASKING_STRATEGIES}")
        if self.unlabeled_start_criterion not in START_CRITERIA:
            raise ValueError(f"{type(self).__name__}.unlabeled_start_criterion = {self.unlabeled_start_criterion!r}; "
                             f"expected one of {START_CRITERIA}")
        super().initialize()
        # the auxiliary decoder uses nnU-Net's own Dice+CE (Dice+BCE for regions) without deep supervision
        self.aux_loss = self.loss.loss if isinstance(self.loss, DeepSupervisionWrapper) else self.loss

    def configure_optimizers(self):
        """nnU-Net's SGD and poly schedule; with ``unlabeled_phase_lr`` set, the two-stage schedule instead.

        Raises:
            ValueError: for ``unlabeled_phase_lr`` with a validation-Dice start (the warm-up's length must be known
                for its learning rate to decay to 0 at its end).
        """
        optimizer, lr_scheduler = super().configure_optimizers()
        if self.unlabeled_phase_lr is None:
            return optimizer, lr_scheduler
        if self.unlabeled_start_min_dice is not None:
            raise ValueError(f"{type(self).__name__}: unlabeled_phase_lr needs a fixed warm-up "
                             f"(unlabeled_start_min_dice=None)")
        return optimizer, TwoStagePolyLRScheduler(optimizer, self.initial_lr, self.unlabeled_phase_lr,
                                                  self.num_warmup_epochs, self.num_epochs, self.print_to_log_file)

    def _unwrapped_network(self) -> PICKNetwork:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def _forward(self, x: torch.Tensor, branch: str = "primary"):
        """``self.network`` on ``x`` for one branch (:meth:`PICKNetwork.forward`), as the training step calls it.

        Under ``torch.compile`` (nnU-Net compiles ``self.network`` on CUDA), every distinct input shape, grad mode and
        branch is a cached graph of the same ``forward``, and ``torch._dynamo.config.recompile_limit`` (8) caps them;
        past the cap that call runs uncompiled. When the unlabeled batch differs from the labeled one, the batch
        dimension is marked dynamic (``torch._dynamo.maybe_mark_dynamic``) so that the MIM and auxiliary branches
        compile one graph for both batches instead of one per batch size (found by ``tests/test_compile.py``: with
        B_u != B_l the final validation otherwise hits the cap). Without compilation the mark does nothing.
        """
        if self._batch_dim_dynamic:
            torch._dynamo.maybe_mark_dynamic(x, 0)
        return self.network(x) if branch == "primary" else self.network(x, branch=branch)

    def _autocast(self):
        # nnU-Net's rule: autocast on CUDA only (CPU autocast is slow, MPS unsupported)
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def _backward(self, loss: torch.Tensor) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
        else:
            loss.backward()

    # ------------------------------------------------------------------ unlabeled data
    @property
    def unlabeled_preprocessed_folder(self) -> str:
        """``$nnUNet_preprocessed/DatasetXXX/<data_identifier>_unlabeled``."""
        return preprocessed_unlabeled_folder(self.preprocessed_dataset_folder_base,
                                             self.configuration_manager.data_identifier)

    def _raw_dataset_folder(self) -> str:
        """``$nnUNet_raw/DatasetXXX_Name``, which the start-up checks and the unlabeled pool are built from.

        Raises:
            FileNotFoundError: if ``nnUNet_raw`` is not set or the dataset is not in it.
        """
        name = self.plans_manager.dataset_name
        folder = join(nnUNet_raw.get(), name) if nnUNet_raw.is_set() else None
        if folder is None or not os.path.isdir(folder):
            raise FileNotFoundError(
                f"The raw dataset {name} is not available ({'nnUNet_raw is not set' if folder is None else folder} "
                f"not found). nnUNetTrainerPICK checks the labeled files and builds its unlabeled pool from "
                f"$nnUNet_raw/{name} (imagesTr, labelsTr, imagesUnlabeled) when training starts: set nnUNet_raw to "
                f"the folder that holds {name}.")
        return folder

    def _raw_unlabeled_cases(self) -> dict[str, list[str]]:
        folder = raw_unlabeled_folder(self._raw_dataset_folder())
        return list_raw_unlabeled_cases(folder, self.dataset_json["file_ending"])

    # ------------------------------------------------------------------ start-up checks (issue 11)
    def check_input_files(self) -> None:
        """Refuse to start on raw files that would be trained on wrongly; runs before anything is written.

        The same :func:`~nnunet_pick.unlabeled.validate.check_unlabeled_folder` as
        ``nnUNetv2_pick_preprocess_unlabeled`` (so both accept exactly the same pool, with the same messages), plus
        the completeness of every labeled image and label file (nnU-Net's ``--verify_dataset_integrity`` accepts a
        ``.nii.gz`` cut short, which SimpleITK reads with zeros for the missing part). Files unchanged since they
        last passed are not decoded again (:mod:`nnunet_pick.integrity`). Under DDP rank 0 checks first, then the
        other ranks (from the cache).

        Raises:
            ValueError: listing every problem, each with the file and the fix.
            FileNotFoundError: if the raw dataset is not available.
        """
        raw = self._raw_dataset_folder()

        def check() -> None:
            result = check_unlabeled_folder(raw, self.dataset_json, check_labeled=True,
                                            cache_file=integrity_cache_file(self.preprocessed_dataset_folder_base))
            raise_if_problems(result, raw)
            if self.local_rank == 0:
                for warning in result.warnings:
                    self.print_to_log_file(f"WARNING: {warning}")

        if self.local_rank == 0:
            check()
        if self.is_ddp:
            dist.barrier()
        if self.local_rank != 0:
            check()

    def ensure_unlabeled_preprocessed(self) -> None:
        """Preprocess the ``imagesUnlabeled`` cases not yet preprocessed, or changed since (rank 0; others wait).

        Runs after :meth:`check_input_files`, which has checked the folder already.
        """
        raw_cases = self._raw_unlabeled_cases()
        _, todo, _ = preprocessing_state(raw_cases, self.unlabeled_preprocessed_folder)
        if todo and self.local_rank == 0:
            self.print_to_log_file(
                f"{len(todo)} image(s) of imagesUnlabeled are not preprocessed (or changed since) for configuration "
                f"{self.configuration_name!r}: running nnUNetv2_pick_preprocess_unlabeled -d "
                f"{self.plans_manager.dataset_name} -c {self.configuration_name} -p {self.plans_manager.plans_name}"
                f" now, into {self.unlabeled_preprocessed_folder}")
            done = preprocess_unlabeled(self.plans_manager.dataset_name, self.configuration_name,
                                        self.plans_manager.plans_name, check=False)
            self.print_to_log_file(f"Preprocessed {len(done)} unlabeled cases.")
        if self.is_ddp:
            dist.barrier()

    def unlabeled_pool(self) -> dict[str, str]:
        """Case id -> preprocessed folder of this fold's unlabeled pool: the fold's ``"unlabeled"`` ids plus the cases
        of ``imagesUnlabeled`` as the folder is now. Preprocessed cases of images no longer in ``imagesUnlabeled`` are
        left out, and the log says which.

        Raises:
            ValueError: if this fold has no unlabeled data (with how to add some), or the split is invalid.
        """
        split_ids = self._split_unlabeled_ids()
        raw_cases = self._raw_unlabeled_cases()
        _, _, orphaned = preprocessing_state(raw_cases, self.unlabeled_preprocessed_folder)
        if orphaned:
            self.print_to_log_file(
                f"Ignored {len(orphaned)} preprocessed unlabeled case(s) in {self.unlabeled_preprocessed_folder} whose "
                f"image is no longer in imagesUnlabeled: {orphaned[:20]}{' ...' if len(orphaned) > 20 else ''}")
        pool = complete_case_folders(split_ids, self.preprocessed_dataset_folder, self.unlabeled_preprocessed_folder,
                                     raw_cases)
        if not pool:
            raise ValueError(
                f"No unlabeled data for {self.plans_manager.dataset_name} fold {self.fold}. Add images to "
                f"$nnUNet_raw/{self.plans_manager.dataset_name}/imagesUnlabeled/ as {{CASE}}_{{XXXX}}"
                f"{self.dataset_json['file_ending']}, or list imagesTr cases under \"unlabeled\" in this fold of "
                f"{join(self.preprocessed_dataset_folder_base, 'splits_final.json')}. To train on labeled data only "
                f"on purpose, use -tr nnUNetTrainer.")
        self.print_to_log_file(
            f"PICK unlabeled pool: {len(pool)} cases ({len(split_ids)} from splits_final.json 'unlabeled', "
            f"{len(pool) - len(split_ids)} from imagesUnlabeled)")
        return pool

    # ------------------------------------------------------------------ checkpoint loading (issue 11)
    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's ``load_checkpoint``, after checking that the checkpoint was trained with the current plans.

        ``--c`` and ``--val`` otherwise either fail with a page of state-dict size mismatches (a changed feature
        list) or, where shapes still match (a changed activation or normalisation), silently continue with another
        network and rewrite the results folder's ``plans.json``.

        Raises:
            ValueError: naming every plans entry that differs and what to do; raised before the weights are loaded
                and before anything is written.
        """
        if isinstance(filename_or_checkpoint, str):
            # memory-mapped: only the small init_args are actually read here; nnU-Net's load reads the rest
            checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False, mmap=True)
        else:
            checkpoint = filename_or_checkpoint
        saved_plans = checkpoint.get("init_args", {}).get("plans")
        if saved_plans is not None:
            differences = plans_differences(saved_plans, self.plans_manager.plans, self.configuration_name)
            if differences:
                refuse_changed_plans(differences, str(filename_or_checkpoint) if isinstance(
                    filename_or_checkpoint, str) else "the checkpoint", self.plans_manager.plans_name,
                    self.preprocessed_dataset_folder_base, self.output_folder_base, self.configuration_name)
        teacher_state = checkpoint.get(EMA_TEACHER_KEY)
        del checkpoint
        super().load_checkpoint(filename_or_checkpoint)
        self._load_ema_teacher(teacher_state)

    def _load_ema_teacher(self, state: dict | None) -> None:
        """Restore the EMA teacher saved with a checkpoint (after the network's weights were loaded)."""
        self.ema_teacher = None
        if self.ema_teacher_decay is None:
            if state is not None:
                self.print_to_log_file(f"The checkpoint holds an EMA teacher; {type(self).__name__} does not use one "
                                       f"(ema_teacher_decay=None): ignored")
            return
        if state is None:
            if not self.is_warmup_epoch():
                self.print_to_log_file("The checkpoint holds no EMA teacher: it restarts as a copy of the loaded "
                                       "network at the next unlabeled step")
            return
        self.ema_teacher = EMATeacher(self._unwrapped_network(), self.ema_teacher_decay)
        self.ema_teacher.load_state_dict(state)

    def _split_unlabeled_ids(self) -> list[str]:
        """``"unlabeled"`` ids of this fold in ``splits_final.json`` (checked against its train and val ids)."""
        if self.fold == "all":
            return []
        path = join(self.preprocessed_dataset_folder_base, "splits_final.json")
        if not os.path.isfile(path):
            # a first training without a splits file: nnU-Net's do_split writes its 5-fold split now (it would a
            # moment later in get_dataloaders); such folds have no "unlabeled" ids
            self.do_split()
        splits = load_json(path)
        if self.fold >= len(splits):
            return []
        return unlabeled_ids_from_split(splits[self.fold], self.fold)

    def _unlabeled_batch_size_this_rank(self) -> int:
        """Split ``unlabeled_batch_size`` over DDP ranks the way nnU-Net splits the labeled batch."""
        if not self.is_ddp:
            return self.unlabeled_batch_size
        world, rank = dist.get_world_size(), dist.get_rank()
        if self.unlabeled_batch_size < world:
            raise ValueError(f"unlabeled_batch_size {self.unlabeled_batch_size} < {world} GPUs; every GPU needs at "
                             f"least one unlabeled patch.")
        return self.unlabeled_batch_size // world + int(rank < self.unlabeled_batch_size % world)

    def get_unlabeled_dataloader(self):
        """Augmenter over unlabeled patches: nnU-Net's loader, training transforms and background workers.

        Patches are drawn uniformly (no foreground oversampling, nothing label-derived), cropped at nnU-Net's
        enlarged initial patch size and augmented by ``get_training_transforms`` without deep-supervision targets.
        The batch dict's ``'data'`` is (B_u, C, X, Y[, Z]) float32; ``'target'`` is unused.

        Raises:
            ValueError: if this fold has no unlabeled data (with how to add some).
        """
        if not self.unlabeled_case_folders:
            self.unlabeled_case_folders = self.unlabeled_pool()
        rotation_for_da, do_dummy_2d_data_aug, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation_for_da, None, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels, regions=None, ignore_label=None)
        use_mask = self.configuration_manager.use_mask_for_norm or []
        if any(use_mask):
            masked_channels = [c for c, m in enumerate(use_mask) if m]
            transforms = ComposeTransforms([OutsideMaskFromZeroImageTransform(masked_channels), transforms])
        loader = nnUNetDataLoader(nnUNetDatasetUnlabeled(self.unlabeled_case_folders),
                                  self._unlabeled_batch_size_this_rank(), initial_patch_size,
                                  self.configuration_manager.patch_size, self.label_manager,
                                  oversample_foreground_percent=0.0, transforms=transforms)
        # unlabeled patches carry no annotation to respect: sample uniformly even if the dataset has an ignore label
        loader.has_ignore = False
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            augmenter = SingleThreadedAugmenter(loader, None)
        else:
            augmenter = NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=n_proc,
                                                     num_cached=max(6, n_proc // 2), seeds=None,
                                                     pin_memory=self.device.type == "cuda", wait_time=0.002)
        next(augmenter)
        return augmenter

    def get_dataloaders(self):
        # the pool first: a refusal (no unlabeled data, a bad split) is then the last thing the user sees, not buried
        # under the tracebacks of nnU-Net's labeled data-loader workers shutting down
        self.unlabeled_case_folders = self.unlabeled_pool()
        dataloader_train, dataloader_val = super().get_dataloaders()
        self.dataloader_unlabeled = self.get_unlabeled_dataloader()
        return dataloader_train, dataloader_val

    # ------------------------------------------------------------------ training loop hooks
    def on_train_start(self) -> None:
        self.check_input_files()
        self.ensure_unlabeled_preprocessed()
        super().on_train_start()
        self._batch_dim_dynamic = self._unlabeled_batch_size_this_rank() != self.batch_size
        self.print_to_log_file(
            f"PICK settings: lambda_mim={self.lambda_mim}, num_warmup_epochs={self.num_warmup_epochs} of "
            f"{self.num_epochs}, unlabeled_batch_size={self.unlabeled_batch_size} (labeled {self.batch_size} per "
            f"GPU), masking={self.masking!r}, unlabeled_start_min_dice={self.unlabeled_start_min_dice} "
            f"({self.unlabeled_start_criterion}), "
            f"unlabeled_rampup_fraction={self.unlabeled_rampup_fraction}, "
            f"startup_masking_min_fraction={self.startup_masking_min_fraction}, "
            f"unlabeled_phase_lr={self.unlabeled_phase_lr}")

    def on_train_end(self) -> None:
        if self.dataloader_unlabeled is not None and self.local_rank == 0:
            # nnU-Net's loop has advanced current_epoch past the last epoch it trained
            self.save_mim_figure(join(self.output_folder, "mim_final.png"), self.current_epoch - 1, final=True)
        super().on_train_end()
        if isinstance(getattr(self.dataloader_unlabeled, "loader", None), NonDetMultiThreadedAugmenter):
            self.dataloader_unlabeled._finish()
        self.dataloader_unlabeled = None

    def train_step(self, batch: dict) -> dict:
        """One PICK iteration: labeled branches (PICK Eq. 11), then unlabeled branches (Eq. 10) after warm-up.

        Five trained passes (labeled: primary, MIM, auxiliary; unlabeled: MIM, auxiliary) plus one no-grad primary
        pass for the unlabeled pseudo-label. Every cross-link between passes is detached, so the gradient of
        ``L = L_sup + L_unsup`` (Eq. 12) is the sum of the per-branch gradients; each branch is back-propagated as
        soon as its loss exists, so at most one branch's activations are alive. One optimizer step follows,
        with nnU-Net's gradient clipping (and GradScaler on CUDA).

        Args:
            batch: nnU-Net's labeled batch, ``'data'`` (B, C, X, Y[, Z]) float32 and ``'target'`` (deep-supervision
                list of) (B, 1, X, Y[, Z]) labels, or region one-hots.

        Returns:
            ``'loss'`` (the total L) and PICK's unweighted terms (:data:`~nnunet_pick.training.progress.PICK_CURVES`)
            as numpy scalars; unlabeled terms are NaN in warm-up epochs.
        """
        warmup = self.is_warmup_epoch()
        self._labeled_cases = case_ids(batch)  # named if the step is skipped (_count_skipped_step)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        data, target = self._mix_labeled_batch(data, target)

        self.optimizer.zero_grad(set_to_none=True)
        with self._without_ddp_gradient_sync():
            terms = self._labeled_branches(data, target)
            if warmup:
                nan = torch.tensor(math.nan, device=self.device)
                terms.update(train_loss_mim_unlabeled=nan, train_loss_aux_unlabeled=nan,
                             masked_fraction_unlabeled=nan, confident_fraction_unlabeled=nan)
            else:
                unlabeled = next(self.dataloader_unlabeled)["data"].to(self.device, non_blocking=True)
                terms.update(self._unlabeled_branches(self._mix_unlabeled_batch(unlabeled)))
        terms["warmup"] = torch.tensor(float(warmup), device=self.device)
        # one device->host copy per step for all logged values
        values = dict(zip(terms, torch.stack([t.float() for t in terms.values()]).cpu().numpy(), strict=True))
        total = sum(w * values[k] for k, w in self._loss_weights(warmup).items())
        stepped = self._all_ranks_agree(math.isfinite(total)) and self._optimizer_step()
        self._count_skipped_step(stepped, total, values)
        if stepped and self.ema_teacher is not None:
            self.ema_teacher.update(self._unwrapped_network())
        self.note_iteration_done()  # progress lines (this step replaces, not extends, nnU-Net's train_step)
        return {"loss": np.array(total), **values}

    def _without_ddp_gradient_sync(self):
        """DDP's ``no_sync`` for the whole step (a no-op context without DDP).

        Each branch is back-propagated on its own and touches only some decoders; DDP's reducer (built by nnU-Net
        with ``find_unused_parameters=False``) expects every parameter in every backward and would fail or hang. So
        the step's backward passes accumulate locally and :meth:`_average_gradients_over_ranks` averages the
        finished gradients once, in one collective, before the optimizer step.
        """
        return self.network.no_sync() if self.is_ddp else nullcontext()

    def _average_gradients_over_ranks(self) -> None:
        """Average every parameter's gradient over DDP ranks (one flattened all-reduce; no-op without DDP).

        Parameters without a gradient (nnU-Net's zero-weighted lowest deep-supervision head) have none on every rank,
        since all ranks run the same branches; they stay ``None`` as in a single-process step.
        """
        if not self.is_ddp:
            return
        grads = [p.grad for p in self.network.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        for g, averaged in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
            g.copy_(averaged.view_as(g))

    def _all_ranks_agree(self, ok: bool) -> bool:
        """True only if ``ok`` holds on every DDP rank (so that all ranks step or skip together)."""
        if not self.is_ddp:
            return ok
        flag = torch.tensor(float(ok), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _count_skipped_step(self, stepped: bool, total: float, values: dict) -> None:
        """Log a skipped step; stop after ``max_nonfinite_steps_in_a_row`` consecutive ones.

        Raises:
            RuntimeError: when the limit is reached, before any checkpoint of the poisoned state can be written.
        """
        if stepped:
            self._nonfinite_in_a_row = 0
            return
        self.optimizer.zero_grad(set_to_none=True)
        self._nonfinite_in_a_row += 1
        self.print_to_log_file(
            f"WARNING: non-finite loss or gradient in epoch {self.current_epoch} (L = {total}; terms "
            f"{ {k: float(v) for k, v in values.items()} }): optimizer step skipped "
            f"({self._nonfinite_in_a_row} in a row). Cases of this step: {self._cases_of_this_step()}")
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps_in_a_row:
            raise RuntimeError(
                f"{self._nonfinite_in_a_row} training steps in a row had a non-finite loss or gradient (epoch "
                f"{self.current_epoch}); training stopped without writing a checkpoint of that state. The last "
                f"checkpoint in {self.output_folder} is intact: check the data (e.g. intensity outliers, constant "
                f"images) and continue with --c.")

    def _loss_weights(self, warmup: bool) -> dict[str, float]:
        """Weight of each logged term in L (PICK Eqs. 10-12); terms of disabled branches are left out."""
        weights = {"train_loss_seg": 1.0}
        parts = {"labeled": 1.0} if warmup else {"labeled": 1.0, "unlabeled": self.unlabeled_weight()}
        for part, w in parts.items():
            if self.train_mim_decoder:
                weights[f"train_loss_mim_{part}"] = w * self.lambda_mim
            if self.train_aux_decoder:
                weights[f"train_loss_aux_{part}"] = w
        return weights

    def _mix_labeled_batch(self, data: torch.Tensor, target):
        """CutMix (with probability ``cutmix_probability``) and Fourier amplitude mixing (``fourier_mix_eta``)."""
        data, target = random_cutmix(data, target, self.cutmix_probability)
        return self._mix_unlabeled_batch(data), target

    def _mix_unlabeled_batch(self, data: torch.Tensor) -> torch.Tensor:
        """Fourier amplitude mixing with ``λ ~ U(0, fourier_mix_eta)`` (off when the eta is 0)."""
        if self.fourier_mix_eta <= 0:
            return data
        lam = torch.rand(data.shape[0], device=data.device) * self.fourier_mix_eta
        return fourier_amplitude_mix(data, lam, torch.randperm(data.shape[0], device=data.device))

    def _segmentation_mask(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pseudo-label, masked) from primary logits (PICK Eq. 5 and the configured masking strategy)."""
        has_regions = self.label_manager.has_regions
        pseudo = pseudo_label(logits, has_regions=has_regions)
        masked = compute_mask(self.masking, pseudo, has_regions=has_regions)
        return pseudo, with_startup_blocks(masked, self.startup_masking_min_fraction)

    def _mim_branch(self, image: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked image -> MIM decoder -> masked L1 (PICK Eqs. 6-8); back-propagates λ·L_mim.

        Returns:
            (unweighted L_mim, detached scalar; the detached reconstruction (B, C, X, Y[, Z])).
        """
        with self._autocast():
            reconstruction = self._forward(apply_mask(image, masked), branch="mim")
        if self.is_ddp:
            # the mean over the masked voxels of all ranks, times the world size because gradients are averaged
            # over ranks (_average_gradients_over_ranks): the ranks' losses then sum to the whole batch's L_mim
            count = masked.sum().to(torch.float32)
            dist.all_reduce(count)
            loss = masked_l1_loss(reconstruction, image, masked, masked_voxels=count) * dist.get_world_size()
        else:
            loss = masked_l1_loss(reconstruction, image, masked)
        self._backward(self._branch_weight * self.lambda_mim * loss)
        return loss.detach(), reconstruction.detach()

    def _aux_branch(self, image: torch.Tensor, reconstruction: torch.Tensor, masked: torch.Tensor,
                    target: torch.Tensor, aux_loss: nn.Module | None = None) -> torch.Tensor:
        """Reconstructed image -> auxiliary decoder -> Dice+CE against ``target`` (PICK Eq. 9); back-propagates.

        ``aux_loss``: the loss to use (default ``self.aux_loss``; the unlabeled branch passes the one with an ignore
        label when ``unlabeled_confidence_threshold`` is on).
        """
        with self._autocast():
            logits = self._forward(paste_reconstruction(image, reconstruction, masked), branch="aux")
            loss = (aux_loss or self.aux_loss)(logits, target)
        self._backward(self._branch_weight * loss)
        return loss.detach()

    def _labeled_branches(self, data: torch.Tensor, target) -> dict[str, torch.Tensor]:
        """PICK Eq. 11: L_seg (deep-supervised, nnU-Net's loss), λ·L_mim^l and L_aux^l against the ground truth.

        The mask comes from the primary decoder's own detached prediction on the labeled batch (Sec. 3.3), taken
        from the same forward pass that computes L_seg.
        """
        with self._autocast():
            output = self._forward(data)
            loss_seg = self.loss(output, target)
        logits = output[0] if isinstance(output, (list, tuple)) else output
        _, masked = self._segmentation_mask(logits)
        full_res_target = target[0] if isinstance(target, list) else target
        if self._counts_training_dice():
            counts = training_dice_counts(logits, full_res_target, has_regions=self.label_manager.has_regions,
                                          ignore_label=self.label_manager.ignore_label)
            self._train_dice_counts = counts if self._train_dice_counts is None else self._train_dice_counts + counts
        self._backward(loss_seg)
        del output, logits
        loss_mim, loss_aux = self._mim_and_aux_branches(data, masked, full_res_target)
        return {"train_loss_seg": loss_seg.detach(), "train_loss_mim_labeled": loss_mim,
                "train_loss_aux_labeled": loss_aux, "masked_fraction_labeled": masked.float().mean()}

    def _mim_and_aux_branches(self, image: torch.Tensor, masked: torch.Tensor, target: torch.Tensor,
                              aux_loss: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The MIM branch, then the auxiliary branch on its pasted reconstruction (both back-propagated).

        Ablations (PICK Table 6): without the MIM decoder the auxiliary decoder sees the masked image itself;
        a disabled branch's loss is NaN (not computed).
        """
        nan = torch.tensor(math.nan, device=image.device)
        if self.train_mim_decoder:
            loss_mim, reconstruction = self._mim_branch(image, masked)
        else:
            loss_mim, reconstruction = nan, torch.zeros_like(image)  # pasted into the mask: the masked image
        loss_aux = self._aux_branch(image, reconstruction, masked, target, aux_loss) if self.train_aux_decoder \
            else nan
        return loss_mim, loss_aux

    def _unlabeled_branches(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        """PICK Eq. 10: pseudo-label without gradient, then λ·L_mim^u and L_aux^u against the pseudo-label.

        The primary decoder gets no gradient from unlabeled data.
        """
        with torch.no_grad(), self._autocast():
            logits = self._pseudo_label_logits(data)
        pseudo, masked = self._segmentation_mask(logits)
        has_regions = self.label_manager.has_regions
        if self.unlabeled_confidence_threshold > 0:
            kept = confident_voxels(logits, self.unlabeled_confidence_threshold, has_regions=has_regions)
            aux_loss, ignore_value = self.unlabeled_aux_loss()
            target = auxiliary_target(pseudo, has_regions=has_regions, has_ignore_label=True, kept=kept,
                                      ignore_value=ignore_value)
            kept_fraction = kept.float().mean()
        else:
            aux_loss = None
            target = auxiliary_target(pseudo, has_regions=has_regions,
                                      has_ignore_label=self.label_manager.has_ignore_label)
            kept_fraction = torch.ones((), device=data.device)
        del logits
        self._branch_weight = self.unlabeled_weight()
        try:
            loss_mim, loss_aux = self._mim_and_aux_branches(data, masked, target, aux_loss)
        finally:
            self._branch_weight = 1.0
        return {"train_loss_mim_unlabeled": loss_mim, "train_loss_aux_unlabeled": loss_aux,
                "masked_fraction_unlabeled": masked.float().mean(), "confident_fraction_unlabeled": kept_fraction}

    def _pseudo_label_logits(self, data: torch.Tensor) -> torch.Tensor:
        """Full-resolution primary logits (B, heads, X, Y[, Z]) of unlabeled images (B, C, X, Y[, Z]) that the
        pseudo-label, the mask and the confidence come from: the network's own (PICK Eq. 5) or, with
        ``ema_teacher_decay`` set, the EMA teacher's (made from the network on first use). Call without gradient."""
        if self.ema_teacher_decay is None:
            output = self._forward(data)
            return output[0] if isinstance(output, (list, tuple)) else output
        if self.ema_teacher is None:
            self.ema_teacher = EMATeacher(self._unwrapped_network(), self.ema_teacher_decay)
            self.print_to_log_file(f"EMA teacher (decay {self.ema_teacher_decay}) made from the network in epoch "
                                   f"{self.current_epoch}; it gives the unlabeled pseudo-labels from now on")
        return self.ema_teacher(data)

    def unlabeled_aux_loss(self) -> tuple[nn.Module, int | None]:
        """The auxiliary loss of unlabeled data with an ignore label (for ``unlabeled_confidence_threshold``).

        nnU-Net's own ``_build_loss`` (so a subclass's loss is respected) without deep supervision, built for the
        dataset's labels plus an ignore label: the dataset's own if it has one (then it is ``self.aux_loss``), else
        the value after the highest label, as nnU-Net requires of ignore labels.

        Returns:
            (loss, ignore value): the value marks left-out voxels in label targets; None for regions, whose loss
            reads an extra last channel instead (:func:`nnunet_pick.losses.auxiliary_target`).
        """
        if self._unlabeled_aux_loss is None:
            manager = self.label_manager
            if manager.has_ignore_label:
                self._unlabeled_aux_loss = (self.aux_loss, None if manager.has_regions else manager.ignore_label)
            else:
                ignore = int(max(manager.all_labels)) + 1
                with_ignore = self.plans_manager.get_label_manager(
                    {**self.dataset_json, "labels": {**self.dataset_json["labels"], "ignore": ignore}})
                saved = (self.label_manager, self.enable_deep_supervision)
                try:
                    self.label_manager, self.enable_deep_supervision = with_ignore, False
                    loss = self._build_loss()
                finally:
                    self.label_manager, self.enable_deep_supervision = saved
                self._unlabeled_aux_loss = (loss, None if manager.has_regions else ignore)
        return self._unlabeled_aux_loss

    def _optimizer_step(self) -> bool:
        """nnU-Net's update: (unscale,) clip the gradient norm, step (and update the scaler).

        Returns:
            False if the step was skipped because the gradient is not finite. With a GradScaler (CUDA) the scaler
            skips such steps itself and lowers its scale, which is normal in mixed precision and not reported.
        """
        self._average_gradients_over_ranks()
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
            return True
        norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip_norm)
        if not torch.isfinite(norm):  # the averaged gradients, hence the norm, are the same on every rank
            return False
        self.optimizer.step()
        return True

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to ``<filename>.partial`` and renamed: a write killed half-way never leaves
        a truncated ``checkpoint_*.pth`` that ``--c`` or the predictor would load."""
        partial = filename + ".partial"
        super().save_checkpoint(partial)
        if self.local_rank == 0 and os.path.isfile(partial):
            if self.ema_teacher is not None:
                # nnU-Net's save_checkpoint has no hook for extra state: the teacher is added to the file it wrote,
                # under a key nnU-Net's predictor and -pretrained_weights do not read
                checkpoint = torch.load(partial, map_location="cpu", weights_only=False)
                checkpoint[EMA_TEACHER_KEY] = self.ema_teacher.state_dict()
                torch.save(checkpoint, partial)
            os.replace(partial, filename)

    def _counts_training_dice(self) -> bool:
        """The start criterion reads the labeled training batches' Dice (counted in every epoch, for the log)."""
        return self.unlabeled_start_min_dice is not None and self.unlabeled_start_criterion == "training"

    def on_train_epoch_start(self) -> None:
        self._train_dice_counts = None
        super().on_train_epoch_start()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        for key in PICK_CURVES:
            values = np.array([float(o[key]) for o in train_outputs])
            if self.is_ddp:
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, values)
                values = np.concatenate(gathered)
            self.logger.log(key, _nanmean(values), self.current_epoch)
        dice: list[float] = []
        if self._counts_training_dice():
            counts = self._train_dice_counts
            if counts is None:  # no labeled step on this rank (cannot happen with nnU-Net's loop; kept collective)
                counts = torch.zeros((3, len(self.label_manager.foreground_regions if self.label_manager.has_regions
                                              else self.label_manager.foreground_labels)), device=self.device)
            if self.is_ddp:
                dist.all_reduce(counts)
            dice = dice_from_counts(counts)
        self.logger.log(TRAIN_DICE_KEY, dice, self.current_epoch)

    def on_epoch_end(self) -> None:
        epoch = self.current_epoch
        if self.local_rank == 0 and self.mim_figure_every > 0 and (epoch + 1) % self.mim_figure_every == 0:
            self.save_mim_figure(join(self.output_folder, f"mim_epoch_{epoch:04d}.png"), epoch)
        super().on_epoch_end()  # nnU-Net's lines, then the mixin's (epoch_detail_lines below and the summary)

    def loss_note(self) -> str:
        return ("train_loss is PICK's total, the sum of the terms in the 'PICK epoch' line (L_seg + lambda_mim x L_mim "
                "+ L_aux, labeled and, after warm-up, unlabeled): it starts above val_loss, rises when the unlabeled "
                "terms start (not a divergence) and can go below -1; val_loss and L_seg are nnU-Net's Dice + "
                "cross-entropy loss, which adds -Dice: they turn negative once the Dice term dominates (lower is "
                "better, about -1 is the best possible); compare L_seg with val_loss")

    def progress_legend(self) -> str:
        return (super().progress_legend() + "; L_mim is the L1 error of the "
                "reconstructed masked voxels and L_aux the auxiliary decoder's Dice + cross-entropy; only voxels "
                "predicted as foreground are masked, so L_mim and the masked fraction are 0 while the network "
                "predicts no foreground yet (common in the first epochs, when an untrained network may also mark most of "
                "a patch as foreground); unlabeled terms are n/a in warm-up "
                "epochs, which use labeled data only")

    def estimate_note(self) -> str:
        if self.is_warmup_epoch():  # no epoch with unlabeled data has run, so the ratio is the pass count's
            return (f"; epochs after warm-up also train on unlabeled batches: counted as "
                    f"{self._pick_epoch_cost_ratio():.1f} x a warm-up epoch (from the passes of a step; measured once "
                    f"one has run)")
        return ""

    def epoch_cost_weights(self, epochs: range) -> np.ndarray:
        """1 for a warm-up epoch, :meth:`_pick_epoch_cost_ratio` for an epoch with unlabeled data (for the time
        estimates of :class:`~nnunet_pick.training.progress_lines.TrainingProgressMixin`; the phase start and the
        ratio are computed once per call). While a Dice criterion has not started the unlabeled phase yet, it is
        assumed to start at ``num_warmup_epochs`` or the next epoch."""
        start = self.unlabeled_phase_start()
        if start is None:
            start = max(self.num_warmup_epochs, self.current_epoch + 1)
        return np.where(np.asarray(epochs) < start, 1.0, self._pick_epoch_cost_ratio())

    def _pick_epoch_cost_ratio(self) -> float:
        """Duration of an epoch with unlabeled data over a warm-up epoch: measured in this run once both kinds ran,
        before that the ratio of a step's passes, counting a trained pass (forward + backward) as 3 and a no-grad
        forward as 1: warm-up 3 trained labeled passes (primary, MIM, auxiliary) = 9 per labeled sample; with
        unlabeled data + 7 per unlabeled sample (pseudo-label forward, MIM and auxiliary passes), so 16 / 9 = 1.8
        with equal batches (the new-user test of the demo measured 1.8: 14-20 s warm-up epochs, 30-34 s after)."""
        measured = self._measured_pick_epoch_ratio()
        if measured is not None:
            return measured
        labeled = self.configuration_manager.batch_size
        return (9 + 7 * self.unlabeled_batch_size / labeled) / 9

    def _measured_pick_epoch_ratio(self) -> float | None:
        """Mean duration of this run's finished epochs with unlabeled data over that of its warm-up epochs; None
        until both kinds have run (in this process: durations from before a --c restart are kept in the log)."""
        start = self.unlabeled_phase_start()
        if start is None:
            return None  # still warming up
        log = self.logger.local_logger.my_fantastic_logging
        ends = np.asarray(log["epoch_end_timestamps"], dtype=float)  # the running epoch has a start but no end yet
        durations = ends - np.asarray(log["epoch_start_timestamps"][:len(ends)], dtype=float)
        warmup, pick = durations[:start], durations[start:]
        if not len(warmup) or not len(pick):
            return None
        return float(pick.mean() / warmup.mean())

    def epoch_detail_lines(self, epoch: int) -> list[str]:
        """PICK's terms of ``epoch``: phase, the unweighted losses and the fraction of voxels masked."""
        log = self.logger.local_logger.my_fantastic_logging

        def fmt(key: str) -> str:
            value = log[key][epoch]
            return "n/a" if math.isnan(value) else f"{value:.4f}"

        phase = "warm-up (labeled only)" if log["warmup"][epoch] else "PICK (labeled + unlabeled)"
        return [(f"PICK epoch {epoch}: {phase}; L_seg {fmt('train_loss_seg')}; "
                 f"L_mim labeled {fmt('train_loss_mim_labeled')} unlabeled {fmt('train_loss_mim_unlabeled')}; "
                 f"L_aux labeled {fmt('train_loss_aux_labeled')} unlabeled {fmt('train_loss_aux_unlabeled')}; "
                 f"masked fraction unlabeled {fmt('masked_fraction_unlabeled')} "
                 f"labeled {fmt('masked_fraction_labeled')}")]

    @torch.no_grad()
    def save_mim_figure(self, path: str, epoch: int, *, final: bool = False) -> None:
        """Run an unlabeled batch through all branches (no gradient) and save :func:`save_mim_figure`'s PNG of the
        patch with the most masked voxels (a patch without predicted foreground shows nothing of MIM).

        Args:
            path: the PNG to write.
            epoch: the epoch just trained, counted from 0 as in the training log's ``Epoch N``.
            final: whether it is the last epoch's figure (``mim_final.png``).
        """
        network = self._unwrapped_network()
        was_training = network.training
        network.eval()
        try:
            batch = next(self.dataloader_unlabeled)["data"].to(self.device)
            with self._autocast():
                output = network(batch)
                logits = output[0] if isinstance(output, (list, tuple)) else output
                _, masked_batch = self._segmentation_mask(logits)
                best = int(masked_batch.flatten(1).sum(1).argmax())
                image, masked = batch[best:best + 1], masked_batch[best:best + 1]
                masked_image = apply_mask(image, masked)
                reconstruction = network(masked_image, branch="mim")
                aux_logits = network(paste_reconstruction(image, reconstruction, masked), branch="aux")
            phase = "warm-up: labeled data only" if self.is_warmup_epoch(epoch) else "labeled + unlabeled data"
            when = "final, " if final else ""
            save_mim_figure(path, image[0], masked[0], masked_image[0], reconstruction[0], aux_logits[0],
                            has_regions=self.label_manager.has_regions, class_names=self._output_channel_names(),
                            title=f"{type(self).__name__}, after epoch {epoch} ({when}{phase}; epochs 0-"
                                  f"{self.num_epochs - 1}), unlabeled patch")
        finally:
            network.train(was_training)

    def _output_channel_names(self) -> list[str] | None:
        """dataset.json's name of each label output channel (background first); None for regions."""
        if self.label_manager.has_regions:
            return None
        by_value = {int(v): k for k, v in self.dataset_json["labels"].items() if not isinstance(v, (list, tuple))}
        names = [by_value.get(int(v), f"label {v}") for v in self.label_manager.all_labels]
        return names if len(names) == self.label_manager.num_segmentation_heads else None
