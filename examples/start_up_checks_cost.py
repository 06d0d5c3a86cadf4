"""What the input checks cost at start-up, on a 5 000-case unlabeled pool (issue 11).

Usage (CPU; a few minutes):

    python examples/start_up_checks_cost.py [--size 5000] [--workdir DIR] [-np 2] [--code DIR]

Builds one nnU-Net dataset from the embedded Hippocampus cases (nnunet_pick/demo_data: 20 labeled cases, planned and
preprocessed by nnU-Net for ``2d``) and an ``imagesUnlabeled`` pool of ``--size`` cases: symbolic links to the 20 other
embedded images, so every file is a real, complete ``.nii.gz`` (about 90 kB each). Its preprocessed cases are those 20
images preprocessed once by ``nnUNetv2_pick_preprocess_unlabeled`` and hard-linked under every id, i.e. exactly what
preprocessing the pool would write. Then, each in a fresh interpreter, with nothing left to preprocess:

- ``nnUNetv2_pick_preprocess_unlabeled -d D -c 2d``: the folder checks, then nothing to do;
- trainer start-up: construct ``nnUNetTrainerPICK``, ``on_train_start`` (start-up checks, initialise, data loaders),
  one unlabeled batch;

both "cold" (no cache of earlier checks: every file is decoded) and "warm" (second run: unchanged files are not
decoded again). Each row gives the wall time and the CPU time (user + system of the process, its threads and its
workers): on a machine shared with other work the CPU time is the figure to compare. The trainer row's wall time
is measured inside the process from before its imports to the first unlabeled batch. ``--code DIR`` puts DIR first
on PYTHONPATH of those processes, e.g. an export of an earlier version
(``git archive <commit> nnunet_pick trainers | tar -x -C DIR``) to measure "before".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nnunet_pick.demo_data import HIPPOCAMPUS

DATASET_ID = 996
DATASET_NAME = f"Dataset{DATASET_ID}_StartUpCost"
NUM_LABELED = 20
CACHE = ".pick_file_checks.json"

START_UP = """
import json, sys, time
start = time.perf_counter()
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunet_pick import nnUNetTrainerPICK

folder = join(nnUNet_preprocessed, sys.argv[1])
plans = load_json(join(folder, "nnUNetPlans.json"))
plans["continue_training"] = False
trainer = nnUNetTrainerPICK(plans, "2d", 0, load_json(join(folder, "dataset.json")), torch.device("cpu"))
trainer.on_train_start()
next(trainer.dataloader_unlabeled)
seconds = time.perf_counter() - start
pool = len(trainer.unlabeled_case_folders)
for loader in (trainer.dataloader_train, trainer.dataloader_val, trainer.dataloader_unlabeled):
    if hasattr(loader, "_finish"):
        loader._finish()
print(json.dumps({"pool": pool, "seconds": seconds}))
"""


def timed(args: list[str], env: dict) -> tuple[tuple[float, float], str]:
    """Run a command; returns ((wall seconds, CPU seconds of it and its children), stdout). The CPU time (user +
    system, all threads and worker processes) is the figure to compare on a machine shared with other work."""
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(args, env=env, capture_output=True, encoding="utf-8", errors="replace")
    seconds, c1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return (seconds, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)), proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--workdir", default=None, help="where the nnU-Net folders go (default: a temporary folder)")
    parser.add_argument("-np", type=int, default=2, help="processes (nnU-Net's default_num_processes)")
    parser.add_argument("--code", default=None, help="put this folder first on PYTHONPATH of the timed processes")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pick_start_up_cost_"))
    dirs = {k: workdir / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "nnUNet_compile": "f",
           "nnUNet_def_n_proc": str(args.np)}
    # the trainer's data loaders in its own process (nnU-Net's planning needs nnUNet_n_proc_DA > 0: set it here only)
    timed_env = dict(env, nnUNet_n_proc_DA="0",
                     PYTHONPATH=os.pathsep.join(filter(None, [args.code, os.environ.get("PYTHONPATH")])))
    raw = dirs["nnUNet_raw"] / DATASET_NAME
    pre = dirs["nnUNet_preprocessed"] / DATASET_NAME
    ids = sorted(p.name[:-len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))
    labeled, sources = ids[:NUM_LABELED], ids[NUM_LABELED:]
    if not (pre / "nnUNetPlans_2d").is_dir():
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(parents=True, exist_ok=True)
        for case in labeled:
            shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
            shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
            "numTraining": NUM_LABELED, "file_ending": ".nii.gz"}), encoding="utf-8")
        timed([str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d",
               "-np", str(args.np)], env)
    # the pool: the 20 source images preprocessed once, then --size ids linked to them (raw: symlinks, preprocessed:
    # hard links written after the images, so they count as up to date)
    unl = raw / "imagesUnlabeled"
    out = pre / "nnUNetPlans_2d_unlabeled"
    shutil.rmtree(unl, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    unl.mkdir()
    for case in sources:
        os.symlink(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", unl / f"{case}_0000.nii.gz")
    timed([sys.executable, "-m", "nnunet_pick.cli.preprocess_unlabeled", "-d", str(DATASET_ID), "-c", "2d", "-np",
           str(args.np)], env)
    for f in list(unl.iterdir()):
        f.unlink()
    for case in sources:
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            os.replace(out / f"{case}{suffix}", out / f"src_{case}{suffix}")
    for i in range(args.size):
        case = sources[i % len(sources)]
        os.symlink(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", unl / f"pool_{i:05d}_0000.nii.gz")
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            os.link(out / f"src_{case}{suffix}", out / f"pool_{i:05d}{suffix}")
    for case in sources:
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            os.remove(out / f"src_{case}{suffix}")

    rows = {}
    for what in ("cold", "warm"):
        if what == "cold":
            (pre / CACHE).unlink(missing_ok=True)
        rows[f"preprocess command, {what}"], _ = timed(
            [sys.executable, "-m", "nnunet_pick.cli.preprocess_unlabeled", "-d", str(DATASET_ID), "-c", "2d", "-np",
             str(args.np)], timed_env)
    for what in ("cold", "warm"):
        if what == "cold":
            (pre / CACHE).unlink(missing_ok=True)
        (_, cpu), stdout = timed([sys.executable, "-c", START_UP, DATASET_NAME], timed_env)
        result = json.loads(stdout.strip().splitlines()[-1])
        if result["pool"] != args.size:
            raise SystemExit(f"the trainer saw {result['pool']} unlabeled cases, expected {args.size}")
        rows[f"trainer start-up, {what}"] = (result["seconds"], cpu)
    print(f"pool of {args.size} unlabeled cases (+{NUM_LABELED} labeled), -np {args.np}, code: "
          f"{args.code or 'installed nnunet_pick'}; load average {os.getloadavg()[0]:.1f}")
    for k, (wall, cpu) in rows.items():
        print(f"  {k:30s} wall {wall:7.1f} s   CPU {cpu:7.1f} s")
    print(f"work folder: {workdir}")


if __name__ == "__main__":
    main()
