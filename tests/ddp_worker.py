"""One rank of the CPU DDP test (tests/test_ddp.py), started by ``torch.multiprocessing.spawn``; also the
single-process reference run. Not a test module itself (no ``test_`` prefix)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIGURATION = "2d"
GLOBAL_BATCH = 4  # labeled and unlabeled patches per step over all ranks


def build_trainer(preprocessed: Path, ddp: bool):
    """nnUNetTrainerPICK on the CPU with a global batch of 4 (labeled and unlabeled), as nnUNetv2_train builds it.

    nnU-Net's DDP is CUDA-only in two places this CPU test has to change: ``nnUNetTrainer.__init__`` moves the device
    to ``cuda:rank`` (with a GradScaler), and ``initialize`` wraps the network in ``DDP(..., device_ids=[rank])``,
    which DDP accepts for CUDA modules only. Everything PICK adds runs unchanged.
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module  # noqa: N813 (a module)
    from torch.nn.parallel import DistributedDataParallel

    from nnunet_pick import nnUNetTrainerPICK

    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["configurations"][CONFIGURATION]["batch_size"] = GLOBAL_BATCH
    plans["continue_training"] = False  # set by nnU-Net's get_trainer_from_args
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    if ddp:
        nnunet_trainer_module.DDP = lambda module, device_ids=None: DistributedDataParallel(module)
    trainer = nnUNetTrainerPICK(plans, CONFIGURATION, 0, dataset_json, torch.device("cpu"))
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    trainer.unlabeled_batch_size = GLOBAL_BATCH
    trainer.initialize()
    return trainer


class Repeat:
    """An endless loader yielding one fixed unlabeled batch."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __next__(self) -> dict:
        return {"data": self.data.clone()}


def run_steps(trainer, batches: dict, rows: slice) -> dict:
    """One warm-up step, then one PICK step, on ``rows`` of the fixed batches; returns weights and step outputs.

    Two steps only: from the third on, float differences of the order of summation can flip the argmax of a few
    near-tied voxels, so the pseudo-labels and masks (discontinuous in the weights) stop being comparable."""
    trainer._unwrapped_network().load_state_dict(batches["initial_weights"])
    trainer.dataloader_unlabeled = Repeat(batches["unlabeled"][rows])
    labeled = {"data": batches["data"][rows], "target": [t[rows] for t in batches["target"]]}
    outputs = []
    for epoch in (trainer.num_warmup_epochs - 1, trainer.num_warmup_epochs):
        trainer.current_epoch = epoch
        outputs.append({k: float(v) for k, v in trainer.train_step(labeled).items()})
    weights = {k: v.detach().clone() for k, v in trainer._unwrapped_network().state_dict().items()}
    return {"weights": weights, "outputs": outputs, "batch_size": trainer.batch_size,
            "unlabeled_batch_size": trainer._unlabeled_batch_size_this_rank()}


def run_rank(rank: int, world_size: int, preprocessed: str, workdir: str) -> None:
    """Entry point of one spawned rank: gloo process group, PICK steps on this rank's rows, results to a file."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=world_size)
    try:
        trainer = build_trainer(Path(preprocessed), ddp=True)
        unlabeled_patches = next(trainer.get_unlabeled_dataloader())["data"]  # this rank's own loader
        batches = torch.load(Path(workdir) / "batches.pt", weights_only=False)
        per_rank = GLOBAL_BATCH // world_size
        result = run_steps(trainer, batches, slice(rank * per_rank, (rank + 1) * per_rank))
        result["is_ddp"] = trainer.is_ddp
        result["unlabeled_patches"] = unlabeled_patches
        torch.save(result, Path(workdir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
