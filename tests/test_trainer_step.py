"""The PICK training step on real Hippocampus batches from nnU-Net's own loaders (in process, CPU)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers import make_trainer
from PIL import Image

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.training.progress import PICK_CURVES
from nnunet_pick.unlabeled.dataset import nnUNetDatasetUnlabeled


@pytest.fixture(scope="module")
def trainer(hippocampus, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_n_proc_DA", "0")  # loaders in this process
        torch.manual_seed(0)
        t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d", num_epochs=4, num_iterations_per_epoch=2,
                         num_val_iterations_per_epoch=1)
        t.on_train_start()
        yield t


def apply_settings(t, monkeypatch, settings: dict) -> None:
    """Apply a variant's settings to the shared trainer for one test. ``num_warmup_epochs`` is a property whose
    getter derives a value from ``warmup_fraction``; patching it directly would restore that derived value as an
    explicit setting after the test (and fix the warm-up of every later test), so its private field is patched."""
    for k, v in settings.items():
        monkeypatch.setattr(t, "_num_warmup_epochs" if k == "num_warmup_epochs" else k, v)


class Repeat:
    """An iterator that returns the same batch and counts how often it was asked."""

    def __init__(self, batch):
        self.batch, self.calls = batch, 0

    def __next__(self):
        self.calls += 1
        return self.batch


def reference_single_backward(t: nnUNetTrainerPICK, batch: dict, unlabeled: torch.Tensor) -> None:
    """PICK Eqs. 5-12 written out as one graph, back-propagated once (the spec's definition of the gradient)."""
    net, lam = t.network, t.lambda_mim
    x, y = batch["data"], batch["target"]
    out = net(x)
    loss_seg = t.loss(out, y)
    m_l = out[0].detach().argmax(1, keepdim=True) != 0
    c = x.shape[1]
    rec_l = net(x * ~m_l, branch="mim")
    mim_l = ((rec_l - x).abs() * m_l).sum() / (c * m_l.sum())
    aux_l = t.aux_loss(net(x * ~m_l + rec_l.detach() * m_l, branch="aux"), y[0])
    with torch.no_grad():
        pseudo_u = net(unlabeled)[0].argmax(1, keepdim=True)
    m_u = pseudo_u != 0
    rec_u = net(unlabeled * ~m_u, branch="mim")
    mim_u = ((rec_u - unlabeled).abs() * m_u).sum() / (c * m_u.sum())
    aux_u = t.aux_loss(net(unlabeled * ~m_u + rec_u.detach() * m_u, branch="aux"), pseudo_u)
    total = (loss_seg + lam * mim_l + aux_l) + (lam * mim_u + aux_u)
    total.backward()


def test_branch_by_branch_backward_equals_one_backward_of_the_summed_loss(trainer, monkeypatch):
    t = trainer
    t.lambda_mim = 0.7
    t.current_epoch = t.num_warmup_epochs  # first epoch after warm-up
    batch = next(t.dataloader_train)
    unlabeled = next(t.dataloader_unlabeled)
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat(unlabeled))
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)  # keep the accumulated gradients
    state = copy.deepcopy(t.network.state_dict())

    out = t.train_step(batch)
    assert 0 < out["masked_fraction_labeled"] < 1
    assert 0 < out["masked_fraction_unlabeled"] < 1
    # nnU-Net gives the lowest deep-supervision output weight 0, so that head has no gradient in either computation
    branchwise = {n: None if p.grad is None else p.grad.clone() for n, p in t.network.named_parameters()}
    assert sum(g is None for g in branchwise.values()) == 2  # weight and bias of that head

    t.network.load_state_dict(state)
    t.optimizer.zero_grad(set_to_none=True)
    reference_single_backward(t, batch, unlabeled["data"])
    for name, p in t.network.named_parameters():
        if branchwise[name] is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(branchwise[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    # the logged total is Eq. 12 with the unweighted terms
    expected_total = out["train_loss_seg"] + 0.7 * out["train_loss_mim_labeled"] + out["train_loss_aux_labeled"] \
        + 0.7 * out["train_loss_mim_unlabeled"] + out["train_loss_aux_unlabeled"]
    assert float(out["loss"]) == pytest.approx(float(expected_total), rel=1e-6)
    t.optimizer.zero_grad(set_to_none=True)
    t.lambda_mim = 1.0


def test_primary_decoder_gets_no_gradient_from_unlabeled_data(trainer):
    t = trainer
    t.optimizer.zero_grad(set_to_none=True)
    t._unlabeled_branches(next(t.dataloader_unlabeled)["data"])
    net = t._unwrapped_network()
    encoder_params = {id(p) for p in net.encoder.parameters()}
    primary_only = [p for p in net.decoder.parameters() if id(p) not in encoder_params]
    assert primary_only
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in primary_only)
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.mim_decoder.seg_layers[-1].parameters())
    assert all(p.grad is not None for p in net.aux_decoder.seg_layers[-1].parameters())
    t.optimizer.zero_grad(set_to_none=True)


