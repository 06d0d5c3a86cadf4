"""DDP on the CPU: two gloo processes train nnUNetTrainerPICK for two steps (one warm-up, one PICK) on halves of
a fixed batch of real Hippocampus patches; afterwards both ranks hold identical weights, equal to a single-process
run on the whole batch within float tolerance, and every decoder was updated. Each rank's own unlabeled loader
draws different patches."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from ddp_worker import GLOBAL_BATCH, build_trainer, run_rank, run_steps
from helpers import make_trainer

from nnunet_pick import nnUNetTrainerPICK

pytestmark = pytest.mark.slow


def test_two_ranks_equal_one_process_on_the_whole_batch(hippocampus, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    source = make_trainer(nnUNetTrainerPICK, hippocampus, "2d")
    source.on_train_start()
    labeled, unlabeled = next(source.dataloader_train), next(source.dataloader_unlabeled)
    batches = {"data": labeled["data"][:GLOBAL_BATCH], "target": [t[:GLOBAL_BATCH] for t in labeled["target"]],
               "unlabeled": unlabeled["data"][:GLOBAL_BATCH],
               "initial_weights": {k: v.clone() for k, v in source._unwrapped_network().state_dict().items()}}
    assert batches["unlabeled"].shape[0] == GLOBAL_BATCH
    torch.save(batches, tmp_path / "batches.pt")

    mp.spawn(run_rank, args=(2, str(hippocampus), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    single = run_steps(build_trainer(hippocampus, ddp=False), batches, slice(0, GLOBAL_BATCH))

    assert all(r["is_ddp"] for r in ranks)
    assert [r["batch_size"] for r in ranks] == [2, 2]  # nnU-Net's split of the labeled batch
    assert [r["unlabeled_batch_size"] for r in ranks] == [2, 2]  # and PICK's of the unlabeled one
    assert [r["unlabeled_patches"].shape[0] for r in ranks] == [2, 2]
    assert not torch.equal(ranks[0]["unlabeled_patches"], ranks[1]["unlabeled_patches"])  # each draws its own
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key  # all decoders synchronised, bit for bit
    # equal to the single process within float tolerance (float32 sums in another order: batch of 2 vs 4, gathered
    # Dice terms), measured against the size of the two steps' update; a rank training on its half alone is off by
    # 40-110 % of it
    initial = batches["initial_weights"]
    for prefix in ("encoder.", "decoder.", "mim_decoder.", "aux_decoder."):
        keys = [k for k in initial if k.startswith(prefix) and k.endswith("conv.weight")]
        update = torch.cat([(single["weights"][k] - initial[k]).flatten() for k in keys]).norm()
        deviation = torch.cat([(ranks[0]["weights"][k] - single["weights"][k]).flatten() for k in keys]).norm()
        assert update > 0, f"no weight of {prefix[:-1]} was updated"
        assert deviation / update < 0.02, (prefix, float(deviation / update))  # measured: about 0.002
    # the ranks' loss terms average to the whole batch's (L_mim uses the masked voxels of all ranks)
    for step in range(2):
        for key in ("train_loss_mim_labeled", "train_loss_mim_unlabeled", "masked_fraction_labeled"):
            if key == "train_loss_mim_unlabeled" and step == 0:
                continue  # warm-up: not computed
            mean = (ranks[0]["outputs"][step][key] + ranks[1]["outputs"][step][key]) / 2
            assert mean == pytest.approx(single["outputs"][step][key], rel=1e-4, abs=1e-6), (step, key)
