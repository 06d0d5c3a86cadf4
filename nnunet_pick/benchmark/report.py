"""Gather trained folds into the PICK paper's table form: one row per trainer, mean ± sd over runs (folds x repeats).

A run is one trained fold folder ``<results root>/<Dataset>/<trainer>__<plans>__<configuration>/fold_k``. Its scores
are the foreground means of :mod:`nnunet_pick.evaluation` over nnU-Net's validation predictions
(``fold_k/validation``) against nnU-Net's reference copy (``gt_segmentations``), cached as
``validation/summary_pick.json``. Several results roots (one per repeat of a benchmark) give several runs per fold.
A ``pick_benchmark_run.json`` in a results root records the repeat, seed and labeled fraction of its runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from os.path import isdir, isfile, join

import numpy as np

from nnunet_pick.evaluation import METRICS, evaluate_folder

RUN_METADATA = "pick_benchmark_run.json"
LOWER_IS_BETTER = {"ASD_voxel", "HD95_voxel", "ASD_mm", "HD95_mm"}
TABLE_METRICS = ("Dice", "Jaccard", "ASD_voxel", "HD95_voxel")  # the paper's table: %, %, voxels, voxels


@dataclass
class Run:
    """One trained fold: ``scores`` are foreground means over the validation cases (Dice in [0, 1])."""

    trainer: str
    fold: int
    repeat: int
    labeled_fraction: float | None
    scores: dict[str, float]
    folder: str


@dataclass
class Row:
    """One trainer (at one labeled fraction): mean and sd over its runs."""

    trainer: str
    labeled_fraction: float | None
    n_runs: int
    mean: dict[str, float]
    std: dict[str, float]
    values: dict[str, list[float]]


def cached_summary(fold_folder: str, gt_folder: str, dataset_json: dict) -> dict | None:
    """:func:`~nnunet_pick.evaluation.evaluate_folder` of one fold's validation, computed once and cached as
    ``validation/summary_pick.json``; None if nnU-Net's validation did not finish."""
    validation = join(fold_folder, "validation")
    cached = join(validation, "summary_pick.json")
    if isfile(cached):
        with open(cached, encoding="utf-8") as f:
            return json.load(f)
    if not isfile(join(validation, "summary.json")):  # nnU-Net's validation did not finish
        return None
    return evaluate_folder(gt_folder, validation, dataset_json, cached)


def run_scores(fold_folder: str, gt_folder: str, dataset_json: dict) -> dict[str, float] | None:
    """Foreground-mean scores of one fold's validation (:func:`cached_summary`); None if validation is missing."""
    summary = cached_summary(fold_folder, gt_folder, dataset_json)
    return None if summary is None else summary["foreground_mean"]


def collect_runs(results_roots: list[str], dataset_name: str, trainers: list[str], configuration: str,
                 plans: str, preprocessed_dataset_folder: str) -> list[Run]:
    """Every finished fold of every trainer in every results root."""
    with open(join(preprocessed_dataset_folder, "dataset.json"), encoding="utf-8") as f:
        dataset_json = json.load(f)
    gt = join(preprocessed_dataset_folder, "gt_segmentations")
    runs = []
    for index, root in enumerate(results_roots):
        meta = {}
        if isfile(join(root, RUN_METADATA)):
            with open(join(root, RUN_METADATA), encoding="utf-8") as f:
                meta = json.load(f)
        for trainer in trainers:
            model = join(root, dataset_name, f"{trainer}__{plans}__{configuration}")
            if not isdir(model):
                continue
            for name in sorted(os.listdir(model)):
                if not name.startswith("fold_") or not name[5:].isdigit():
                    continue
                scores = run_scores(join(model, name), gt, dataset_json)
                if scores is not None:
                    runs.append(Run(trainer, int(name[5:]), int(meta.get("repeat", index)),
                                    meta.get("labeled_fraction"), scores, join(model, name)))
    return runs


def summarize_runs(runs: list[Run], trainers: list[str]) -> list[Row]:
    """Rows in the order of ``trainers`` (then labeled fraction); NaN scores are skipped."""
    rows = []
    keys = sorted({(r.trainer, r.labeled_fraction) for r in runs},
                  key=lambda k: (trainers.index(k[0]), -1 if k[1] is None else k[1]))
    for trainer, fraction in keys:
        group = [r for r in runs if r.trainer == trainer and r.labeled_fraction == fraction]
        values = {m: [r.scores[m] for r in group if not math.isnan(r.scores[m])] for m in METRICS}
        rows.append(Row(trainer, fraction, len(group),
                        {m: float(np.mean(v)) if v else math.nan for m, v in values.items()},
                        {m: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for m, v in values.items()},
                        values))
    return rows