def test_all_background_pseudo_labels_give_finite_losses_and_zero_mim_loss(trainer, monkeypatch):
    t = trainer
    t.current_epoch = t.num_warmup_epochs
    head = t._unwrapped_network().decoder.seg_layers[-1]  # full-resolution primary head
    saved = copy.deepcopy(head.state_dict())
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([50.0, -50.0, -50.0]))
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    out = t.train_step(next(t.dataloader_train))
    assert out["masked_fraction_labeled"] == 0
    assert out["masked_fraction_unlabeled"] == 0
    assert out["train_loss_mim_labeled"] == 0.0
    assert out["train_loss_mim_unlabeled"] == 0.0
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES))
    assert all(torch.isfinite(p.grad).all() for p in t.network.parameters() if p.grad is not None)
    head.load_state_dict(saved)
    t.optimizer.zero_grad(set_to_none=True)


def test_warmup_uses_labeled_data_only(trainer, monkeypatch):
    t = trainer
    counter = Repeat(next(t.dataloader_unlabeled))
    monkeypatch.setattr(t, "dataloader_unlabeled", counter)
    t.current_epoch = 0
    assert t.num_warmup_epochs == 1  # 25 % of 4 epochs
    out = t.train_step(next(t.dataloader_train))
    assert counter.calls == 0
    assert out["warmup"] == 1.0
    assert all(math.isnan(out[k]) for k in ("train_loss_mim_unlabeled", "train_loss_aux_unlabeled",
                                             "masked_fraction_unlabeled"))
    assert math.isfinite(out["train_loss_mim_labeled"])
    assert math.isfinite(out["train_loss_aux_labeled"])
    t.current_epoch = 1
    out = t.train_step(next(t.dataloader_train))
    assert counter.calls == 1
    assert out["warmup"] == 0.0
    assert math.isfinite(out["train_loss_aux_unlabeled"])


def test_num_warmup_epochs_follows_num_epochs_unless_set(hippocampus):
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d")
    assert t.num_warmup_epochs == 250  # 25 % of nnU-Net's 1000
    t.num_epochs = 10
    assert t.num_warmup_epochs == 2  # round(2.5) -> 2 (banker's rounding, as Python's round)
    t.num_warmup_epochs = 7
    t.num_epochs = 100
    assert t.num_warmup_epochs == 7


def test_the_paper_trainer_pins_every_recipe_setting_a_variant_changes(hippocampus):
    """nnUNetTrainerPICK_paper keeps the paper's recipe when the default changes: every setting some variant changes
    (apart from the schedule's length and learning rate, which stay nnU-Net's) has its paper value, and today the
    default nnUNetTrainerPICK is that recipe (no variant has beaten it on the accuracy protocol)."""
    from nnunet_pick.training.variants import PAPER_SETTINGS, TRAINERS

    schedule = {"num_epochs", "initial_lr", "num_iterations_per_epoch", "num_val_iterations_per_epoch",
                "mim_figure_every", "schedule_factor"}
    changed = {k for cls in TRAINERS.values() for k in getattr(cls, "pick_settings", {})} - schedule
    assert changed <= set(PAPER_SETTINGS), f"pin these in PAPER_SETTINGS: {sorted(changed - set(PAPER_SETTINGS))}"
    paper = make_trainer(TRAINERS["nnUNetTrainerPICK_paper"], hippocampus, "2d")
    default = make_trainer(nnUNetTrainerPICK, hippocampus, "2d")
    for t in (paper, default):
        for k, v in PAPER_SETTINGS.items():
            assert getattr(t, "_num_warmup_epochs" if k == "num_warmup_epochs" else k) == v, k
    assert paper.num_warmup_epochs == default.num_warmup_epochs == 250
    assert (paper.num_epochs, paper.initial_lr) == (default.num_epochs, default.initial_lr) == (1000, 1e-2)


def test_epoch_logging_progress_png_and_mim_figure(trainer, tmp_path):
    t = trainer
    t.current_epoch = len(t.logger.get_value("train_losses", step=None))
    t.on_train_epoch_start()
    outputs = [t.train_step(next(t.dataloader_train)) for _ in range(2)]
    t.on_train_epoch_end(outputs)
    for key in PICK_CURVES:
        logged = t.logger.get_value(key, step=-1)
        values = [float(o[key]) for o in outputs]
        if all(math.isnan(v) for v in values):
            assert math.isnan(logged)
        else:
            assert logged == pytest.approx(float(np.nanmean(values)))
    assert t.logger.get_value("train_losses", step=-1) == pytest.approx(float(np.mean([o["loss"] for o in outputs])))
    # the plot needs one value per key and epoch; fill nnU-Net's own keys for this epoch
    for key in ("mean_fg_dice", "val_losses", "epoch_start_timestamps", "epoch_end_timestamps"):
        t.logger.log(key, 0.5, t.current_epoch)
    t.logger.log("dice_per_class_or_region", [0.5, 0.5], t.current_epoch)
    t.logger.plot_progress_png(str(tmp_path))
    width, height = Image.open(tmp_path / "progress.png").size
    assert width == 2 * 1500
    assert height == 2700
    t.save_mim_figure(str(tmp_path / "mim.png"), t.current_epoch)
    assert Image.open(tmp_path / "mim.png").format == "PNG"


