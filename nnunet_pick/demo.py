"""The embedded end-to-end demo (``nnUNetv2_pick_demo``): real data, real nnU-Net commands, PICK training.

From the 40 embedded Hippocampus cases it builds an nnU-Net raw dataset with 12 labeled cases (``imagesTr``,
cross-validation fold 0 = 8 training / 4 validation cases), 22 unlabeled cases (``imagesUnlabeled``, labels not
copied) and 6 held-out test cases (``imagesTs`` / ``labelsTs``). Then it runs, as subprocesses, the same commands a
user runs: ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_pick_preprocess_unlabeled``, ``nnUNetv2_train ... -tr
nnUNetTrainerPICK_...``, ``nnUNetv2_predict``, and scores the test predictions with nnU-Net's
``compute_metrics_on_folder``.

On the CPU the demo shrinks the work so that it ends within about 15 minutes on 2 cores: it trains nnU-Net's ``2d``
configuration (a 2D U-Net is far cheaper on a CPU than the 3D one) as the plans configuration ``2d_demo_cpu``, which
inherits ``2d`` (same network, same preprocessed data) with the batch size lowered to 8, and the trainer
``nnUNetTrainerPICK_demo``: 18 epochs of 25 iterations, the first 12 labeled-only. That long a warm-up (2/3 instead
of PICK's 25 %) is needed because nnU-Net only leaves its all-background start after about 150 labeled iterations,
and pseudo-labels from an all-background model mask nothing. nnU-Net's worker pools are limited to 2 processes
(``nnUNet_def_n_proc``) and the augmentation to 1 worker per loader (``nnUNet_n_proc_DA``), unless set.
``--full`` (meant for a GPU) trains the unchanged ``3d_fullres`` plans with ``nnUNetTrainerPICK_100epochs``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.subprocesses import installed_command, run_logged

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID:03d}_PICKDemoHippocampus"
MARKER = ".nnunet_pick_demo"
N_LABELED, N_VALIDATION, N_TEST = 12, 4, 6
CPU_CONFIGURATION = "2d_demo_cpu"
CPU_BATCH_SIZE = 8


@dataclass
class DemoResult:
    """What the demo produced: folders, the test Dice per class and per case, timings in seconds."""

    workdir: Path
    model_folder: Path
    predictions: Path
    dice_per_class: dict[str, float]
    dice_per_case: dict[str, dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_workdir(workdir: Path) -> None:
    """Create ``workdir`` or reuse one made by an earlier demo run; refuse any other non-empty folder.

    Raises:
        FileExistsError: if ``workdir`` holds files that a demo did not create.
    """
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise FileExistsError(f"{workdir} exists and was not made by nnUNetv2_pick_demo; choose an empty or new "
                              f"folder with --workdir (nothing was changed).")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by nnUNetv2_pick_demo\n", encoding="utf-8")
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions"):
        target = workdir / sub / DATASET_NAME if sub != "predictions" else workdir / sub
        shutil.rmtree(target, ignore_errors=True)


def build_dataset(raw_root: Path) -> dict[str, list[str]]:
    """Write the demo's raw dataset from the embedded cases; returns the case ids of each role.

    Roles (sorted ids, deterministic): the first 12 are labeled, the next 6 are the test set, the other 22 are
    unlabeled. ``splits_final.json`` (fold 0: 8 train / 4 val) is written beside ``dataset.json``; nnU-Net's
    planner copies it to the preprocessed folder.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    ids = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
    roles = {"labeled": ids[:N_LABELED], "test": ids[N_LABELED:N_LABELED + N_TEST],
             "unlabeled": ids[N_LABELED + N_TEST:]}
    folder = raw_root / DATASET_NAME
    for sub in ("imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in roles["labeled"]:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTr")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr")
    for case in roles["test"]:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTs")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", folder / "labelsTs")
    for case in roles["unlabeled"]:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesUnlabeled")
    shutil.copy(HIPPOCAMPUS / "README.md", folder / "README.md")
    generate_dataset_json(
        str(folder), {0: "MRI"}, {"background": 0, "Anterior": 1, "Posterior": 2}, N_LABELED, ".nii.gz",
        dataset_name=DATASET_NAME, reference="Vanderbilt University Medical Center via the Medical Segmentation "
        "Decathlon (Simpson et al. 2019, Antonelli et al. 2022)", license="CC-BY-SA 4.0",
        description="nnunet-pick demo: 12 labeled, 22 unlabeled (imagesUnlabeled), 6 test cases of MSD "
                    "Task04_Hippocampus; see README.md", converted_by="nnUNetv2_pick_demo")
    train = roles["labeled"][: N_LABELED - N_VALIDATION]
    val = roles["labeled"][N_LABELED - N_VALIDATION:]
    (folder / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}], indent=1), encoding="utf-8")
    return roles


