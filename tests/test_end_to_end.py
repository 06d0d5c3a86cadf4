"""An nnU-Net user's flow on real Hippocampus cases through nnU-Net's own entry points (CPU, short schedule).

Unlabeled data comes from both sources at once (``imagesUnlabeled`` and the fold's ``"unlabeled"`` key), the trainer
is a user's subclass of ``nnUNetTrainerPICK`` in the user's own ``nnUNet_extTrainer`` folder (so that the plugin's
registration must coexist with it), and ``nnUNetv2_train``, ``--val``, ``--c`` and ``nnUNetv2_predict`` run as
subprocesses exactly as a user types them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
import torch
from helpers import E2E_CONFIGURATION as CONFIGURATION
from helpers import E2E_EPOCHS as EPOCHS
from helpers import E2E_TRAINER as TRAINER
from helpers import E2E_WARMUP as WARMUP
from helpers import TEST, base_env, command, run_checked
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

pytestmark = pytest.mark.slow


def test_checkpoint_holds_all_decoders_and_nnunet_metadata(trained):
    ckpt = torch.load(trained["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    prefixes = {k.split(".")[0] for k in ckpt["network_weights"]}
    assert prefixes == {"encoder", "decoder", "mim_decoder", "aux_decoder"}
    assert ckpt["trainer_name"] == TRAINER
    assert ckpt["current_epoch"] == EPOCHS
    assert ckpt["init_args"]["configuration"] == CONFIGURATION
    assert len(ckpt["logging"]["train_loss_mim_unlabeled"]) == EPOCHS
    assert not (trained["fold"] / "checkpoint_latest.pth").exists()


def test_training_log_reports_pick_terms_per_epoch(trained):
    log = "\n".join(p.read_text(encoding="utf-8") for p in sorted(trained["fold"].glob("training_log_*.txt")))
    lines = re.findall(r"PICK epoch (\d+): (warm-up|PICK) .*", log)
    phases = {int(e): phase for e, phase in lines}
    assert phases == {e: "warm-up" if e < WARMUP else "PICK" for e in range(EPOCHS)}
    number = r"(-?\d+\.\d+)"  # nnU-Net's Dice+CE is negative once the soft Dice exceeds the CE term
    after = re.findall(rf"PICK epoch \d+: PICK .*L_mim labeled {number} unlabeled {number}; "
                       rf"L_aux labeled {number} unlabeled {number}; masked fraction unlabeled {number}", log)
    assert len(after) == EPOCHS - WARMUP
    assert all(np.isfinite([float(v) for v in row]).all() for row in after)
    assert "PICK unlabeled pool: 10 cases (4 from splits_final.json 'unlabeled', 6 from imagesUnlabeled)" in log
    assert "running nnUNetv2_pick_preprocess_unlabeled" in log  # imagesUnlabeled was not preprocessed yet
    for name in ("progress.png", "mim_epoch_0001.png", "mim_final.png",
                 "validation/summary.json"):
        assert (trained["fold"] / name).is_file(), name


def test_console_shows_progress_lines_for_every_epoch(trained):
    """What a user sees on the console of nnUNetv2_train: the log's path, a time estimate, one summary per epoch
    (epochs from 0, with the time left), PICK's terms per epoch, and the same lines in the training log."""
    out = trained["train_stdout"]
    (log_path,) = re.findall(r"Training log: (\S+)", out)
    assert Path(log_path).parent == trained["fold"]
    assert "turn negative once the Dice term dominates" in out
    assert "L_mim and the masked fraction are 0 while the network predicts no foreground yet" in out
    assert len(re.findall(r"Time estimate on this machine, from the first iterations: \d+\.\d s per it", out)) == 1
    duration, dice = r"[\d.]+ (s|min|h)", r"(\d\.\d{3}|nan)"
    summaries = re.findall(rf"epoch (\d+) \(of 0-{EPOCHS - 1}\) done in {duration}: train_loss -?\d+\.\d{{4}}, "
                           rf"val_loss -?\d+\.\d{{4}}, pseudo Dice Anterior {dice} Posterior {dice}; (.*)", out)
    assert [int(row[0]) for row in summaries] == list(range(EPOCHS))
    left = rf"about {duration} left \(\d epochs?, then the final validation\)"
    assert all(re.match(left, row[-1]) for row in summaries[:-1])
    assert summaries[-1][-1].strip() == "last epoch; the final validation follows"
    assert [int(e) for e in re.findall(r"PICK epoch (\d+): ", out)] == list(range(EPOCHS))
    log = Path(log_path).read_text(encoding="utf-8")
    assert len(re.findall(rf"epoch \d+ \(of 0-{EPOCHS - 1}\) done in", log)) == EPOCHS