@pytest.mark.parametrize(("settings", "disabled_decoder", "nan_terms"), [
    ({"train_aux_decoder": False}, "aux_decoder", ("train_loss_aux_labeled", "train_loss_aux_unlabeled")),
    ({"train_mim_decoder": False}, "mim_decoder", ("train_loss_mim_labeled", "train_loss_mim_unlabeled")),
])
def test_ablations_leave_out_one_decoder(trainer, monkeypatch, settings, disabled_decoder, nan_terms):
    t = trainer
    apply_settings(t, monkeypatch, settings)
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    t.current_epoch = t.num_warmup_epochs
    t.optimizer.zero_grad(set_to_none=True)
    out = t.train_step(next(t.dataloader_train))
    assert all(math.isnan(out[k]) for k in nan_terms)
    kept = [k for k in ("train_loss_seg", "train_loss_mim_labeled", "train_loss_aux_labeled",
                        "train_loss_mim_unlabeled", "train_loss_aux_unlabeled") if k not in nan_terms]
    assert all(math.isfinite(out[k]) for k in kept)
    weights = {"train_loss_seg": 1, "train_loss_mim_labeled": t.lambda_mim, "train_loss_mim_unlabeled": t.lambda_mim,
               "train_loss_aux_labeled": 1, "train_loss_aux_unlabeled": 1}
    assert float(out["loss"]) == pytest.approx(sum(weights[k] * float(out[k]) for k in kept), rel=1e-6)
    head = getattr(t._unwrapped_network(), disabled_decoder).seg_layers[-1]
    assert all(p.grad is None for p in head.parameters())
    t.optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["nnUNetTrainerPICK_randomMaskV1", "nnUNetTrainerPICK_randomMaskV2",
                                  "nnUNetTrainerPICK_backgroundMask", "nnUNetTrainerPICK_CutMix",
                                  "nnUNetTrainerPICK_Fourier"])
def test_strategy_variants_run_a_finite_step(trainer, monkeypatch, name):
    import nnunet_pick

    t = trainer
    apply_settings(t, monkeypatch, getattr(nnunet_pick, name).pick_settings)
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    t.current_epoch = t.num_warmup_epochs
    out = t.train_step(next(t.dataloader_train))
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES))
    if name.startswith("nnUNetTrainerPICK_randomMask"):
        assert out["masked_fraction_unlabeled"] == pytest.approx(0.6, abs=0.1)
    if name == "nnUNetTrainerPICK_backgroundMask":
        assert out["masked_fraction_unlabeled"] > 0.5  # the hippocampus is a small part of the patch
    t.optimizer.zero_grad(set_to_none=True)


def test_non_finite_steps_are_skipped_then_training_stops(trainer, monkeypatch):
    t = trainer
    t.current_epoch = t.num_warmup_epochs
    monkeypatch.setattr(t, "max_nonfinite_steps_in_a_row", 2)
    good = next(t.dataloader_unlabeled)
    poisoned = {**good, "data": torch.full_like(good["data"], float("nan"))}
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat(poisoned))
    before = copy.deepcopy(t.network.state_dict())
    out = t.train_step(next(t.dataloader_train))
    assert math.isnan(out["loss"])
    for k, v in t.network.state_dict().items():
        assert torch.equal(v, before[k]), k  # no update from the poisoned step
    assert all(p.grad is None for p in t.network.parameters())
    with pytest.raises(RuntimeError, match="2 training steps in a row had a non-finite loss"):
        t.train_step(next(t.dataloader_train))
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat(good))
    t._nonfinite_in_a_row = 0
    assert math.isfinite(t.train_step(next(t.dataloader_train))["loss"])


@pytest.mark.parametrize("case", ["constant images", "intensity outliers", "everything masked"])
def test_edge_case_inputs_keep_losses_finite(trainer, monkeypatch, case):
    t = trainer
    t.current_epoch = t.num_warmup_epochs
    batch = next(t.dataloader_train)
    unlabeled = next(t.dataloader_unlabeled)
    if case == "constant images":
        batch = {**batch, "data": torch.zeros_like(batch["data"])}
        unlabeled = {**unlabeled, "data": torch.full_like(unlabeled["data"], 3.0)}
    elif case == "intensity outliers":  # Hippocampus has raw maxima up to 1.7e6; a few such voxels after z-scoring
        data = unlabeled["data"].clone()
        data.view(-1)[::97] = 1e6
        unlabeled = {**unlabeled, "data": data}
    else:  # the predicted background hidden while the model predicts background everywhere
        head = t._unwrapped_network().decoder.seg_layers[-1]
        saved = copy.deepcopy(head.state_dict())
        monkeypatch.setattr(t, "masking", "background")
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([50.0, -50.0, -50.0]))
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat(unlabeled))
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    out = t.train_step(batch)
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES)), out
    if case == "everything masked":
        assert out["masked_fraction_unlabeled"] == 1.0
        head.load_state_dict(saved)
    t.optimizer.zero_grad(set_to_none=True)


def test_checkpoint_writes_are_atomic(trainer, tmp_path, monkeypatch):
    t = trainer
    target = tmp_path / "checkpoint_latest.pth"
    t.save_checkpoint(str(target))
    first = torch.load(target, map_location="cpu", weights_only=False)
    assert first["trainer_name"] == "nnUNetTrainerPICK"
    assert not (tmp_path / "checkpoint_latest.pth.partial").exists()

    def killed_half_way(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"truncated")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        t.save_checkpoint(str(target))
    again = torch.load(target, map_location="cpu", weights_only=False)  # the previous checkpoint is intact
    assert again["current_epoch"] == first["current_epoch"]


