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
``--compare`` also trains nnU-Net's labeled-only ``nnUNetTrainer`` on the same schedule and split (``imagesUnlabeled``
is invisible to it) and reports both arms side by side.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.subprocesses import installed_command, run_streamed
from nnunet_pick.training.progress_lines import PROGRESS_MESSAGE, format_duration

DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID:03d}_PICKDemoHippocampus"
MARKER = ".nnunet_pick_demo"
N_LABELED, N_VALIDATION, N_TEST = 12, 4, 6
CPU_CONFIGURATION = "2d_demo_cpu"
CPU_BATCH_SIZE = 8


@dataclass
class ArmResult:
    """One trained arm of the demo: its trainer, folders and test Dice per class and per case."""

    name: str
    trainer: str
    model_folder: Path
    predictions: Path
    dice_per_class: dict[str, float]
    dice_per_case: dict[str, dict[str, float]]


@dataclass
class DemoResult:
    """What the demo produced: the PICK arm, the labeled-only arm (``--compare``) or None, timings in seconds."""

    workdir: Path
    configuration: str
    pick: ArmResult
    baseline: ArmResult | None
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


#: the messages of nnU-Net commands the demo shows on its console (after nnU-Net's timestamp): the trainers'
#: progress lines, nnU-Net's final validation and nnUNetv2_predict's per-case lines
SHOWN_MESSAGE = re.compile(PROGRESS_MESSAGE.pattern + r"|^predicting \S+$|^done with \S+$")
NNUNET_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?: ")


class DemoConsole:
    """The demo's console: its own lines, a selection of the commands' lines, and a line whenever it was quiet.

    Args:
        command_log: where the commands' full output goes (named in the quiet lines).
        log: prints one line (``print`` by default).
        width: lines longer than this are wrapped.
    """

    def __init__(self, command_log: Path, log: Callable[[str], None] = print, width: int = 118) -> None:
        self.command_log = command_log
        self.log = log
        self.width = width
        self.step = ""
        self.predicted = 0

    def say(self, text: str) -> None:
        """Print ``[demo] text``, wrapped."""
        self.log(textwrap.fill(text, self.width, initial_indent="[demo] ", subsequent_indent="       ",
                               break_on_hyphens=False, break_long_words=False))

    def command_line(self, line: str) -> bool:
        """Show ``line`` of a running command if it is one of :data:`SHOWN_MESSAGE`; True if shown."""
        message = NNUNET_TIMESTAMP.sub("", line.strip())
        if not SHOWN_MESSAGE.match(message):
            return False
        if message.startswith("done with "):
            self.predicted += 1
            message = f"predicted {message[len('done with '):]} ({self.predicted} done)"
        elif message.startswith("predicting "):
            message = f"final validation: {message}"
        self.log(textwrap.fill(message, self.width, initial_indent="[demo]   ", subsequent_indent="           ",
                               break_on_hyphens=False, break_long_words=False))
        return True

    def quiet(self, seconds: float) -> None:
        """The line shown when a command has printed nothing worth showing for a while."""
        self.say(f"... {self.step} still running ({format_duration(seconds)} so far; full output in "
                 f"{self.command_log})")