def add_cpu_configuration(plans_file: Path) -> None:
    """Add ``2d_demo_cpu`` to the plans: nnU-Net's ``2d`` with batch size 8 (same network, same data)."""
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"][CPU_CONFIGURATION] = {"inherits_from": "2d", "batch_size": CPU_BATCH_SIZE}
    plans_file.write_text(json.dumps(plans, indent=4), encoding="utf-8")


def run_demo(workdir: Path, device: str = "cpu", full: bool = False, log=print) -> DemoResult:
    """Build the dataset, plan, preprocess, train PICK, predict the test cases and score them.

    Args:
        workdir: folder for nnUNet_raw / nnUNet_preprocessed / nnUNet_results / predictions (see
            :func:`prepare_workdir`).
        device: ``cpu`` or ``cuda``.
        full: train the unchanged plans with ``nnUNetTrainerPICK_100epochs`` instead of the CPU-sized schedule.
        log: where progress lines go.

    Returns:
        :class:`DemoResult`.

    Raises:
        FileExistsError: see :func:`prepare_workdir`.
        RuntimeError: if an nnU-Net command fails (with the end of its log).
    """
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    workdir = workdir.resolve()
    prepare_workdir(workdir)
    env = dict(os.environ)
    env.update(nnUNet_raw=str(workdir / "nnUNet_raw"), nnUNet_preprocessed=str(workdir / "nnUNet_preprocessed"),
               nnUNet_results=str(workdir / "nnUNet_results"))
    if device == "cpu":
        # 2 cores: nnU-Net's default pools of 8 spawned workers cost more than they save
        env.setdefault("nnUNet_n_proc_DA", "1")
        env.setdefault("nnUNet_def_n_proc", "2")
    configuration = "3d_fullres" if full else CPU_CONFIGURATION
    preprocessed_configuration = "3d_fullres" if full else "2d"
    trainer = "nnUNetTrainerPICK_100epochs" if full else "nnUNetTrainerPICK_demo"
    command_log = workdir / "demo_commands.log"
    seconds: dict[str, float] = {}

    def step(name: str, args: list[str]) -> None:
        log(f"[demo] {name}: {' '.join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args))}")
        start = time.perf_counter()
        run_logged(args, env, command_log)
        seconds[name] = time.perf_counter() - start

    roles = build_dataset(workdir / "nnUNet_raw")
    log(f"[demo] dataset {DATASET_NAME}: {len(roles['labeled'])} labeled ({N_LABELED - N_VALIDATION} train / "
        f"{N_VALIDATION} validation in fold 0), {len(roles['unlabeled'])} unlabeled in imagesUnlabeled, "
        f"{len(roles['test'])} test cases")
    raw = workdir / "nnUNet_raw" / DATASET_NAME
    step("plan and preprocess", [installed_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                                 "-c", preprocessed_configuration, "-np", "2"])
    if not full:
        add_cpu_configuration(workdir / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json")
        log(f"[demo] CPU-sized run: plans configuration {CPU_CONFIGURATION} = nnU-Net's 2d with batch size "
            f"{CPU_BATCH_SIZE}; trainer {trainer} (18 epochs x 25 iterations, the first 12 epochs labeled-only). "
            f"Use --full on a GPU for the 3d_fullres plans and a 100-epoch schedule.")
    step("preprocess unlabeled", [installed_command("nnUNetv2_pick_preprocess_unlabeled"), "-d", str(DATASET_ID),
                                  "-c", configuration, "-np", "2"])
    step("train", [installed_command("nnUNetv2_train"), str(DATASET_ID), configuration, "0", "-tr", trainer,
                   "-device", device])
    predictions = workdir / "predictions"
    step("predict", [installed_command("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions),
                     "-d", str(DATASET_ID), "-c", configuration, "-tr", trainer, "-f", "0", "-device", device,
                     "-npp", "1", "-nps", "1"])
    summary = compute_metrics_on_folder(
        str(raw / "labelsTs"), str(predictions), str(predictions / "summary.json"),
        SimpleITKIO(), ".nii.gz", [1, 2], num_processes=1)
    names = {1: "Anterior", 2: "Posterior"}
    dice_per_class = {names[int(k)]: float(v["Dice"]) for k, v in summary["mean"].items()}
    dice_per_case = {Path(c["prediction_file"]).name: {names[int(k)]: float(v["Dice"])
                                                       for k, v in c["metrics"].items()}
                     for c in summary["metric_per_case"]}
    model_folder = (workdir / "nnUNet_results" / DATASET_NAME / f"{trainer}__nnUNetPlans__{configuration}")
    return DemoResult(workdir, model_folder, predictions, dice_per_class, dice_per_case, seconds)