def test_patches_smaller_than_the_image_keep_losses_finite(hippocampus, monkeypatch):
    """A configuration whose 32 x 32 patch is smaller than the Hippocampus slices (up to 50 x 35 voxels and more):
    patches are cropped from inside the images, and the PICK step stays finite."""
    import json

    plans_file = hippocampus / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"]["2d_small_patch"] = {"inherits_from": "2d", "patch_size": [32, 32]}
    plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d_small_patch")
    t.on_train_start()  # nnUNet_n_proc_DA=0: no background workers to stop afterwards
    case = next(iter(t.unlabeled_case_folders))
    image_shape = nnUNetDatasetUnlabeled(t.unlabeled_case_folders).load_case(case)[0].shape  # (C, X, Y, Z)
    assert max(image_shape[2:]) > 32  # the slices are larger than the patch
    t.current_epoch = t.num_warmup_epochs
    batch = next(t.dataloader_train)
    assert tuple(batch["data"].shape[2:]) == (32, 32)
    out = t.train_step(batch)
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES)), out
    assert 0 < out["masked_fraction_unlabeled"] < 1


# ---------------------------------------------------------------- schedule of the unlabeled phase, start-up masking
def test_unlabeled_start_criterion_and_ramp_on_fixed_numbers():
    from nnunet_pick.training.schedule import sigmoid_rampup, unlabeled_start_epoch

    history = [[0.30, 0.0], [0.50, 0.10], [0.60, 0.55], [0.7, float("nan")]]
    assert unlabeled_start_epoch(history, min_epochs=0, min_dice=0.0) == 2  # epoch 1 predicted both classes
    assert unlabeled_start_epoch(history, min_epochs=0, min_dice=0.5) == 3
    assert unlabeled_start_epoch(history, min_epochs=5, min_dice=0.0) == 5
    assert unlabeled_start_epoch(history[:1], min_epochs=0, min_dice=0.0) is None
    assert unlabeled_start_epoch([[0.9, float("nan")]], min_epochs=0, min_dice=0.0) is None
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(30, 10) == 1.0
    assert sigmoid_rampup(-1, 10) == 0.0
    assert sigmoid_rampup(0, 0) == 1.0


def test_unlabeled_phase_starts_only_once_every_class_is_predicted(trainer, monkeypatch):
    """nnUNetTrainerPICK_startAllClasses's settings on the real trainer: warm-up steps (no unlabeled terms) until
    nnU-Net's logged validation Dice is positive for both classes, unlabeled terms from the next epoch on."""
    from nnunet_pick.training.variants import TRAINERS

    t = trainer
    apply_settings(t, monkeypatch, TRAINERS["nnUNetTrainerPICK_startAllClasses"].pick_settings)
    dice = t.logger.local_logger.my_fantastic_logging["dice_per_class_or_region"]
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    saved = list(dice)
    try:
        dice[:] = [[0.4, 0.0]]  # epoch 0: the posterior class not predicted
        t.current_epoch = 1
        assert t.unlabeled_phase_start() is None
        assert t.is_warmup_epoch()
        out = t.train_step(next(t.dataloader_train))
        assert math.isnan(out["train_loss_aux_unlabeled"])
        assert out["warmup"] == 1
        dice.append([0.5, 0.02])  # epoch 1's validation predicted both
        assert t.unlabeled_phase_start() == 2
        assert t.is_warmup_epoch(1)
        assert not t.is_warmup_epoch(2)
        t.current_epoch = 2
        out = t.train_step(next(t.dataloader_train))
        assert np.isfinite(out["train_loss_aux_unlabeled"])
        assert out["warmup"] == 0
    finally:
        dice[:] = saved
        t.optimizer.zero_grad(set_to_none=True)