def test_continue_on_a_finished_run_resumes_from_the_final_checkpoint(trained):
    assert "Training done." in trained["continue_stdout"]
    assert "Epoch 0\n" not in trained["continue_stdout"]


def test_predictions_are_label_maps_with_the_images_geometry_and_their_dice(trained):
    dice_by_hand = []
    for case in TEST:
        assert (trained["predictions"] / f"{case}.nii.gz").is_file()
        pred_img = sitk.ReadImage(str(trained["predictions"] / f"{case}.nii.gz"))
        ref_img = sitk.ReadImage(str(trained["raw"] / "labelsTs" / f"{case}.nii.gz"))
        assert pred_img.GetSize() == ref_img.GetSize()
        assert np.allclose(pred_img.GetSpacing(), ref_img.GetSpacing())
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        assert set(np.unique(pred)) <= {0, 1, 2}
        for label in (1, 2):
            p, r = pred == label, ref == label
            dice_by_hand.append(2 * np.logical_and(p, r).sum() / (p.sum() + r.sum()))
    summary = compute_metrics_on_folder(str(trained["raw"] / "labelsTs"), str(trained["predictions"]),
                                        str(trained["predictions"] / "summary.json"), SimpleITKIO(), ".nii.gz",
                                        [1, 2], num_processes=1)
    nnunet_dice = [c["metrics"][label]["Dice"] for c in summary["metric_per_case"] for label in (1, 2)]
    # Dice from the files, by hand and by nnU-Net's evaluation, agree; an empty prediction scores 0, not NaN
    np.testing.assert_allclose(dice_by_hand, nnunet_dice, rtol=1e-9)
    assert all(0 <= d <= 1 for d in dice_by_hand)