def run_demo(workdir: Path, device: str = "cpu", full: bool = False, compare: bool = False,
             pick_trainer: str | None = None, baseline_trainer: str | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Build the dataset, plan, preprocess, train PICK (and with ``compare`` nnU-Net's labeled-only baseline on the
    same split), predict the test cases and score them.

    Progress goes to ``log`` while it runs: each step before it starts, the trainers' progress lines (a time
    estimate after the first iterations, one summary per epoch), the predicted cases, and a line whenever a command
    was quiet for 45 s.

    Args:
        workdir: folder for nnUNet_raw / nnUNet_preprocessed / nnUNet_results / predictions (see
            :func:`prepare_workdir`).
        device: ``cpu`` or ``cuda``.
        full: train the unchanged plans with ``nnUNetTrainerPICK_100epochs`` instead of the CPU-sized schedule.
        compare: also train, predict and score the labeled-only baseline.
        pick_trainer: the PICK trainer (default ``nnUNetTrainerPICK_demo``, with ``full``
            ``nnUNetTrainerPICK_100epochs``).
        baseline_trainer: the labeled-only trainer (default ``nnUNetTrainer_demo``, with ``full``
            ``nnUNetTrainer_demoFull``).
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
    pick_trainer = pick_trainer or ("nnUNetTrainerPICK_100epochs" if full else "nnUNetTrainerPICK_demo")
    baseline_trainer = baseline_trainer or ("nnUNetTrainer_demoFull" if full else "nnUNetTrainer_demo")
    command_log = workdir / "demo_commands.log"
    console = DemoConsole(command_log, log)
    seconds: dict[str, float] = {}

    def step(name: str, args: list[str]) -> None:
        console.step = name
        console.say(f"{name}: {' '.join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args))}")
        start = time.perf_counter()
        run_streamed(args, env, command_log, console.command_line, console.quiet)
        seconds[name] = time.perf_counter() - start

    console.say(f"every command's full output goes to {command_log}")
    roles = build_dataset(workdir / "nnUNet_raw")
    console.say(f"dataset {DATASET_NAME}: {len(roles['labeled'])} labeled ({N_LABELED - N_VALIDATION} train / "
                f"{N_VALIDATION} validation in fold 0), {len(roles['unlabeled'])} unlabeled in imagesUnlabeled, "
                f"{len(roles['test'])} test cases")
    raw = workdir / "nnUNet_raw" / DATASET_NAME
    step("plan and preprocess", [installed_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                                 "-c", preprocessed_configuration, "-np", "2"])
    if not full:
        add_cpu_configuration(workdir / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json")
        console.say(f"CPU-sized run: plans configuration {CPU_CONFIGURATION} = nnU-Net's 2d with batch size "
                    f"{CPU_BATCH_SIZE}; trainer {pick_trainer} (nnUNetTrainerPICK_demo: 18 epochs x 25 iterations, "
                    f"the first 12 labeled-only). Use --full on a GPU for the 3d_fullres plans and a 100-epoch "
                    f"schedule.")
    step("preprocess unlabeled", [installed_command("nnUNetv2_pick_preprocess_unlabeled"), "-d", str(DATASET_ID),
                                  "-c", configuration, "-np", "2"])

    def train_predict_score(name: str, trainer: str) -> ArmResult:
        console.say(f"train {name}: the trainer prints its time estimate after 2 iterations, then 1-2 lines per "
                    f"epoch")
        step(f"train {name}", [installed_command("nnUNetv2_train"), str(DATASET_ID), configuration, "0",
                               "-tr", trainer, "-device", device])
        predictions = workdir / ("predictions" if name == "PICK" else f"predictions_{name}")
        console.predicted = 0
        step(f"predict {name}", [installed_command("nnUNetv2_predict"), "-i", str(raw / "imagesTs"),
                                 "-o", str(predictions), "-d", str(DATASET_ID), "-c", configuration, "-tr", trainer,
                                 "-f", "0", "-device", device, "-npp", "1", "-nps", "1"])
        summary = compute_metrics_on_folder(
            str(raw / "labelsTs"), str(predictions), str(predictions / "summary.json"),
            SimpleITKIO(), ".nii.gz", [1, 2], num_processes=1)
        names = {1: "Anterior", 2: "Posterior"}
        dice_per_class = {names[int(k)]: float(v["Dice"]) for k, v in summary["mean"].items()}
        dice_per_case = {Path(c["prediction_file"]).name: {names[int(k)]: float(v["Dice"])
                                                           for k, v in c["metrics"].items()}
                         for c in summary["metric_per_case"]}
        model_folder = workdir / "nnUNet_results" / DATASET_NAME / f"{trainer}__nnUNetPlans__{configuration}"
        return ArmResult(name, trainer, model_folder, predictions, dice_per_class, dice_per_case)

    pick = train_predict_score("PICK", pick_trainer)
    baseline = train_predict_score("baseline", baseline_trainer) if compare else None
    return DemoResult(workdir, configuration, pick, baseline, seconds)


def format_report(result: DemoResult) -> list[str]:
    """The demo's closing lines: the test Dice with what it means and what to expect, both arms side by side with
    their difference when the baseline was trained, and where the outputs are."""
    pick, base = result.pick, result.baseline
    classes = list(pick.dice_per_class)
    lines = ["", (f"[demo] Test-set Dice on the {len(pick.dice_per_case)} held-out cases, which no training step "
                  "saw (nnU-Net's compute_metrics_on_folder). Dice is the overlap of the predicted and the reference "
                  "structure: 0 = none, 1 = identical.")]
    if base is None:
        lines.append(f"    {'case':28s} " + "  ".join(f"{c:>9s}" for c in classes))
        for case, dice in pick.dice_per_case.items():
            lines.append(f"    {case:28s} " + "  ".join(f"{dice[c]:9.3f}" for c in classes))
        lines.append(f"    {'mean (PICK)':28s} " + "  ".join(f"{pick.dice_per_class[c]:9.3f}" for c in classes))
    else:
        lines.append(f"    {'class':12s} {'PICK':>8s} {'nnU-Net, labeled only':>22s} {'difference':>11s}")
        for c in classes:
            diff = pick.dice_per_class[c] - base.dice_per_class[c]
            lines.append(f"    {c:12s} {pick.dice_per_class[c]:8.3f} {base.dice_per_class[c]:22.3f} {diff:+11.3f}")
        lines.append(f"[demo] PICK = {pick.trainer}; nnU-Net = {base.trainer} on the same labeled cases and split, "
                     f"without the unlabeled ones; difference = PICK - nnU-Net, positive = PICK better.")
        lines.append("[demo] Per case (PICK / nnU-Net):")
        for case, dice in pick.dice_per_case.items():
            lines.append(f"    {case:28s} " + "  ".join(
                f"{c} {dice[c]:.3f} / {base.dice_per_case[case][c]:.3f}" for c in classes))
        lines.append(f"[demo] One short run per arm, {len(pick.dice_per_case)} test cases: a difference of a few "
                     "hundredths can come from the random seed alone. nnUNetv2_pick_benchmark_ssl repeats seeded runs "
                     "and reports the spread.")
    if pick.trainer == "nnUNetTrainerPICK_demo":
        lines.append("[demo] What to expect: this CPU demo trains nnU-Net's 2d network on 8 labeled cases for 450 "
                     "iterations, a small fraction of a real training (3d_fullres, 1000 epochs x 250 iterations, on a "
                     "GPU). nnU-Net trained on all of MSD Hippocampus scores about 0.9 for both classes, so clearly "
                     "lower scores are expected here.")
    if base is None:
        lines.append("[demo] Whether PICK helped: nnUNetv2_pick_demo --compare also trains nnU-Net's labeled-only "
                     "baseline on the same split and prints both with the difference.")
    for arm in (pick, base):
        if arm is None:
            continue
        lines.append(f"[demo] {arm.name} model: {arm.model_folder}")
        lines.append(f"       training log, progress.png{', MIM figures' if arm is pick else ''}: "
                     f"{arm.model_folder / 'fold_0'}")
        lines.append(f"       test predictions: {arm.predictions} (scores in summary.json)")
    lines.append(f"[demo] commands and their output: {result.workdir / 'demo_commands.log'}")
    lines.append("[demo] seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
    return [textwrap.fill(line, 118, subsequent_indent="       ", break_on_hyphens=False, break_long_words=False)
            if line.startswith("[demo]") else line for line in lines]