def test_training_dice_counts_on_fixed_numbers():
    """tp / fp / fn per foreground class as nnU-Net's online Dice counts them (argmax; ignore label excluded)."""
    from nnunet_pick.training.schedule import dice_from_counts, training_dice_counts

    # 4 voxels, 3 heads (background, 1, 2); predicted labels 1, 1, 2, 0; true labels 1, 2, 2, 1
    predicted = torch.tensor([1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).T.float().reshape(1, 3, 2, 2) * 5
    target = torch.tensor([1, 2, 2, 1]).reshape(1, 1, 2, 2).float()
    counts = training_dice_counts(logits, target, has_regions=False, ignore_label=None)
    assert counts.tolist() == [[1, 1], [1, 0], [1, 1]]  # class 1: tp 1 fp 1 fn 1; class 2: tp 1 fp 0 fn 1
    assert dice_from_counts(counts) == pytest.approx([0.5, 2 / 3])
    # the last voxel is the ignore label (3): the false negative of class 1 there is not counted
    target_ignore = torch.tensor([1, 2, 2, 3]).reshape(1, 1, 2, 2).float()
    counts = training_dice_counts(logits, target_ignore, has_regions=False, ignore_label=3)
    assert counts.tolist() == [[1, 1], [1, 0], [0, 1]]
    assert target_ignore.flatten().tolist() == [1, 2, 2, 3]  # not modified
    # regions: sigmoid > 0.5 on two region heads, no background head
    region_logits = torch.tensor([[1.0, -1.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)  # region 0: on, off; region 1: on, on
    region_target = torch.tensor([[1, 1], [0, 1]]).reshape(1, 2, 2, 1).float()
    assert training_dice_counts(region_logits, region_target, has_regions=True, ignore_label=None).tolist() == [
        [1, 1], [0, 1], [1, 0]]
    assert math.isnan(dice_from_counts(torch.zeros(3, 1))[0])  # neither present nor predicted


def test_unlabeled_phase_starts_on_the_training_batches_dice(trainer, monkeypatch):
    """nnUNetTrainerPICK_startTrainDice0p5: the labeled step counts the primary decoder's tp / fp / fn on the real
    batch (tp + fn = the class's voxels in the target), and the start reads the training Dice, never nnU-Net's
    validation Dice (which is the accuracy protocol's test set)."""
    from nnunet_pick.training.progress import TRAIN_DICE_KEY
    from nnunet_pick.training.variants import TRAINERS

    t = trainer
    apply_settings(t, monkeypatch, TRAINERS["nnUNetTrainerPICK_startTrainDice0p5"].pick_settings)
    log = t.logger.local_logger.my_fantastic_logging
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    saved = list(log[TRAIN_DICE_KEY]), list(log["dice_per_class_or_region"])
    try:
        log["dice_per_class_or_region"][:] = [[0.9, 0.9]]  # validation would say "start"
        log[TRAIN_DICE_KEY][:] = [[0.7, 0.3]]  # the posterior class is not yet at Dice 0.5 on the training batches
        t.current_epoch = 1
        assert t.unlabeled_phase_start() is None
        t._train_dice_counts = None
        batch = next(t.dataloader_train)
        target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
        out = t.train_step(batch)
        assert math.isnan(out["train_loss_aux_unlabeled"])  # still warm-up
        counts = t._train_dice_counts
        assert counts.shape == (3, 2)
        assert [int(counts[0, c] + counts[2, c]) for c in (0, 1)] == [int((target == c).sum()) for c in (1, 2)]
        log[TRAIN_DICE_KEY].append([0.8, 0.6])
        assert t.unlabeled_phase_start() == 2
        assert t.is_warmup_epoch(1) and not t.is_warmup_epoch(2)
    finally:
        log[TRAIN_DICE_KEY][:], log["dice_per_class_or_region"][:] = saved
        t._train_dice_counts = None
        t.optimizer.zero_grad(set_to_none=True)


def test_a_checkpoint_without_training_dice_continues():
    """Checkpoints written before the training Dice (or a newer curve) was logged get 'not counted' for each of
    their epochs."""
    from nnunet_pick.training.progress import TRAIN_DICE_KEY, PICKLocalLogger

    logger = PICKLocalLogger()
    newer = (TRAIN_DICE_KEY, "confident_fraction_unlabeled")
    old = {k: [0.0, 0.0, 0.0] for k in logger.my_fantastic_logging if k not in newer}
    logger.load_checkpoint(old)
    assert logger.my_fantastic_logging[TRAIN_DICE_KEY] == [[], [], []]
    assert np.isnan(logger.my_fantastic_logging["confident_fraction_unlabeled"]).all()
    assert len(logger.my_fantastic_logging["confident_fraction_unlabeled"]) == 3
    logger.log(TRAIN_DICE_KEY, [0.5, 0.25], 3)
    assert logger.my_fantastic_logging[TRAIN_DICE_KEY][3] == [0.5, 0.25]


def test_rampup_scales_the_unlabeled_gradient_and_the_logged_total(trainer, monkeypatch):
    t = trainer
    monkeypatch.setattr(t, "unlabeled_rampup_fraction", 0.5)  # 2 of the fixture's 4 epochs
    start = t.num_warmup_epochs
    unlabeled = next(t.dataloader_unlabeled)["data"]
    aux = list(t._unwrapped_network().aux_decoder.seg_layers[-1].parameters())

    def aux_gradient(epoch):
        t.current_epoch = epoch
        t.optimizer.zero_grad(set_to_none=True)
        t._unlabeled_branches(unlabeled)
        return [p.grad.clone() for p in aux]

    full, first = aux_gradient(start + 2), aux_gradient(start)
    w = math.exp(-5)
    assert t.unlabeled_weight(start) == pytest.approx(w)
    assert t.unlabeled_weight(start + 2) == 1.0
    for g_full, g_first in zip(full, first, strict=True):
        torch.testing.assert_close(g_first, w * g_full, rtol=1e-4, atol=1e-9)
    t.current_epoch = start
    monkeypatch.setattr(t, "_optimizer_step", lambda: True)
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat({"data": unlabeled}))
    out = t.train_step(next(t.dataloader_train))
    expected = out["train_loss_seg"] + out["train_loss_mim_labeled"] + out["train_loss_aux_labeled"] \
        + w * (out["train_loss_mim_unlabeled"] + out["train_loss_aux_unlabeled"])
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-6)
    t.optimizer.zero_grad(set_to_none=True)


def test_startup_blocks_replace_only_masks_that_are_too_small(trainer):
    from nnunet_pick.masking import attentive_mask, with_startup_blocks

    batch = next(trainer.dataloader_train)
    labels = batch["target"][0].long()  # real Hippocampus labels as a perfect pseudo-label
    masked = attentive_mask(labels, has_regions=False)
    masked[0] = False  # an empty prediction
    small = masked.flatten(1).float().mean(1) < 0.01
    assert small[0]
    assert (~small).any()  # nnU-Net's foreground oversampling puts hippocampus into some patches
    out = with_startup_blocks(masked, 0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[~small], masked[~small])  # large enough: the attentive mask stays
    for i in torch.nonzero(small).flatten().tolist():
        assert 0.3 < float(out[i].float().mean()) < 0.9  # 60 % of the 16-pixel tiles (edge tiles are smaller)
    assert with_startup_blocks(masked, 0.0) is masked


def test_two_stage_schedule_restarts_the_optimizer_when_the_unlabeled_phase_starts(trainer, monkeypatch):
    """nnUNetTrainerPICK_twoStage's settings on the real trainer (4 epochs: warm-up 3): nnU-Net's poly rate over the
    warm-up, SGD's momentum buffers kept during it and cleared when the unlabeled phase starts, then a second poly
    decay from 1e-3."""
    from nnunet_pick.training.schedule import two_stage_poly_lr
    from nnunet_pick.training.variants import TRAINERS

    t = trainer
    apply_settings(t, monkeypatch, TRAINERS["nnUNetTrainerPICK_twoStage"].pick_settings)
    assert t._num_warmup_epochs is None  # derived from warmup_fraction, even after tests that set it
    assert t.num_warmup_epochs == 3
    logged = []
    monkeypatch.setattr(t, "print_to_log_file", lambda *a, **k: logged.append(" ".join(map(str, a))))
    optimizer, scheduler = t.configure_optimizers()

    def step_with_momentum():
        optimizer.zero_grad(set_to_none=True)
        batch = next(t.dataloader_train)
        t.loss(t.network(batch["data"]), batch["target"]).backward()
        optimizer.step()

    lrs = []
    for epoch in range(4):
        scheduler.step(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
        if epoch == 3:
            assert not optimizer.state  # fresh optimizer for the unlabeled phase
            assert logged and "optimizer state cleared" in logged[-1]
        else:
            assert not logged
        step_with_momentum()
        assert all("momentum_buffer" in optimizer.state[p] for p in t.network.parameters() if p.grad is not None)
    assert lrs == pytest.approx([1e-2, 1e-2 * (2 / 3) ** 0.9, 1e-2 * (1 / 3) ** 0.9, 1e-3])
    assert two_stage_poly_lr(2, start=2, num_epochs=4, initial_lr=1e-2, unlabeled_lr=1e-3) == 1e-3
    with pytest.raises(ValueError, match="needs 0 < start"):
        two_stage_poly_lr(0, start=0, num_epochs=4, initial_lr=1e-2, unlabeled_lr=1e-3)
    monkeypatch.setattr(t, "unlabeled_start_min_dice", 0.5)
    with pytest.raises(ValueError, match="needs a fixed warm-up"):
        t.configure_optimizers()
    t.optimizer.zero_grad(set_to_none=True)


def test_time_left_counts_epochs_with_unlabeled_data_at_their_cost(trainer, monkeypatch):
    """The estimate of the time left weights each epoch left by its cost: before a PICK epoch ran, the pass-count
    ratio 16 / 9 (equal batches); after, the measured ratio (the new-user test saw the warm-up-only estimate miss by
    half: 1.6 min said, 3.5 min taken)."""
    t = trainer  # 4 epochs, warm-up 1, unlabeled batch = labeled batch
    log = t.logger.local_logger.my_fantastic_logging
    monkeypatch.setattr(t, "current_epoch", 0)
    monkeypatch.setitem(log, "epoch_start_timestamps", [100.0])
    monkeypatch.setitem(log, "epoch_end_timestamps", [])  # epoch 0 (warm-up) is running
    assert t.unlabeled_batch_size == t.configuration_manager.batch_size
    assert t._pick_epoch_cost_ratio() == pytest.approx(16 / 9)
    assert "counted as 1.8 x a warm-up epoch" in t.estimate_note()
    t.current_epoch = 1
    log["epoch_start_timestamps"].append(110.0)
    log["epoch_end_timestamps"].append(110.0)  # epoch 0 took 10 s, epoch 1 (PICK) is running
    assert list(t.epoch_cost_weights(range(4))) == pytest.approx([1, 16 / 9, 16 / 9, 16 / 9])
    assert t._seconds_of_epochs_after(0, t._recent_unit_seconds(0)) == pytest.approx(10 * 3 * 16 / 9)

    t.current_epoch = 2
    log["epoch_start_timestamps"].append(128.0)
    log["epoch_end_timestamps"].append(128.0)  # epoch 1 (PICK) took 18 s: measured ratio 1.8
    assert t._pick_epoch_cost_ratio() == pytest.approx(1.8)
    assert t._recent_unit_seconds(1) == pytest.approx(10.0)  # 10 s / 1 and 18 s / 1.8
    assert t._seconds_of_epochs_after(1, t._recent_unit_seconds(1)) == pytest.approx(2 * 18)
    assert t.estimate_note() == ""
    monkeypatch.setattr(t, "unlabeled_batch_size", 2 * t.configuration_manager.batch_size)
    assert t._pick_epoch_cost_ratio() == pytest.approx(1.8)  # measured wins over the pass count (23 / 9)


def test_progress_legend_says_what_pick_train_loss_is(trainer):
    """PICK's train_loss is the total of its terms, not nnU-Net's Dice + CE (a new user read the old legend, saw
    train_loss 1.37 against val_loss 0.20 and a jump when the unlabeled terms started, and took it for divergence)."""
    from nnunet_pick.training.progress_lines import LOSS_SIGN_NOTE

    legend = trainer.progress_legend()
    assert "train_loss is PICK's total" in legend and "rises when the unlabeled terms start" in legend
    assert LOSS_SIGN_NOTE not in legend  # nnU-Net's wording, which calls train_loss Dice + CE
    assert "val_loss and L_seg are nnU-Net's Dice + cross-entropy loss" in legend


def test_confidence_threshold_leaves_unsure_voxels_out_of_the_unlabeled_auxiliary_loss(trainer, monkeypatch):
    """nnUNetTrainerPICK_confident0p95's rule on a real unlabeled batch: the pseudo-label of a voxel below the
    threshold changes neither L_aux^u nor the auxiliary decoder's gradient; one above it does."""
    import nnunet_pick

    t = trainer
    assert nnunet_pick.nnUNetTrainerPICK_confident0p95.pick_settings == {"unlabeled_confidence_threshold": 0.95}
    unlabeled = next(t.dataloader_unlabeled)["data"]
    with torch.no_grad():
        probabilities = torch.softmax(t.network(unlabeled)[0].float(), 1)
    confidence = probabilities.amax(1, keepdim=True)
    threshold = float(confidence.median())  # about half the voxels of this (barely trained) network's batch
    monkeypatch.setattr(t, "unlabeled_confidence_threshold", threshold)
    kept = confidence >= threshold
    assert 0.2 < float(kept.float().mean()) < 0.8
    aux = list(t._unwrapped_network().aux_decoder.parameters())
    original = t._segmentation_mask

    def run(change_where=None):
        def segmentation_mask(logits):
            pseudo, masked = original(logits)
            if change_where is not None:  # another class at these voxels; the mask stays the same
                pseudo = torch.where(change_where, (pseudo + 1) % 3, pseudo)
            return pseudo, masked

        monkeypatch.setattr(t, "_segmentation_mask", segmentation_mask)
        t.optimizer.zero_grad(set_to_none=True)
        out = t._unlabeled_branches(unlabeled)
        return out, [p.grad.clone() for p in aux]

    out, grads = run()
    assert float(out["confident_fraction_unlabeled"]) == pytest.approx(float(kept.float().mean()))
    changed_unsure, grads_unsure = run(~kept)
    assert float(changed_unsure["train_loss_aux_unlabeled"]) == pytest.approx(float(out["train_loss_aux_unlabeled"]),
                                                                              rel=1e-5)
    for g, g_unsure in zip(grads, grads_unsure, strict=True):
        torch.testing.assert_close(g_unsure, g, rtol=1e-4, atol=1e-7)
    changed_sure, _ = run(kept)
    assert abs(float(changed_sure["train_loss_aux_unlabeled"]) - float(out["train_loss_aux_unlabeled"])) > 1e-3
    # the threshold off (PICK): every voxel is a target and the logged fraction is 1
    monkeypatch.setattr(t, "unlabeled_confidence_threshold", 0.0)
    plain, _ = run(~kept)
    assert float(plain["confident_fraction_unlabeled"]) == 1.0
    assert abs(float(plain["train_loss_aux_unlabeled"]) - float(out["train_loss_aux_unlabeled"])) > 1e-3
    t.optimizer.zero_grad(set_to_none=True)


def test_ema_teacher_gives_the_unlabeled_pseudo_labels_follows_the_student_and_is_checkpointed(trainer, monkeypatch,
                                                                                                tmp_path):
    """nnUNetTrainerPICK_emaTeacher on real batches: the teacher is made as a copy of the network at the first
    unlabeled step, its logits (not the network's) give the pseudo-label and the mask, every optimizer step moves it
    by Mean Teacher's ramped decay, and a checkpoint round trip restores it without touching the weights nnU-Net's
    predictor loads."""
    import nnunet_pick
    from nnunet_pick.training.trainer import EMA_TEACHER_KEY

    t = trainer
    assert nnunet_pick.nnUNetTrainerPICK_emaTeacher.pick_settings == {"ema_teacher_decay": 0.99}
    monkeypatch.setattr(t, "ema_teacher_decay", 0.99)
    monkeypatch.setattr(t, "ema_teacher", None)
    monkeypatch.setattr(t, "current_epoch", t.num_warmup_epochs)  # first epoch after warm-up
    unlabeled = next(t.dataloader_unlabeled)
    monkeypatch.setattr(t, "dataloader_unlabeled", Repeat(unlabeled))
    seen = []
    original = t._segmentation_mask

    def spy(logits):
        seen.append(logits.clone())
        return original(logits)

    monkeypatch.setattr(t, "_segmentation_mask", spy)
    net = t._unwrapped_network()
    with torch.no_grad():
        own = net(unlabeled["data"])[0]
    assert float((own.argmax(1) != 0).float().mean()) > 0  # the network predicts some foreground here

    # first use: a copy of the network, so the same logits; then its logits alone decide the pseudo-label and mask
    t._unlabeled_branches(unlabeled["data"])
    teacher = t.ema_teacher
    assert teacher is not None
    assert int(teacher.num_updates) == 0
    assert teacher.decoder.encoder is teacher.encoder
    assert teacher.encoder is not net.encoder
    torch.testing.assert_close(seen[-1], own)
    head = teacher.decoder.seg_layers[-1].bias
    saved_head = head.clone()
    with torch.no_grad():
        head.copy_(torch.tensor([100.0, 0.0, 0.0]))  # the teacher says background everywhere
    out = t._unlabeled_branches(unlabeled["data"])
    assert float(out["masked_fraction_unlabeled"]) == 0.0
    assert float(out["train_loss_mim_unlabeled"]) == 0.0
    with torch.no_grad():
        head.copy_(saved_head)

    # a training step: the first update makes the teacher the stepped network (decay 0), the second averages (0.5)
    t.optimizer.zero_grad(set_to_none=True)
    t.train_step(next(t.dataloader_train))
    assert int(teacher.num_updates) == 1
    for a, b in zip(teacher.encoder.parameters(), net.encoder.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    before = [p.clone() for p in teacher.decoder.stages.parameters()]
    t.train_step(next(t.dataloader_train))
    for old, new, student in zip(before, teacher.decoder.stages.parameters(), net.decoder.stages.parameters(),
                                 strict=True):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * student)
    assert not any(p.requires_grad for p in teacher.parameters())

    # checkpoint round trip: the teacher comes back; the network's keys are the predictor's
    path = str(tmp_path / "checkpoint_latest.pth")
    t.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert set(saved["network_weights"]) == set(net.state_dict())
    assert int(saved[EMA_TEACHER_KEY]["num_updates"]) == 2
    teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in teacher.parameters():
            p.zero_()
    monkeypatch.setattr(t, "ema_teacher", None)
    t.load_checkpoint(path)
    assert t.ema_teacher is not None
    assert t.ema_teacher is not teacher
    for k, v in t.ema_teacher.state_dict().items():
        torch.testing.assert_close(v, teacher_weights[k], rtol=0, atol=0, msg=k)
    # a trainer without the teacher ignores it (and drops any it had)
    monkeypatch.setattr(t, "ema_teacher_decay", None)
    t.load_checkpoint(path)
    assert t.ema_teacher is None
    t.optimizer.zero_grad(set_to_none=True)


def test_cutmix_control_hands_nnunets_step_the_batch_pick_cutmix_trains_its_primary_decoder_on(trainer, monkeypatch):
    """nnUNetTrainer_CutMix, the labeled-only control of nnUNetTrainerPICK_CutMix, on a real batch: nnU-Net's own
    train_step receives the CutMix'ed batch (images and every deep-supervision target pasted with one box), the same
    batch PICK_CutMix's labeled step gets from the same random state; with probability 0 the batch passes untouched."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_pick.training.variants import TRAINERS

    control_cls = TRAINERS["nnUNetTrainer_CutMix"]
    assert issubclass(control_cls, nnUNetTrainer)
    assert not issubclass(control_cls, nnUNetTrainerPICK)
    settings = {"cutmix_probability": 1.0}
    assert control_cls.pick_settings == TRAINERS["nnUNetTrainerPICK_CutMix"].pick_settings == settings
    batch = next(trainer.dataloader_train)
    seen = []
    monkeypatch.setattr(nnUNetTrainer, "train_step", lambda self, b: seen.append(b) or {"loss": 0.0})
    control = object.__new__(control_cls)  # the step reads only cutmix_probability; nnU-Net's step is the spy
    control.cutmix_probability = 1.0
    torch.manual_seed(3)
    assert control.train_step(batch) == {"loss": 0.0}
    monkeypatch.setattr(trainer, "cutmix_probability", 1.0)
    torch.manual_seed(3)
    pick_data, pick_target = trainer._mix_labeled_batch(batch["data"], batch["target"])
    mixed = seen[0]
    assert set(mixed) == set(batch)
    assert torch.equal(mixed["data"], pick_data)
    assert len(mixed["target"]) == len(batch["target"]) > 1
    assert all(torch.equal(a, b) for a, b in zip(mixed["target"], pick_target, strict=True))
    changed = (mixed["data"] != batch["data"]).any(dim=1)  # (B, X, Y): voxels that came from the partner sample
    assert 0 < float(changed.float().mean()) < 1
    assert not torch.equal(mixed["target"][0], batch["target"][0])
    # outside the box every sample keeps its own image and labels: the box is redrawn from the same random state
    # (random_cutmix draws its probability test, then cutmix_box, then the partners)
    from nnunet_pick.augmentation import cutmix_box

    torch.manual_seed(3)
    torch.rand(())
    box = cutmix_box(tuple(batch["data"].shape[2:]))
    inside = torch.zeros(batch["data"].shape[2:], dtype=torch.bool)
    inside[tuple(slice(lo, hi) for lo, hi in box)] = True
    assert 0 < int(inside.sum()) < inside.numel()
    assert not (changed & ~inside).any()
    target_changed = (mixed["target"][0] != batch["target"][0]).any(dim=1)
    assert target_changed.any()
    assert not (target_changed & ~inside).any()
    control.cutmix_probability = 0.0
    control.train_step(batch)
    assert seen[1]["data"] is batch["data"]
    assert seen[1]["target"] is batch["target"]
