"""One-command semi-supervised benchmark: splits -> baseline and PICK per fold and repeat -> evaluation -> report.

Every training is nnU-Net's own ``nnUNetv2_train`` code path (through :mod:`.seeded_train`, which only seeds first),
in a subprocess, so a benchmark measures exactly what users run. Repeat ``r`` is a separate nnU-Net results root
``<output>/repeat_r`` (nnU-Net's folder layout inside), trained with seed ``seed + r``. The benchmark resumes: a
fold with ``checkpoint_final.pth`` and a finished validation is skipped, one with only a checkpoint is continued
(``--c``), one with a final checkpoint but no validation is validated (``--val``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from os.path import isdir, isfile, join

from nnunet_pick.benchmark.report import RUN_METADATA, collect_runs, summarize_runs, write_report
from nnunet_pick.console import print_text
from nnunet_pick.subprocesses import installed_command, run_logged


@dataclass
class Preset:
    """Settings a named preset fills in (the user's own flags win)."""

    description: str
    base_configuration: str
    configuration: str
    configuration_overrides: dict
    folds: list[int]
    num_labeled: int
    repeats: int
    baseline: str
    trainers: list[str]
    device: str
    env: dict[str, str] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "hippocampus-cpu": Preset(
        description="Hippocampus on 2 CPU cores: nnU-Net's 2d configuration with batch size 8 (plans configuration "
                    "2d_pick_cpu), fold 0 of a 5-fold split with 8 labeled cases (the rest of the fold's training "
                    "cases unlabeled), 16 epochs x 25 iterations for both arms (PICK: 8 warm-up epochs), 3 repeats "
                    "per arm, nnU-Net's validation on the fold's validation cases",
        base_configuration="2d", configuration="2d_pick_cpu", configuration_overrides={"batch_size": 8},
        folds=[0], num_labeled=8, repeats=3, baseline="nnUNetTrainer_benchmarkCPU",
        trainers=["nnUNetTrainerPICK_benchmarkCPU"], device="cpu",
        env={"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "2", "nnUNet_compile": "f"}),
}


def _log(message: str) -> None:
    print_text(f"[benchmark {time.strftime('%H:%M:%S')}] {message}")


def ensure_plans(dataset_name: str, dataset_id: str, base_configuration: str, configuration: str, plans: str,
                 overrides: dict, env: dict[str, str], log_file: str) -> str:
    """Plan and preprocess with nnU-Net if needed; add ``configuration`` (inheriting ``base_configuration``, with
    ``overrides``) to the plans if it is missing. Returns the preprocessed dataset folder."""
    from nnunetv2.paths import nnUNet_preprocessed

    folder = join(nnUNet_preprocessed, dataset_name)
    plans_file = join(folder, plans + ".json")
    if not isfile(plans_file):
        _log(f"planning and preprocessing {dataset_name} ({base_configuration}) with nnU-Net")
        run_logged([installed_command("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", base_configuration],
                   env, log_file)
    with open(plans_file, encoding="utf-8") as f:
        plan = json.load(f)
    if configuration not in plan["configurations"]:
        plan["configurations"][configuration] = {"inherits_from": base_configuration, **overrides}
        with open(plans_file, "w", encoding="utf-8") as f:
            json.dump(plan, f, indent=4)
        _log(f"added plans configuration {configuration} = {base_configuration} with {overrides}")
    data_identifier = plan["configurations"][base_configuration].get("data_identifier")
    if data_identifier and not isdir(join(folder, data_identifier)):
        _log(f"preprocessing {base_configuration}")
        run_logged([installed_command("nnUNetv2_preprocess"), "-d", dataset_id, "-c", base_configuration,
                    "-plans_name", plans], env, log_file)
    return folder


def ensure_splits(dataset_name: str, preprocessed: str, n_folds: int, seed: int, fraction: float | None,
                  number: int | None) -> list[dict]:
    """Use ``splits_final.json`` if it exists (it must carry ``unlabeled``), else write K-fold label-fraction splits."""
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_pick.splits import fold_table, kfold_splits

    path = join(preprocessed, "splits_final.json")
    if isfile(path):
        with open(path, encoding="utf-8") as f:
            splits = json.load(f)
        if not all("unlabeled" in s for s in splits):
            raise ValueError(f"{path} has folds without an 'unlabeled' key. Move it away or write label-fraction "
                             f"splits with nnUNetv2_pick_make_splits (it refuses to overwrite without --force).")
        _log(f"using the existing {path}")
    else:
        raw = join(nnUNet_raw.get(), dataset_name)
        with open(join(raw, "dataset.json"), encoding="utf-8") as f:
            dataset_json = json.load(f)
        cases = sorted(get_filenames_of_train_images_and_targets(raw, dataset_json))
        splits = kfold_splits(cases, n_folds, seed=seed, fraction=fraction, number=number)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(splits, f, indent=1)
        _log(f"wrote {path}")
    print_text(fold_table(splits))
    return splits


def run_benchmark(dataset: str, configuration: str, *, folds: list[int], trainers: list[str],
                  baseline: str = "nnUNetTrainer", labeled_fraction: float | None = None,
                  num_labeled: int | None = None, n_folds: int = 5, plans: str = "nnUNetPlans", seed: int = 12345,
                  repeats: int = 1, device: str = "cuda", output: str | None = None, preset: str | None = None,
                  ) -> str:
    """Run (or resume) the benchmark and return the Markdown report (also written to ``<output>/report.md``).

    Args:
        dataset: dataset id or name (in ``nnUNet_raw``).
        configuration: plans configuration to train.
        folds: folds to train.
        trainers: PICK trainers (or any trainers) to compare with ``baseline``.
        baseline: the labeled-only arm (stock ``nnUNetTrainer`` by default).
        labeled_fraction / num_labeled: for new splits (see :mod:`nnunet_pick.splits`).
        n_folds: K of new splits.
        plans: plans identifier.
        seed: base seed; repeat r trains with ``seed + r``.
        repeats: runs per arm and fold.
        device: ``cpu`` or ``cuda``.
        output: folder of the results roots and the report (default ``$nnUNet_results/pick_benchmark_<dataset>_
            <configuration>``).
        preset: a key of :data:`PRESETS`; its settings replace the corresponding arguments.

    Raises:
        ValueError: for an unknown preset, unusable splits, or no labeled amount for new splits.
        RuntimeError: if an nnU-Net command fails (with the end of its log).
    """
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    env = dict(os.environ)
    overrides: dict = {}
    base_configuration = configuration
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        p = PRESETS[preset]
        _log(f"preset {preset}: {p.description}")
        base_configuration, configuration, overrides = p.base_configuration, p.configuration, p.configuration_overrides
        folds, num_labeled, labeled_fraction, repeats = p.folds, p.num_labeled, None, p.repeats
        baseline, trainers, device = p.baseline, p.trainers, p.device
        for k, v in p.env.items():
            env.setdefault(k, v)
    dataset_name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    dataset_id = dataset_name[len("Dataset"):len("Dataset") + 3]
    output = output or join(nnUNet_results.get(), f"pick_benchmark_{dataset_name}_{configuration}")
    os.makedirs(join(output, "logs"), exist_ok=True)
    setup_log = join(output, "logs", "setup.log")
    preprocessed = ensure_plans(dataset_name, dataset_id, base_configuration, configuration, plans, overrides, env,
                                setup_log)
    if not isfile(join(preprocessed, "splits_final.json")) and labeled_fraction is None and num_labeled is None:
        raise ValueError("No splits_final.json yet: give --labeled-fraction or --num-labeled.")
    splits = ensure_splits(dataset_name, preprocessed, n_folds, seed, labeled_fraction, num_labeled)
    first = splits[folds[0]]
    fraction = len(first["train"]) / (len(first["train"]) + len(first["unlabeled"]))
    arms = [baseline, *[t for t in trainers if t != baseline]]
    start = time.perf_counter()
    roots = []
    for repeat in range(repeats):
        root = join(output, f"repeat_{repeat}")
        roots.append(root)
        os.makedirs(root, exist_ok=True)
        with open(join(root, RUN_METADATA), "w", encoding="utf-8") as f:
            json.dump({"repeat": repeat, "seed": seed + repeat, "labeled_fraction": fraction,
                       "configuration": configuration, "plans": plans}, f, indent=1)
        run_env = {**env, "nnUNet_results": root}
        for fold in folds:
            for trainer in arms:
                fold_dir = join(root, dataset_name, f"{trainer}__{plans}__{configuration}", f"fold_{fold}")
                done = isfile(join(fold_dir, "checkpoint_final.pth"))
                validated = isfile(join(fold_dir, "validation", "summary.json"))
                if done and validated:
                    _log(f"repeat {repeat} fold {fold} {trainer}: done already")
                    continue
                flags = ["--val"] if done else (["--c"] if isfile(join(fold_dir, "checkpoint_latest.pth")) else [])
                _log(f"repeat {repeat} fold {fold} {trainer}: {'validating' if done else 'training'} "
                     f"(seed {seed + repeat}{', continuing' if flags == ['--c'] else ''})")
                t0 = time.perf_counter()
                run_logged([sys.executable, "-m", "nnunet_pick.benchmark.seeded_train", str(seed + repeat), dataset_id,
                      configuration, str(fold), "-tr", trainer, "-p", plans, "-device", device, *flags], run_env,
                     join(output, "logs", f"repeat{repeat}_fold{fold}_{trainer}.log"))
                _log(f"repeat {repeat} fold {fold} {trainer}: finished in {time.perf_counter() - t0:.0f} s")
    runs = collect_runs(roots, dataset_name, arms, configuration, plans, preprocessed)
    runs = [r for r in runs if r.fold in folds]
    text = write_report(summarize_runs(runs, arms), baseline, output)
    _log(f"benchmark finished in {time.perf_counter() - start:.0f} s; report in {join(output, 'report.md')}")
    return text
