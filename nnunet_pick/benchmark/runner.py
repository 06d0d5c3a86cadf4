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
import time
from os.path import isdir, isfile, join

from nnunet_pick.benchmark.report import RUN_METADATA, collect_runs, summarize_runs, write_report
from nnunet_pick.console import print_text
from nnunet_pick.fold_runs import fold_state, model_folder, train_fold
from nnunet_pick.subprocesses import installed_command, run_logged


def _log(message: str) -> None:
    print_text(f"[benchmark {time.strftime('%H:%M:%S')}] {message}")


def ensure_plans(dataset_name: str, dataset_id: str, configuration: str, plans: str, env: dict[str, str],
                 log_file: str) -> str:
    """Plan and preprocess ``configuration`` with nnU-Net if needed. Returns the preprocessed dataset folder."""
    from nnunetv2.paths import nnUNet_preprocessed

    folder = join(nnUNet_preprocessed, dataset_name)
    plans_file = join(folder, plans + ".json")
    if not isfile(plans_file):
        _log(f"planning and preprocessing {dataset_name} ({configuration}) with nnU-Net")
        run_logged([installed_command("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", configuration],
                   env, log_file)
    with open(plans_file, encoding="utf-8") as f:
        plan = json.load(f)
    data_identifier = plan["configurations"][configuration].get("data_identifier")
    if data_identifier and not isdir(join(folder, data_identifier)):
        _log(f"preprocessing {configuration}")
        run_logged([installed_command("nnUNetv2_preprocess"), "-d", dataset_id, "-c", configuration,
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
                  repeats: int = 1, device: str = "cuda", output: str | None = None) -> str:
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

    Raises:
        ValueError: for unusable splits, or no labeled amount for new splits.
        RuntimeError: if an nnU-Net command fails (with the end of its log).
    """
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    env = dict(os.environ)
    dataset_name = maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)
    dataset_id = dataset_name[len("Dataset"):len("Dataset") + 3]
    output = output or join(nnUNet_results.get(), f"pick_benchmark_{dataset_name}_{configuration}")
    os.makedirs(join(output, "logs"), exist_ok=True)
    setup_log = join(output, "logs", "setup.log")
    preprocessed = ensure_plans(dataset_name, dataset_id, configuration, plans, env, setup_log)
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
                fold_dir = join(model_folder(root, dataset_name, trainer, plans, configuration), f"fold_{fold}")
                state = fold_state(fold_dir)
                if state == "done":
                    _log(f"repeat {repeat} fold {fold} {trainer}: done already")
                    continue
                _log(f"repeat {repeat} fold {fold} {trainer}: {state} (seed {seed + repeat})")
                t0 = time.perf_counter()
                train_fold(dataset_id, configuration, fold, trainer, plans, fold_folder=fold_dir, env=run_env,
                           log=join(output, "logs", f"repeat{repeat}_fold{fold}_{trainer}.log"), device=device,
                           seed=seed + repeat)
                _log(f"repeat {repeat} fold {fold} {trainer}: finished in {time.perf_counter() - t0:.0f} s")
    runs = collect_runs(roots, dataset_name, arms, configuration, plans, preprocessed)
    runs = [r for r in runs if r.fold in folds]
    text = write_report(summarize_runs(runs, arms), baseline, output)
    _log(f"benchmark finished in {time.perf_counter() - start:.0f} s; report in {join(output, 'report.md')}")
    return text