def test_predictor_uses_the_primary_decoder_only(trained, monkeypatch):
    """Re-create nnU-Net's predictor from the model folder and compare with a plain U-Net holding encoder+primary."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_pick._discovery import register

    model_folder = Path(trained["fold"]).parent
    monkeypatch.setenv("nnUNet_extTrainer", trained["nnUNet_extTrainer"])  # the user's folder with the test trainer
    register()  # ... and nnunet-pick's, as at start-up
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(0,))
    cm = predictor.configuration_manager
    plain = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                   cm.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=False)
    weights = predictor.list_of_parameters[0]
    plain.load_state_dict({k: v for k, v in weights.items() if k.split(".")[0] in ("encoder", "decoder")})
    plain.eval()
    x = torch.randn(1, 1, *cm.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(predictor.network(x), plain(x), rtol=0, atol=0)


def test_exported_model_predicts_the_same_without_nnunet_pick(trained, tmp_path):
    """nnUNetv2_pick_export, then nnU-Net's own predictor in a process where nnunet_pick cannot be imported."""
    from nnunet_pick.export import load_checkpoint_weights_only

    model_folder = Path(trained["fold"]).parent
    run_checked([command("nnUNetv2_pick_export"), "-i", str(model_folder), "-o", str(tmp_path / "exported")],
                dict(os.environ))
    exported = tmp_path / "exported" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    ckpt = torch.load(exported / "fold_0" / "checkpoint_final.pth", weights_only=True)  # tensors and plain values
    assert ckpt["trainer_name"] == "nnUNetTrainer"
    assert {k.split(".")[0] for k in ckpt["network_weights"]} == {"encoder", "decoder"}
    original = load_checkpoint_weights_only(trained["fold"] / "checkpoint_final.pth")
    for k, v in ckpt["network_weights"].items():
        assert torch.equal(v, original["network_weights"][k])
    # a Python where nnunet_pick is shadowed by a package that refuses to import
    blocker = tmp_path / "blocker" / "nnunet_pick"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('nnunet-pick is not installed here')\n", encoding="utf-8")
    env = {k: v for k, v in base_env({"nnUNet_results": tmp_path / "r", "nnUNet_raw": tmp_path / "r",
                                       "nnUNet_preprocessed": tmp_path / "r"}).items()}
    env["PYTHONPATH"] = str(tmp_path / "blocker")
    check = subprocess.run([sys.executable, "-c", "import nnunet_pick"], env=env, cwd=tmp_path, capture_output=True,
                           encoding="utf-8", errors="replace")
    assert check.returncode != 0
    assert "not installed here" in check.stderr
    out = tmp_path / "plain_predictions"
    run_checked([command("nnUNetv2_predict_from_modelfolder"), "-i", str(trained["raw"] / "imagesTs"), "-o",
                 str(out), "-m", str(exported), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    for case in TEST:
        plain = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        pick = sitk.GetArrayFromImage(sitk.ReadImage(str(trained["predictions"] / f"{case}.nii.gz")))
        np.testing.assert_array_equal(plain, pick)


def test_export_benchmark_times_both_models_and_refuses_differing_predictions(trained, tmp_path):
    """nnUNetv2_pick_benchmark_export on the test images: identical segmentations, both models timed; a changed
    exported weight makes the segmentations differ, which the command reports with exit status 1."""
    model_folder = Path(trained["fold"]).parent
    run_checked([command("nnUNetv2_pick_export"), "-i", str(model_folder), "-o", str(tmp_path / "exported")],
                dict(os.environ))
    exported = tmp_path / "exported" / f"nnUNetTrainer__nnUNetPlans__{CONFIGURATION}"
    env = {**os.environ, "nnUNet_extTrainer": trained["nnUNet_extTrainer"]}  # the user's PICK subclass lives there
    figures_file = tmp_path / "inference.json"
    benchmark = [command("nnUNetv2_pick_benchmark_export"), "-i", str(model_folder), "-e", str(exported), "-imgs",
                 str(trained["raw"] / "imagesTs"), "-n", "1", "-device", "cpu"]
    proc = run_checked([*benchmark, "--json", str(figures_file)], env)
    figures = json.loads(figures_file.read_text(encoding="utf-8"))
    assert figures["cases"] == len(TEST)
    assert figures["identical_cases"] == len(TEST)
    seconds = figures["median_case_s"]
    assert seconds["PICK"] > 0
    assert seconds["exported"] > 0
    assert figures["time_ratio"] == pytest.approx(seconds["exported"] / seconds["PICK"])
    assert f"voxel-identical segmentations: {len(TEST)} of {len(TEST)} cases" in proc.stdout

    # shift the exported primary decoder's background logit up by 100: every voxel becomes background
    checkpoint = exported / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(checkpoint, weights_only=True)
    head = max(k for k in ckpt["network_weights"] if k.startswith("decoder.seg_layers.") and k.endswith(".bias"))
    ckpt["network_weights"][head][0] += 100
    torch.save(ckpt, checkpoint)
    changed = subprocess.run([*benchmark, "--max-cases", "1"], env=env, capture_output=True,
                             encoding="utf-8", errors="replace")
    assert changed.returncode == 1
    assert "segmentations differ" in changed.stderr
    assert "voxel-identical segmentations: 0 of 1 cases" in changed.stdout
