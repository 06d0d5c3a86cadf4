"""What one training step of ``nnUNetTrainerPICK`` costs against ``nnUNetTrainer`` on the same plans and data.

Used by ``nnUNetv2_pick_benchmark``. Three measurements:

- **time**: both trainers in one process, their steps alternating (nnU-Net, PICK, nnU-Net, ...) so that drift of the
  machine (thermal, other load) affects both alike; the first step of each is discarded. The step time is the time
  spent in ``train_step`` minus the time it waited for the unlabeled loader; the time spent waiting for batches
  (``next`` on the labeled loader, and on the unlabeled loader inside PICK's step) is the loader wait.
- **memory**: each trainer in a fresh process (``python -m nnunet_pick.benchmark.step_benchmark --probe``) runs a
  few steps; CUDA: ``torch.cuda.max_memory_allocated`` over the steps; CPU: the process's peak resident set size
  (``resource.getrusage``), which includes the interpreter, torch and the model, as the process a user runs does.
- **compute**: the ratio the pass count predicts, with a trained pass (forward + backward) costing about 3 forward
  passes (:func:`compute_ratio`).
- **compilation**: whether nnU-Net compiled the networks (``torch.compile``: on CUDA unless ``nnUNet_compile=f``) and
  how many graphs dynamo compiled during the timed steps (``torch._dynamo.utils.counters['stats']['unique_graphs']``);
  the untimed first step compiles, any later compilation is a recompilation inside the timed phase (target: 0).

PICK trainers are put past warm-up (``current_epoch = num_warmup_epochs``) so that the full step is measured.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch

TRAINED_PASS = 3  # a forward + backward pass costs about three forward passes
NO_GRAD_PASS = 1


def compute_ratio(labeled_batch: int, unlabeled_batch: int, train_mim_decoder: bool = True,
                  train_aux_decoder: bool = True) -> float:
    """Forward-pass units of one PICK step over those of one nnU-Net step (same labeled batch).

    nnU-Net: one trained pass over the labeled batch = 3 B_l. PICK (method spec, Eqs. 10-12): labeled: primary, MIM and
    auxiliary trained passes = 9 B_l; unlabeled: one no-grad primary pass for the pseudo-label and two trained passes
    = 7 B_u. With B_u = B_l that is 16 / 3 = 5.33. An ablated decoder removes its trained passes.

    Args:
        labeled_batch: B_l, patches per labeled batch.
        unlabeled_batch: B_u, patches per unlabeled batch.
        train_mim_decoder, train_aux_decoder: the trainer's ablation switches.
    """
    extra = int(train_mim_decoder) + int(train_aux_decoder)
    pick = TRAINED_PASS * (1 + extra) * labeled_batch + (NO_GRAD_PASS + TRAINED_PASS * extra) * unlabeled_batch
    return pick / (TRAINED_PASS * labeled_batch)


class _WaitTimer:
    """Iterator proxy that adds the time spent in ``next`` to ``waited`` (seconds)."""

    def __init__(self, loader) -> None:
        self.loader, self.waited = loader, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.loader)
        finally:
            self.waited += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self.loader, name)


@dataclass
class StepTimes:
    """Per-step seconds of one trainer: compute (``train_step`` without loader waits) and loader wait."""

    compute_s: list[float] = field(default_factory=list)
    wait_s: list[float] = field(default_factory=list)

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.compute_s)

    @property
    def wait_fraction(self) -> float:
        """Loader wait over (compute + wait), summed over the timed steps."""
        return sum(self.wait_s) / (sum(self.wait_s) + sum(self.compute_s))


def make_trainer(trainer_name: str, dataset: str, configuration: str, plans_identifier: str, device: str,
                 force_compile: bool = False):
    """A trainer as ``nnUNetv2_train`` builds it (nnU-Net's ``get_trainer_from_args``), started (data loaders
    running) and, for PICK trainers, past warm-up.

    ``force_compile``: nnU-Net's ``torch.compile`` of the network (and Dice loss) also where nnU-Net's
    ``_do_i_compile`` says no (the CPU, ``nnUNet_compile=f``); otherwise nnU-Net decides.
    """
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_pick import nnUNetTrainerPICK

    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, plans_identifier,
                                    device=torch.device(device))
    if force_compile:
        trainer._do_i_compile = lambda: True
    trainer.on_train_start()
    if isinstance(trainer, nnUNetTrainerPICK):
        trainer.current_epoch = trainer.num_warmup_epochs
    return trainer


def is_compiled(trainer) -> bool:
    """True if the trainer's network (inside DDP, if any) is a ``torch.compile`` module."""
    from torch._dynamo import OptimizedModule

    network = getattr(trainer.network, "module", trainer.network) if trainer.is_ddp else trainer.network
    return isinstance(network, OptimizedModule)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (all frames, recompilations included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_step(trainer, record: StepTimes | None) -> None:
    """One step; appends its compute and wait seconds to ``record`` (None: untimed warm-up step)."""
    unlabeled = getattr(trainer, "dataloader_unlabeled", None)
    if unlabeled is not None and not isinstance(unlabeled, _WaitTimer):
        trainer.dataloader_unlabeled = unlabeled = _WaitTimer(unlabeled)
    start = time.perf_counter()
    batch = next(trainer.dataloader_train)
    fetched = time.perf_counter()
    waited_before = unlabeled.waited if unlabeled is not None else 0.0
    _sync(trainer.device)
    step_start = time.perf_counter()
    trainer.train_step(batch)
    _sync(trainer.device)
    end = time.perf_counter()
    unlabeled_wait = (unlabeled.waited - waited_before) if unlabeled is not None else 0.0
    if record is not None:
        record.compute_s.append(end - step_start - unlabeled_wait)
        record.wait_s.append(fetched - start + unlabeled_wait)


def stop_loaders(trainer) -> None:
    """End the background data-augmentation workers of a trainer started by :func:`make_trainer`."""
    for name in ("dataloader_train", "dataloader_val", "dataloader_unlabeled"):
        loader = getattr(trainer, name, None)
        loader = getattr(loader, "loader", loader)  # unwrap _WaitTimer
        if hasattr(loader, "_finish"):
            loader._finish()


def peak_memory_probe(trainer_name: str, dataset: str, configuration: str, plans_identifier: str, device: str,
                      steps: int, force_compile: bool = False) -> dict:
    """Run ``steps`` steps in this process; returns ``{'peak_mib', 'kind'}`` (CUDA allocator peak over the steps,
    or this process's peak RSS on the CPU)."""
    trainer = make_trainer(trainer_name, dataset, configuration, plans_identifier, device, force_compile)
    timed_step(trainer, None)  # first step: lazy initialisations, cudnn autotuning
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        timed_step(trainer, None)
    if trainer.device.type == "cuda":
        result = {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "kind": "CUDA allocator peak"}
    else:
        result = {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "kind": "peak RSS"}
    stop_loaders(trainer)
    return result


def _probe_in_subprocess(trainer_name: str, dataset: str, configuration: str, plans_identifier: str, device: str,
                         steps: int, force_compile: bool) -> dict:
    args = [sys.executable, "-m", "nnunet_pick.benchmark.step_benchmark", "--probe", trainer_name, dataset,
            configuration, plans_identifier, device, str(steps), str(int(force_compile))]
    proc = subprocess.run(args, capture_output=True, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe of {trainer_name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class StepBenchmark:
    """Everything ``nnUNetv2_pick_benchmark`` prints; :meth:`as_json` gives the keys of ``--json``."""

    baseline: str
    trainer: str
    steps: int
    device: str
    batch_sizes: dict[str, int]
    times: dict[str, StepTimes]
    memory: dict[str, dict]
    compute_ratio: float
    n_proc_da: int
    torch_compile: dict[str, bool] = field(default_factory=dict)
    graphs_compiled_in_timed_steps: int = 0

    @property
    def time_ratio(self) -> float:
        return self.times[self.trainer].median_step_s / self.times[self.baseline].median_step_s

    @property
    def memory_ratio(self) -> float:
        return self.memory[self.trainer]["peak_mib"] / self.memory[self.baseline]["peak_mib"]

    def as_json(self) -> dict:
        return {
            "time_ratio": self.time_ratio, "compute_ratio": self.compute_ratio, "memory_ratio": self.memory_ratio,
            "loader_wait_fraction": self.times[self.trainer].wait_fraction,
            "loader_wait_fraction_baseline": self.times[self.baseline].wait_fraction,
            "time_ratio_over_compute_ratio": self.time_ratio / self.compute_ratio,
            "median_step_s": {k: v.median_step_s for k, v in self.times.items()},
            "peak_memory_mib": {k: v["peak_mib"] for k, v in self.memory.items()},
            "memory_kind": self.memory[self.trainer]["kind"], "steps": self.steps, "device": self.device,
            "batch_sizes": self.batch_sizes, "nnUNet_n_proc_DA": self.n_proc_da,
            "torch_compile": self.torch_compile, "graphs_compiled_in_timed_steps": self.graphs_compiled_in_timed_steps,
        }

    def table(self) -> str:
        kind = self.memory[self.trainer]["kind"]
        rows = [f"| trainer | batch | median step (s) | loader wait | {kind} (MiB) |", "|---|---|---|---|---|"]
        for name in (self.baseline, self.trainer):
            t = self.times[name]
            rows.append(f"| {name} | {self.batch_sizes[name]} | {t.median_step_s:.3f} | {100 * t.wait_fraction:.1f} % "
                        f"| {self.memory[name]['peak_mib']:.0f} |")
        target = 1.1 * self.compute_ratio
        pick_wait = self.times[self.trainer].wait_fraction

        def verdict(ok: bool) -> str:
            return "met" if ok else "NOT met"

        rows += [
            "",
            f"time ratio {self.time_ratio:.2f} (target <= 1.1 x compute ratio = {target:.2f}: "
            + verdict(self.time_ratio <= target) + ")",
            f"compute ratio from the pass count {self.compute_ratio:.2f}",
            f"memory ratio {self.memory_ratio:.2f} (target <= 1.5: " + verdict(self.memory_ratio <= 1.5) + ")",
            f"loader wait {100 * pick_wait:.1f} % of the PICK step (target <= 5 %: " + verdict(pick_wait <= 0.05)
            + f"; nnUNet_n_proc_DA {self.n_proc_da})",
            self._compile_line(),
            f"{self.steps} timed steps each on {self.device}, alternating; memory from separate processes",
        ]
        return "\n".join(rows)


    def _compile_line(self) -> str:
        if not any(self.torch_compile.values()):
            return ("torch.compile: off (nnU-Net compiles on CUDA only, and not with nnUNet_compile=f; --compile "
                    "forces it); recompilation target not measured")
        on = ", ".join(name for name, compiled in self.torch_compile.items() if compiled)
        n = self.graphs_compiled_in_timed_steps
        return f"torch.compile: on ({on}); graphs compiled during the timed steps: {n} (target 0: " + \
            ("met" if n == 0 else "NOT met") + ")"


def run_step_benchmark(dataset: str, configuration: str, plans_identifier: str = "nnUNetPlans", steps: int = 10,
                       device: str = "cpu", trainer: str = "nnUNetTrainerPICK", baseline: str = "nnUNetTrainer",
                       memory_steps: int = 3, force_compile: bool = False) -> StepBenchmark:
    """Measure ``trainer`` against ``baseline`` (see the module docstring).

    Trainer logs go to a temporary ``nnUNet_results``, deleted afterwards, never into the user's.

    Raises:
        ValueError: if ``trainer`` is not a subclass of ``nnUNetTrainerPICK``.
        RuntimeError: if a memory probe fails (its stderr is included).
    """
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_pick import nnUNetTrainerPICK

    if not issubclass(recursive_find_trainer_class_by_name(trainer), nnUNetTrainerPICK):
        raise ValueError(f"{trainer} is not a PICK trainer; -tr takes nnUNetTrainerPICK or one of its variants "
                         f"(nnUNetv2_pick_list_trainers)")
    results_folder = tempfile.mkdtemp(prefix="pick_step_benchmark_")
    user_results = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = results_folder
    trainers = {}
    try:
        memory = {name: _probe_in_subprocess(name, dataset, configuration, plans_identifier, device, memory_steps,
                                             force_compile)
                  for name in (baseline, trainer)}
        trainers = {name: make_trainer(name, dataset, configuration, plans_identifier, device, force_compile)
                    for name in (baseline, trainer)}
        times = {name: StepTimes() for name in trainers}
        for t in trainers.values():
            timed_step(t, None)  # untimed: lazy initialisation, cudnn autotuning, torch.compile's first graphs
        graphs_before = compiled_graphs()
        for _ in range(steps):
            for name, t in trainers.items():
                timed_step(t, times[name])
        pick = trainers[trainer]
        ratio = compute_ratio(pick.batch_size, pick.unlabeled_batch_size, pick.train_mim_decoder,
                              pick.train_aux_decoder)
        return StepBenchmark(baseline=baseline, trainer=trainer, steps=steps, device=device,
                             batch_sizes={n: t.batch_size for n, t in trainers.items()}, times=times, memory=memory,
                             compute_ratio=ratio, n_proc_da=get_allowed_n_proc_DA(),
                             torch_compile={n: is_compiled(t) for n, t in trainers.items()},
                             graphs_compiled_in_timed_steps=compiled_graphs() - graphs_before)
    finally:
        for t in trainers.values():
            stop_loaders(t)
        if user_results is None:
            os.environ.pop("nnUNet_results", None)
        else:
            os.environ["nnUNet_results"] = user_results
        shutil.rmtree(results_folder, ignore_errors=True)  # only the trainers' logs of this run


if __name__ == "__main__" and len(sys.argv) == 9 and sys.argv[1] == "--probe":
    # run_step_benchmark passes its temporary nnUNet_results; a probe started by hand gets its own, removed after
    own_results = None if "nnUNet_results" in os.environ else tempfile.mkdtemp(prefix="pick_step_benchmark_")
    if own_results:
        os.environ["nnUNet_results"] = own_results
    name, ds, cfg, plans_id, dev, n, force = sys.argv[2:]
    try:
        print(json.dumps(peak_memory_probe(name, ds, cfg, plans_id, dev, int(n), force == "1")))
    finally:
        if own_results:
            shutil.rmtree(own_results, ignore_errors=True)
