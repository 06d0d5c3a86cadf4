"""PICK steps for region-based datasets and datasets with an ignore label (real Hippocampus data)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import load_plans

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.training.progress import PICK_CURVES


def trainer_with_labels(preprocessed, labels: dict, **extra_json):
    plans = load_plans(preprocessed)
    plans["continue_training"] = False
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["labels"] = labels
    dataset_json.update(extra_json)
    t = nnUNetTrainerPICK(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                          device=torch.device("cpu"))
    t.num_epochs, t.num_iterations_per_epoch = 4, 2
    t.current_epoch = t.num_warmup_epochs  # after warm-up: labeled and unlabeled branches
    return t


def test_region_based_dataset(hippocampus, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    # nnU-Net's region convention: "hippocampus" = labels 1 and 2, "posterior" = label 2
    t = trainer_with_labels(hippocampus, {"background": 0, "hippocampus": [1, 2], "posterior": 2},
                            regions_class_order=[1, 2])
    assert t.label_manager.has_regions
    t.on_train_start()
    batch = next(t.dataloader_train)
    assert batch["target"][0].shape[1] == 2  # region one-hot targets from nnU-Net's loader
    out = t.train_step(batch)
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES))
    assert 0 < out["masked_fraction_unlabeled"] < 1
    # a region is on where sigmoid > 0.5, and a voxel is masked where any region is on
    logits = torch.tensor([[[[2.0, -1.0, -3.0]], [[-2.0, 0.5, -0.1]]]])
    pseudo, masked = t._segmentation_mask(logits)
    assert pseudo.tolist() == [[[[True, False, False]], [[False, True, False]]]]
    assert masked.tolist() == [[[[True, True, False]]]]
    # the confidence threshold (nnUNetTrainerPICK_confident0p95's rule) with regions: nnU-Net's Dice+BCE with its
    # ignore channel, built for this dataset without deep supervision
    unlabeled = next(t.dataloader_unlabeled)["data"]
    with torch.no_grad():
        p = torch.sigmoid(t.network(unlabeled)[0].float())
    sure = torch.maximum(p, 1 - p).amin(1, keepdim=True)
    t.unlabeled_confidence_threshold = float(sure.median())
    loss, ignore_value = t.unlabeled_aux_loss()
    assert ignore_value is None
    assert loss.use_ignore_label
    out = t._unlabeled_branches(unlabeled)
    assert math.isfinite(float(out["train_loss_aux_unlabeled"]))
    assert float(out["confident_fraction_unlabeled"]) == pytest.approx(float((sure >= float(sure.median())).float()
                                                                             .mean()))


def test_dataset_with_ignore_label(hippocampus, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    plain = trainer_with_labels(hippocampus, {"background": 0, "Anterior": 1, "Posterior": 2})
    plain.on_train_start()
    batch, unlabeled = next(plain.dataloader_train), next(plain.dataloader_unlabeled)
    # the same real batch, with a band of voxels marked "ignore" (label 3) at every deep-supervision level
    for target in batch["target"]:
        target[..., : target.shape[-1] // 4] = 3
    t = trainer_with_labels(hippocampus, {"background": 0, "Anterior": 1, "Posterior": 2, "ignore": 3})
    assert t.label_manager.ignore_label == 3
    assert t.label_manager.num_segmentation_heads == 3
    t.initialize()
    t.dataloader_unlabeled = iter([unlabeled])
    out = t.train_step(batch)
    assert all(math.isfinite(float(out[k])) for k in ("loss", *PICK_CURVES))
    # pseudo-labels come from the 3 heads: the ignore value can never appear
    with torch.no_grad():
        pseudo, _ = t._segmentation_mask(t.network(unlabeled["data"])[0])
    assert set(np.unique(pseudo.numpy())) <= {0, 1, 2}
    # with a confidence threshold the dataset's own ignore label marks the unsure voxels (the labeled loss itself)
    t.unlabeled_confidence_threshold = 0.95
    assert t.unlabeled_aux_loss() == (t.aux_loss, 3)
    # without an ignore label in the dataset, nnU-Net's loss is built with ignore label 3 (after the highest label)
    plain.unlabeled_confidence_threshold = 0.95
    loss, ignore_value = plain.unlabeled_aux_loss()
    assert ignore_value == 3
    assert loss.ignore_label == 3
    assert plain.aux_loss.ignore_label is None


def test_cascaded_configuration_is_refused(hippocampus):
    plans = load_plans(hippocampus)
    plans["continue_training"] = False
    plans["configurations"]["3d_cascade_fake"] = {"inherits_from": "3d_fullres", "previous_stage": "2d"}
    dataset_json = json.loads((hippocampus / "dataset.json").read_text(encoding="utf-8"))
    with pytest.raises(NotImplementedError, match="cascaded configurations"):
        nnUNetTrainerPICK(plans=plans, configuration="3d_cascade_fake", fold=0, dataset_json=dataset_json,
                          device=torch.device("cpu"))
