"""Trainer start-up time and resident memory against the size of the unlabeled pool (100 ... 5 000 small cases).

Usage (CPU is enough; takes a few minutes for the default sizes):

    python examples/unlabeled_pool_scaling.py [--sizes 100 1000 5000] [--workdir DIR] [-np 2]

Builds one nnU-Net dataset from the embedded Hippocampus cases (nnunet_pick/demo_data; 20 labeled cases), plans and
preprocesses it with nnU-Net (``2d``), then for each pool size N fills ``imagesUnlabeled`` with N small volumes
generated from the embedded images (a random flip and intensity scale of a real case, so each file differs),
preprocesses them with ``nnUNetv2_pick_preprocess_unlabeled`` (timed; parallel, with its progress bar) and starts
``nnUNetTrainerPICK`` in a fresh process: construct, ``on_train_start`` (initialise, both data loaders with nnU-Net's
background workers) and one unlabeled batch. That process reports its wall time and its peak resident memory
(``resource.getrusage``: the main process, and the largest data-loader worker).

Prints one row per N and the ratios of the largest pool to the smallest. A flat start-up means the pool is listed,
not read: cases are opened only when a patch is drawn from them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

from nnunet_pick.demo_data import HIPPOCAMPUS

DATASET_ID = 997
DATASET_NAME = f"Dataset{DATASET_ID}_PoolScaling"
NUM_LABELED = 20

# runs in a fresh interpreter per pool size, so each measurement starts from nothing
START_UP = """
import json, resource, sys, time
start = time.perf_counter()
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunet_pick import nnUNetTrainerPICK

folder = join(nnUNet_preprocessed, sys.argv[1])
plans = load_json(join(folder, "nnUNetPlans.json"))
plans["configurations"]["2d"]["batch_size"] = 8  # in memory only: the demo's CPU batch size
plans["continue_training"] = False  # what nnU-Net's get_trainer_from_args sets for a new run
trainer = nnUNetTrainerPICK(plans, "2d", 0, load_json(join(folder, "dataset.json")), torch.device("cpu"))
trainer.on_train_start()
batch = next(trainer.dataloader_unlabeled)
seconds = time.perf_counter() - start
pool = len(trainer.unlabeled_case_folders)
for loader in (trainer.dataloader_train, trainer.dataloader_val, trainer.dataloader_unlabeled):
    if hasattr(loader, "_finish"):
        loader._finish()
print(json.dumps({"pool": pool, "seconds": seconds,
                  "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_worker_max_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "batch": list(batch["data"].shape)}))
"""


def run(args: list[str], env: dict, log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        proc = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {proc.returncode}); see {log}")


def command(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def write_pool(folder: Path, size: int, seed: int = 0) -> None:
    """``size`` generated cases from the embedded images: random flips and intensity scales of real cases."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sorted((HIPPOCAMPUS / "imagesTr").glob("*_0000.nii.gz"))[NUM_LABELED:]
    images = [sitk.ReadImage(str(p)) for p in sources]
    rng = np.random.default_rng(seed)
    for i in range(size):
        src = images[i % len(images)]
        arr = sitk.GetArrayFromImage(src).astype(np.float32)
        arr = np.flip(arr, axis=int(rng.integers(arr.ndim))) * float(rng.uniform(0.8, 1.2))
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.CopyInformation(src)
        sitk.WriteImage(img, str(folder / f"pool_{i:05d}_0000.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--workdir", default=None, help="where the nnU-Net folders go (default: a temporary folder)")
    parser.add_argument("-np", type=int, default=2, help="processes for preprocessing")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pick_pool_scaling_"))
    dirs = {k: workdir / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in dirs.items()}, "nnUNet_compile": "f",
           "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "2"), "nnUNet_def_n_proc": str(args.np)}
    log = workdir / "commands.log"

    raw = dirs["nnUNet_raw"] / DATASET_NAME
    if not (dirs["nnUNet_preprocessed"] / DATASET_NAME / "nnUNetPlans_2d").is_dir():
        for sub in ("imagesTr", "labelsTr"):
            (raw / sub).mkdir(parents=True, exist_ok=True)
        labeled = sorted(p.name[:-len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:NUM_LABELED]
        for case in labeled:
            shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
            shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
        (raw / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
            "numTraining": NUM_LABELED, "file_ending": ".nii.gz", "licence": "CC-BY-SA 4.0",
            "reference": "MSD Task04_Hippocampus (Vanderbilt University Medical Center)"}), encoding="utf-8")
        run([command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", str(args.np)],
            env, log)

    rows = []
    for size in args.sizes:
        write_pool(raw / "imagesUnlabeled", size)
        shutil.rmtree(dirs["nnUNet_preprocessed"] / DATASET_NAME / "nnUNetPlans_2d_unlabeled", ignore_errors=True)
        t0 = time.perf_counter()
        run([command("nnUNetv2_pick_preprocess_unlabeled"), "-d", str(DATASET_ID), "-c", "2d", "-np", str(args.np)],
            env, log)
        preprocess_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, "-c", START_UP, DATASET_NAME], env=env,
                             capture_output=True, encoding="utf-8", errors="replace")
        if out.returncode != 0:
            raise SystemExit(f"trainer start-up failed for pool {size}:\n{out.stderr[-4000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        if row["pool"] != size:
            raise SystemExit(f"the trainer saw {row['pool']} unlabeled cases, expected {size}")
        row["preprocess_s"] = preprocess_s
        rows.append(row)
        print(f"pool {size:5d}: preprocess {preprocess_s:7.1f} s ({1000 * preprocess_s / size:5.1f} ms/case), "
              f"trainer start-up {row['seconds']:5.1f} s, peak RSS main {row['rss_main_mib']:6.0f} MiB, "
              f"largest worker {row['rss_worker_max_mib']:6.0f} MiB", flush=True)
    first, last = rows[0], rows[-1]
    ratio = {k: last[k] / first[k] for k in ("seconds", "rss_main_mib", "rss_worker_max_mib")}
    print(f"pool {last['pool']} vs {first['pool']} ({last['pool'] / first['pool']:.0f}x the cases): start-up time "
          f"x{ratio['seconds']:.2f}, peak RSS main x{ratio['rss_main_mib']:.2f}, largest worker "
          f"x{ratio['rss_worker_max_mib']:.2f}")
    print(f"work folder: {workdir}")


if __name__ == "__main__":
    main()
