"""PICK end to end on a 2D natural-image dataset (RGB PNG) and on a multi-channel MRI dataset, through nnU-Net's
own commands (plan and preprocess, train, predict), both built from the embedded real Hippocampus cases:

- RGB PNG: per case, three neighbouring axial slices as the R, G and B channels of one ``_0000.png`` (8 bit), the
  middle slice's label as the label PNG: nnU-Net's ``NaturalImage2DIO`` reads it as 3 channels from one file.
- two-channel NIfTI: ``_0000`` the MRI itself, ``_0001`` a second "contrast" derived from it (its square root),
  as separate files the way MSD's multi-modal tasks are stored.

Each trains a short PICK schedule (1 PICK epoch, no warm-up) with ``imagesUnlabeled``, checks that the MIM
decoder reconstructs every input channel, and predicts the test images with ``nnUNetv2_predict``.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
import torch
from helpers import base_env, command, run_checked
from PIL import Image

from nnunet_pick.demo_data import HIPPOCAMPUS

pytestmark = pytest.mark.slow

CASES = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
ROLES = {"imagesTr": CASES[:8], "imagesUnlabeled": CASES[8:12], "imagesTs": CASES[12:14]}
TRAINER = "nnUNetTrainerPICK_modalityTest"


def _read(case: str, folder: str) -> np.ndarray:
    name = f"{case}_0000.nii.gz" if folder == "imagesTr" else f"{case}.nii.gz"
    return sitk.GetArrayFromImage(sitk.ReadImage(str(HIPPOCAMPUS / folder / name)))


def build_rgb_png(raw: Path) -> None:
    for role, cases in ROLES.items():
        (raw / role).mkdir(parents=True)
        for case in cases:
            image, label = _read(case, "imagesTr"), _read(case, "labelsTr")
            k = image.shape[0] // 2
            rgb = np.stack([image[k - 1], image[k], image[k + 1]], axis=-1).astype(np.float64)
            rgb = np.round(255 * (rgb - rgb.min()) / (rgb.max() - rgb.min())).astype(np.uint8)
            Image.fromarray(rgb).save(raw / role / f"{case}_0000.png")
            if role == "imagesTr":
                (raw / "labelsTr").mkdir(exist_ok=True)
                Image.fromarray(label[k].astype(np.uint8)).save(raw / "labelsTr" / f"{case}.png")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(ROLES["imagesTr"]), "file_ending": ".png",
        "licence": "CC-BY-SA 4.0", "reference": "MSD Task04_Hippocampus (Vanderbilt University Medical Center); "
                                                "middle axial slices as RGB"}), encoding="utf-8")


def build_two_channel_nifti(raw: Path) -> None:
    for role, cases in ROLES.items():
        (raw / role).mkdir(parents=True)
        for case in cases:
            img = sitk.ReadImage(str(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz"))
            sitk.WriteImage(img, str(raw / role / f"{case}_0000.nii.gz"))
            second = sitk.Sqrt(sitk.Cast(sitk.Abs(img), sitk.sitkFloat32))
            sitk.WriteImage(second, str(raw / role / f"{case}_0001.nii.gz"))
            if role == "imagesTr":
                (raw / "labelsTr").mkdir(exist_ok=True)
                sitk.WriteImage(sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz")),
                                str(raw / "labelsTr" / f"{case}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI", "1": "sqrtMRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(ROLES["imagesTr"]), "file_ending": ".nii.gz",
        "licence": "CC-BY-SA 4.0", "reference": "MSD Task04_Hippocampus (Vanderbilt University Medical Center); "
                                                "channel 1 derived"}), encoding="utf-8")


@pytest.mark.parametrize(("dataset_id", "name", "build", "channels", "ending"), [
    (992, "Dataset992_PICKTestRGB", build_rgb_png, 3, ".png"),
    (993, "Dataset993_PICKTestTwoChannel", build_two_channel_nifti, 2, ".nii.gz"),
])
def test_pick_trains_and_predicts(tmp_path, dataset_id, name, build, channels, ending):
    dirs = {k: tmp_path / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir()
    raw = dirs["nnUNet_raw"] / name
    build(raw)
    ext = tmp_path / "ext" / "modality_trainers"
    ext.mkdir(parents=True)
    (ext / "__init__.py").write_text("", encoding="utf-8")
    (ext / "short.py").write_text(textwrap.dedent(f"""
        import torch
        from nnunet_pick import nnUNetTrainerPICK

        class {TRAINER}(nnUNetTrainerPICK):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs = 1
                self.num_warmup_epochs = 0  # the one epoch trains on labeled and unlabeled data
                self.num_iterations_per_epoch = 3
                self.num_val_iterations_per_epoch = 1

            def perform_actual_validation(self, save_probabilities=False):
                pass  # nnU-Net's final validation is not under test here; nnUNetv2_predict below is
    """), encoding="utf-8")
    env = base_env(dirs, nnUNet_n_proc_DA="1", nnUNet_extTrainer=str(tmp_path / "ext"))
    run_checked([command("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "2d", "-np", "2",
                 "--verify_dataset_integrity"], env)
    run_checked([command("nnUNetv2_train"), str(dataset_id), "2d", "0", "-tr", TRAINER, "-device", "cpu"], env)

    fold = dirs["nnUNet_results"] / name / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = ckpt["network_weights"]
    first_conv = next(v for k, v in weights.items() if k.startswith("encoder.") and v.ndim == 4)
    assert first_conv.shape[1] == channels  # the encoder takes every channel
    mim_heads = [v for k, v in weights.items() if k.startswith("mim_decoder.seg_layers") and k.endswith("weight")]
    (mim_head,) = mim_heads  # the MIM decoder has one head (no deep supervision) ...
    assert mim_head.shape[0] == channels  # ... reconstructing every input channel
    log = "\n".join(p.read_text(encoding="utf-8") for p in fold.glob("training_log_*.txt"))
    assert re.search(r"PICK epoch 0: PICK .*masked fraction unlabeled", log)
    assert "PICK unlabeled pool: 4 cases (0 from splits_final.json 'unlabeled', 4 from imagesUnlabeled)" in log

    out = tmp_path / "predictions"
    run_checked([command("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(dataset_id),
                 "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    for case in ROLES["imagesTs"]:
        source = raw / "imagesTs" / f"{case}_0000{ending}"
        if ending == ".png":
            prediction, image = np.asarray(Image.open(out / f"{case}.png")), np.asarray(Image.open(source))
            assert prediction.shape == image.shape[:2]
        else:
            prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}{ending}")))
            assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(source))).shape
        assert set(np.unique(prediction)) <= {0, 1, 2}
