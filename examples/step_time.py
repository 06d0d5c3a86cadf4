"""Time training iterations of nnUNetTrainer and nnUNetTrainerPICK on the same plans and real preprocessed data.

Usage (a planned and preprocessed dataset with unlabeled data, nnU-Net's environment variables set):

    python examples/step_time.py -d 4 -c 3d_fullres [-p nnUNetPlans] [-n 10] [-device cpu]

Trainer logs go to a temporary folder, never into ``nnUNet_results``. The two trainers' steps alternate (one
nnU-Net step, one PICK step after warm-up, ...) so that drift of the machine affects both equally; the first step of
each is discarded. Prints the median step time of each, their ratio, and the ratio the pass count predicts: a trained
pass costs about 3 forward passes, so nnU-Net's step is 3 and PICK's is labeled 3 trained passes (9) + unlabeled
1 no-grad pass and 2 trained passes (7) = 16 with equal batch sizes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from nnunet_pick import nnUNetTrainerPICK


def make(cls, dataset: str, configuration: str, plans_identifier: str, device: torch.device):
    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(dataset))
    plans = load_json(join(folder, plans_identifier + ".json"))
    plans["continue_training"] = False
    dataset_json = load_json(join(folder, "dataset.json"))
    trainer = cls(plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json, device=device)
    trainer.on_train_start()
    if isinstance(trainer, nnUNetTrainerPICK):
        trainer.current_epoch = trainer.num_warmup_epochs  # time the full PICK step
    return trainer


def timed_step(trainer) -> float:
    batch = next(trainer.dataloader_train)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-d", required=True)
    parser.add_argument("-c", required=True)
    parser.add_argument("-p", default="nnUNetPlans")
    parser.add_argument("-n", type=int, default=10, help="timed steps per trainer (after one untimed)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    # trainers write logs into nnUNet_results/...; keep them (and nothing else) out of the user's results
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="pick_step_time_")
    device = torch.device(args.device)
    trainers = {name: make(cls, args.d, args.c, args.p, device)
                for name, cls in (("nnUNetTrainer", nnUNetTrainer), ("nnUNetTrainerPICK", nnUNetTrainerPICK))}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for i in range(args.n + 1):
        for name, trainer in trainers.items():
            t = timed_step(trainer)
            if i > 0:
                times[name].append(t)
    medians = {name: statistics.median(v) for name, v in times.items()}
    for name, m in medians.items():
        print(f"{name:20s} median step {m:.3f} s over {args.n} steps (batch size {trainers[name].batch_size})")
    print(f"time ratio PICK / nnU-Net: {medians['nnUNetTrainerPICK'] / medians['nnUNetTrainer']:.2f} "
          f"(pass-count prediction 16 / 3 = {16 / 3:.2f})")
    for trainer in trainers.values():
        loaders = (trainer.dataloader_train, trainer.dataloader_val, getattr(trainer, "dataloader_unlabeled", None))
        for loader in loaders:
            if hasattr(loader, "_finish"):
                loader._finish()


if __name__ == "__main__":
    main()
