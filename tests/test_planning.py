"""PICK planners: the VRAM estimate's arithmetic and monotonicity, plans against nnU-Net's, the command and how it
finds planners by name (``planners/``, a user's ``nnUNet_extPlanner`` folder)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
from helpers import DATASET_ID, base_env, command, run_checked
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_pick._discovery import find_planner, planner_folder, planner_search_path
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


def test_pick_planners_are_found_by_name_through_the_planners_folder(tmp_path):
    folder = planner_folder()
    assert (folder / "nnunet_pick_planners_index.py").is_file()
    assert folder.name in ("planners", "nnunet_pick_planners")  # source checkout / wheel
    assert planner_search_path({}) == [str(folder)]
    assert planner_search_path({"nnUNet_extPlanner": str(tmp_path)}) == [str(tmp_path), str(folder)]  # user's first
    for name, cls in PLANNERS.items():
        assert find_planner(name, {}) is cls  # the library's classes, not copies
    with pytest.raises(LookupError, match="set nnUNet_extPlanner to the folder"):
        find_planner("nnUNetPlannerPICKUnknown", {})
    with pytest.raises(LookupError, match="not a folder"):
        find_planner("nnUNetPlannerPICK", {"nnUNet_extPlanner": str(tmp_path / "missing")})


USER_PLANNERS = textwrap.dedent("""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    from nnunet_pick.planning import nnUNetPlannerPICK


    class nnUNetPlannerPICKNarrow(nnUNetPlannerPICK):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.UNet_base_num_features = 16  # nnU-Net's default: 32


    class nnUNetPlannerNotPICK(ExperimentPlanner):
        pass
""")


def test_command_finds_and_uses_a_users_planner_from_ext_planner_folder(hippocampus, nnunet_dirs, tmp_path):
    package = tmp_path / "my_planners"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "narrow.py").write_text(USER_PLANNERS, encoding="utf-8")
    env = base_env(nnunet_dirs, nnUNet_extPlanner=str(tmp_path))
    plans_name = "nnUNetPlansPICKNarrowTest"
    proc = run_checked([command("nnUNetv2_pick_plan_experiment"), "-d", str(DATASET_ID), "-pl",
                        "nnUNetPlannerPICKNarrow", "-overwrite_plans_name", plans_name], env)
    assert f"plans {plans_name} written" in proc.stdout
    plans = json.loads((hippocampus / f"{plans_name}.json").read_text(encoding="utf-8"))
    stock = json.loads((hippocampus / "nnUNetPlans.json").read_text(encoding="utf-8"))
    assert plans["experiment_planner_used"] == "nnUNetPlannerPICKNarrow"
    ours = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"]
    theirs = stock["configurations"]["2d"]["architecture"]["arch_kwargs"]["features_per_stage"]
    assert theirs[0] == 32
    assert ours == [min(16 * 2 ** i, 512) for i in range(len(ours))]  # the user's base width, nnU-Net's 2d cap
    assert plans["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_2d"  # still a PICK planner

    # a planner that is not a PICK planner, and a name found nowhere: a clear error, no plans written
    for name, message in [("nnUNetPlannerNotPICK", f"(in {package / 'narrow.py'}) is not a PICK planner"),
                          ("nnUNetPlannerPICKTypo", f"no planner nnUNetPlannerPICKTypo in {tmp_path}")]:
        proc = subprocess.run([command("nnUNetv2_pick_plan_experiment"), "-d", str(DATASET_ID), "-pl", name,
                               "-overwrite_plans_name", f"{name}Test"], env=env, capture_output=True,
                              encoding="utf-8", errors="replace", timeout=600)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr
        assert not (hippocampus / f"{name}Test.json").exists()