def compare_to_baseline(rows: list[Row], baseline: str) -> list[str]:
    """One sentence per non-baseline row: Dice difference, whether it exceeds the run-to-run spread, Welch's t-test.

    "Exceeds the spread" means |Δ mean| > sd(baseline) + sd(trainer) (the ±1 sd ranges do not overlap). The p-value
    is SciPy's Welch t-test over runs (needs at least 2 runs per arm).
    """
    from scipy.stats import ttest_ind

    lines = []
    for row in rows:
        base = next((r for r in rows if r.trainer == baseline and r.labeled_fraction == row.labeled_fraction), None)
        if base is None or row.trainer == baseline:
            continue
        a, b = row.values["Dice"], base.values["Dice"]
        delta = row.mean["Dice"] - base.mean["Dice"]
        spread = (row.std["Dice"] if len(a) > 1 else 0.0) + (base.std["Dice"] if len(b) > 1 else 0.0)
        verdict = "exceeds" if abs(delta) > spread else "does not exceed"
        p = ttest_ind(a, b, equal_var=False).pvalue if len(a) > 1 and len(b) > 1 else math.nan
        lines.append(f"{row.trainer} vs {baseline}: Dice {100 * delta:+.2f} points ({len(a)} vs {len(b)} runs); "
                     f"the difference {verdict} the run-to-run spread (sd sum {100 * spread:.2f}); Welch p = {p:.3f}")
    return lines


def _cell(row: Row, metric: str) -> str:
    scale = 100 if metric in ("Dice", "Jaccard") else 1
    mean, sd = row.mean[metric] * scale, row.std[metric] * scale
    return f"{mean:.2f}" + ("" if math.isnan(sd) else f" ± {sd:.2f}")


def markdown_table(rows: list[Row], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """The paper's table: Dice (%), Jaccard (%), ASD and HD95 (voxels) as mean ± sd; best per column in bold."""
    best = {}
    for m in metrics:
        finite = [r.mean[m] for r in rows if not math.isnan(r.mean[m])]
        if finite:
            best[m] = min(finite) if m in LOWER_IS_BETTER else max(finite)
    header = ["trainer", "labeled", "runs", *[f"{m} (%)" if m in ("Dice", "Jaccard") else m for m in metrics]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [f"**{_cell(r, m)}**" if m in best and r.mean[m] == best[m] else _cell(r, m) for m in metrics]
        fraction = "" if r.labeled_fraction is None else f"{100 * r.labeled_fraction:g} %"
        lines.append("| " + " | ".join([r.trainer, fraction, str(r.n_runs), *cells]) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: str) -> None:
    """Mean and sd of every metric per row (Dice and Jaccard as fractions in [0, 1])."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trainer", "labeled_fraction", "runs", *[f"{m}_{s}" for m in METRICS for s in ("mean", "sd")]])
        for r in rows:
            w.writerow([r.trainer, r.labeled_fraction, r.n_runs, *[v for m in METRICS for v in (r.mean[m], r.std[m])]])


def lambda_of(trainer: str) -> float | None:
    """``lambda_mim`` of a registered PICK trainer (None for others)."""
    from nnunet_pick.training.trainer import nnUNetTrainerPICK
    from nnunet_pick.training.variants import TRAINERS

    cls = TRAINERS.get(trainer)
    if cls is None or not issubclass(cls, nnUNetTrainerPICK):
        return None
    return float(getattr(cls, "pick_settings", {}).get("lambda_mim", 1.0))


def plot_curves(rows: list[Row], output_folder: str) -> list[str]:
    """Dice against labeled fraction (PICK Fig. 6) when rows span several fractions, and Dice against λ (Fig. 4)
    when several PICK trainers differ only in λ; matplotlib PNGs. Returns the files written."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    written = []
    fractions = sorted({r.labeled_fraction for r in rows if r.labeled_fraction is not None})
    if len(fractions) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for trainer in dict.fromkeys(r.trainer for r in rows):
            pts = sorted((r.labeled_fraction, r.mean["Dice"], r.std["Dice"]) for r in rows
                         if r.trainer == trainer and r.labeled_fraction is not None)
            ax.errorbar([100 * p[0] for p in pts], [100 * p[1] for p in pts],
                        yerr=[0 if math.isnan(p[2]) else 100 * p[2] for p in pts], marker="o", capsize=3,
                        label=trainer)
        ax.set_xlabel("labeled cases (%)")
        ax.set_ylabel("Dice (%)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(join(output_folder, "dice_vs_labeled_fraction.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    lam = sorted((lambda_of(r.trainer), r.mean["Dice"], r.std["Dice"])
                 for r in rows if lambda_of(r.trainer) is not None)
    if len({p[0] for p in lam}) > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar([p[0] for p in lam], [100 * p[1] for p in lam],
                    yerr=[0 if math.isnan(p[2]) else 100 * p[2] for p in lam], marker="o", capsize=3)
        ax.set_xlabel("λ (lambda_mim)")
        ax.set_ylabel("Dice (%)")
        fig.tight_layout()
        written.append(join(output_folder, "dice_vs_lambda.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def write_report(rows: list[Row], baseline: str | None, output_folder: str) -> str:
    """``report.md`` (table and comparisons), ``report.csv`` and the plots; returns the Markdown text."""
    os.makedirs(output_folder, exist_ok=True)
    text = markdown_table(rows)
    if baseline is not None:
        text += "\n\n" + "\n".join(f"- {line}" for line in compare_to_baseline(rows, baseline))
    with open(join(output_folder, "report.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    write_csv(rows, join(output_folder, "report.csv"))
    plot_curves(rows, output_folder)
    return text
