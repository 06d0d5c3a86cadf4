"""torch.compile of the PICK network: graphs are compiled in the first iteration of each phase only, and their number
stays under dynamo's recompile cap, so no call falls back to uncompiled code (issue target: "no recompilation after
the first iterations of each phase").

nnU-Net compiles ``self.network`` in ``initialize`` on CUDA only; here its own code path is taken on the CPU
(``_do_i_compile`` forced on) with a backend that counts the graphs dynamo hands over and runs them as traced. What
is counted (guards, recompilations, the cap) is dynamo's and does not depend on the backend, so this needs neither a
GPU nor a C++ toolchain.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from helpers import make_trainer

from nnunet_pick import nnUNetTrainerPICK

LABELED_BATCH = 4


class CountingBackend:
    """``torch.compile`` backend: counts the FX graphs it receives and returns them uncompiled.

    ``network`` counts the graphs of the PICK network (their inputs include the encoder's parameters); ``graphs``
    counts all, including those of nnU-Net's Dice loss, which nnU-Net's ``_build_loss`` compiles as well.
    """

    def __init__(self) -> None:
        self.graphs = 0
        self.network = 0

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        inputs = [n.name for n in graph_module.graph.nodes if n.op == "placeholder"]
        self.network += any("encoder" in name for name in inputs)
        return graph_module.forward


@pytest.mark.parametrize("unlabeled_batch", [LABELED_BATCH, 2],
                         ids=["unlabeled_batch_equal", "unlabeled_batch_smaller"])
def test_compiled_step_compiles_only_in_the_first_iteration_of_each_phase(hippocampus, unlabeled_batch,
                                                                         monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # loaders in this process
    backend = CountingBackend()
    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    monkeypatch.setattr(nnUNetTrainerPICK, "_do_i_compile", lambda self: True)
    torch.manual_seed(0)
    t = make_trainer(nnUNetTrainerPICK, hippocampus, "2d", batch_size=LABELED_BATCH, num_epochs=4,
                     num_warmup_epochs=2, unlabeled_batch_size=unlabeled_batch, num_iterations_per_epoch=2,
                     num_val_iterations_per_epoch=2)
    t.on_train_start()  # nnU-Net's initialize compiles the network
    assert isinstance(t.network, torch._dynamo.OptimizedModule)

    new_graphs: dict[str, list[int]] = {}  # any graph (network or loss) per iteration
    new_network_graphs: dict[str, list[int]] = {}

    def count(phase: str, fn, iterations: int) -> None:
        for _ in range(iterations):
            before, before_network = backend.graphs, backend.network
            fn()
            new_graphs.setdefault(phase, []).append(backend.graphs - before)
            new_network_graphs.setdefault(phase, []).append(backend.network - before_network)

    def validation_epoch() -> None:
        t.on_validation_epoch_start()
        with torch.no_grad():
            count(f"validation after epoch {t.current_epoch}", lambda: t.validation_step(next(t.dataloader_val)), 2)

    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # hitting the cap raises
        for epoch in (0, 1, t.num_warmup_epochs, t.num_warmup_epochs + 1):  # two warm-up, two PICK epochs
            t.current_epoch = epoch
            t.on_train_epoch_start()
            phase = "warm-up" if t.is_warmup_epoch() else "PICK"
            count(f"{phase} epoch {epoch}", lambda: t.train_step(next(t.dataloader_train)), 2)
            validation_epoch()
        count("final validation", lambda: t.perform_actual_validation(False), 1)  # nnU-Net's sliding window
    t.on_train_end()
    torch._dynamo.reset()

    print("graphs", new_graphs, "network graphs", new_network_graphs)
    # the target: nothing compiles after the first iteration of a phase, in any epoch
    for phase, per_iteration in new_graphs.items():
        assert per_iteration[1:] == [0] * (len(per_iteration) - 1), phase
    for phase in ("warm-up epoch 1", f"PICK epoch {t.num_warmup_epochs + 1}", "validation after epoch 1",
                  f"validation after epoch {t.num_warmup_epochs + 1}"):
        assert new_graphs[phase][0] == 0, phase  # a phase's second epoch reuses its first's graphs
    # network graphs: one per branch in the first warm-up step (primary, MIM, auxiliary); in the PICK phase only the
    # no-grad pseudo-label pass is new, because the unlabeled batch reuses the MIM and auxiliary graphs even when
    # its size differs from the labeled batch's (batch dimension marked dynamic); eval mode adds one
    assert new_network_graphs["warm-up epoch 0"][0] == 3
    assert new_network_graphs[f"PICK epoch {t.num_warmup_epochs}"][0] == 1
    assert new_network_graphs["validation after epoch 0"][0] == 1
    # everything, final validation included, fits dynamo's cap (fail_on_recompile_limit_hit would have raised)
    assert backend.network <= torch._dynamo.config.recompile_limit
