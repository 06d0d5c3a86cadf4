"""PICK planners: the VRAM estimate's arithmetic and monotonicity, plans against nnU-Net's, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DATASET_ID, base_env, command, run_checked
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_pick.planning import PLANNERS, nnUNetPlannerPICK


@pytest.fixture(scope="module")
def architecture(hippocampus):
    plans = json.loads((hippocampus / "nnUNetPlans.json").read_text(encoding="utf-8"))
    arch = plans["configurations"]["2d"]["architecture"]
    return arch["network_class_name"], arch["arch_kwargs"], tuple(arch["_kw_requires_import"])


def test_estimate_is_the_largest_branch_plus_tensors_kept_across_branches(hippocampus, architecture):
    pick, stock = nnUNetPlannerPICK(DATASET_ID), ExperimentPlanner(DATASET_ID)
    previous = 0
    for patch in [(32, 32), (48, 32), (48, 48), (64, 64)]:
        ours = pick.static_estimate_VRAM_usage(patch, 1, 3, *architecture)
        # K = 3 outputs > C = 1: the auxiliary/primary branch is the largest; + (3 C + 3) values per voxel kept
        assert ours == stock.static_estimate_VRAM_usage(patch, 1, 3, *architecture) + 6 * np.prod(patch)
        assert ours > previous  # grows with the patch
        previous = ours
    # with more input channels than classes, the MIM decoder (C outputs) is the largest branch
    assert pick.static_estimate_VRAM_usage((48, 48), 5, 3, *architecture) == \
        stock.static_estimate_VRAM_usage((48, 48), 5, 5, *architecture) + 18 * 48 * 48
    assert pick.static_estimate_VRAM_usage((48, 48), 5, 3, *architecture) > \
        pick.static_estimate_VRAM_usage((48, 48), 1, 3, *architecture)  # grows with the channels


def test_extra_decoders_take_memory_off_the_target(hippocampus):
    pick = nnUNetPlannerPICK(DATASET_ID)
    plan = json.loads((hippocampus / "nnUNetPlans.json").read_text(encoding="utf-8"))["configurations"]["2d"]
    gigabytes = pick.extra_decoder_gigabytes(plan)
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plan["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3,
                                 allow_init=False)
    assert gigabytes == pytest.approx(2 * sum(p.numel() for p in net.decoder.parameters()) * 12 / 1e9)
    pick.UNet_vram_target_GB = gigabytes / 2
    with pytest.raises(ValueError, match="raise -gpu_memory_target"):
        pick.plan_experiment()


def _plans(planner_cls, plans_name, target, uncapped):
    planner = planner_cls(DATASET_ID, gpu_memory_target_in_gb=target, plans_name=plans_name)
    if uncapped:
        planner.max_dataset_covered = 1  # let memory, not nnU-Net's 5 % dataset cap, decide the batch
    return planner.plan_experiment()["configurations"]


@pytest.mark.parametrize(("target", "uncapped"), [(8, False), (0.5, True)])
def test_plans_differ_from_nnunets_only_in_size_and_never_exceed_them(hippocampus, target, uncapped):
    stock = _plans(ExperimentPlanner, f"nnUNetPlansStockTest{uncapped}", target, uncapped)
    pick = _plans(nnUNetPlannerPICK, f"nnUNetPlansPICKTest{uncapped}", target, uncapped)
    assert stock.keys() == pick.keys()
    size_keys = {"batch_size", "patch_size", "architecture", "data_identifier"}
    smaller = False
    for cfg in stock:
        theirs, ours = stock[cfg], pick[cfg]
        assert {k: v for k, v in ours.items() if k not in size_keys} == \
            {k: v for k, v in theirs.items() if k not in size_keys}, cfg
        if cfg in ("2d", "3d_fullres"):
            assert ours["data_identifier"] == f"nnUNetPlans_{cfg}"  # nnU-Net's preprocessed data is reused
        assert ours["batch_size"] <= theirs["batch_size"], cfg
        assert np.prod(ours["patch_size"]) <= np.prod(theirs["patch_size"]), cfg
        smaller |= (ours["batch_size"], ours["patch_size"]) != (theirs["batch_size"], theirs["patch_size"])
    if uncapped:
        assert smaller  # 0.5 GB without the dataset cap: memory decides, and PICK's extra memory costs batch or patch
    else:
        assert not smaller  # 8 GB: Hippocampus is small, nnU-Net's 5 % cap decides both plans, not memory


def test_every_pick_planner_is_registered():
    assert sorted(PLANNERS) == ["nnUNetPlannerPICK", "nnUNetPlannerPICKResEncL", "nnUNetPlannerPICKResEncM",
                                "nnUNetPlannerPICKResEncXL"]


def test_command_plans_and_says_what_to_preprocess(hippocampus, nnunet_dirs):
    proc = run_checked([command("nnUNetv2_pick_plan_experiment"), "-d", str(DATASET_ID), "-pl",
                        "nnUNetPlannerPICKResEncM"], base_env(nnunet_dirs))
    plans = json.loads((hippocampus / "nnUNetResEncUNetMPlansPICK.json").read_text(encoding="utf-8"))
    assert plans["experiment_planner_used"] == "nnUNetPlannerPICKResEncM"
    assert plans["configurations"]["2d"]["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    assert "data nnUNetPlans_2d (preprocessed)" in proc.stdout
    assert "-tr nnUNetTrainerPICK -p nnUNetResEncUNetMPlansPICK" in proc.stdout
