"""Is the ranking of ``nnUNetv2_pick_suggest`` worth following? Evidence on split-"unlabeled" cases whose labels exist.

A PICK model trained with some ``imagesTr`` cases listed under ``"unlabeled"`` in ``splits_final.json`` never read
their labels, and neither does the suggestion. This script ranks exactly those cases of one fold with the suggestion
code (nnunet_pick.annotation.suggest: every case's primary segmentation is written), then opens their labels to
compute:

- each case's true Dice of the primary decoder (nnU-Net's ``compute_metrics``, mean over the foreground labels);
- the Spearman correlation (SciPy) between each score and ``1 - Dice``, with a 95 % bootstrap confidence interval
  over cases (SciPy's ``bootstrap``, paired resampling, percentile method);
- the mean true Dice of the top-K cases against K cases drawn at random (mean and 95 % interval over random draws,
  and the fraction of random draws whose mean Dice is as low as the top-K's).

It writes nothing but ``-o`` (suggestions.csv there, evidence.json). Example (the benchmark's Hippocampus model)::

    nice -n 19 python examples/annotation_evidence.py \\
        -m $nnUNet_results/Dataset004_Hippocampus/nnUNetTrainerPICK__nnUNetPlansPICKBench__2d \\
        -r $nnUNet_raw/Dataset004_Hippocampus -s $nnUNet_preprocessed/Dataset004_Hippocampus/splits_final.json \\
        -f 0 -k 10 -o /tmp/pick_evidence
"""

from __future__ import annotations

import argparse
import json
import os
from os.path import join

import numpy as np
from scipy.stats import bootstrap, spearmanr


def _spearman_with_ci(score: np.ndarray, error: np.ndarray, n_resamples: int, seed: int) -> dict:
    rho = float(spearmanr(score, error).statistic)
    ci = bootstrap((score, error), lambda a, b: spearmanr(a, b).statistic, paired=True, vectorized=False,
                   n_resamples=n_resamples, method="percentile", random_state=seed).confidence_interval
    return {"rho": rho, "ci95": [float(ci.low), float(ci.high)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", required=True, help="PICK model folder (<trainer>__<plans>__<configuration>)")
    parser.add_argument("-r", required=True, help="raw dataset folder (imagesTr, labelsTr)")
    parser.add_argument("-s", required=True, help="splits_final.json with 'unlabeled' ids")
    parser.add_argument("-f", type=int, default=0, help="fold (default 0)")
    parser.add_argument("-k", type=int, default=10, help="K of top-K (default 10)")
    parser.add_argument("-o", required=True, help="output folder (new or empty)")
    parser.add_argument("-chk", default="checkpoint_final.pth")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--disable_tta", action="store_true")
    parser.add_argument("--max-cases", type=int, default=None,
                        help="only a random sample (seeded by --seed) of N unlabeled ids, for a shorter run")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples and random draws")
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)

    from nnunetv2.evaluation.evaluate_predictions import compute_metrics

    from nnunet_pick.annotation.suggest import Suggester, UnlabeledPool, suggest, unlabeled_pool

    suggester = Suggester(args.m, [args.f], args.chk, args.device, use_mirroring=not args.disable_tta)
    dataset_json = suggester.predictor.dataset_json
    ending = dataset_json["file_ending"]
    full = unlabeled_pool(args.r, dataset_json, args.s, [args.f])
    ids = [c for c in full.cases if full.sources[c].startswith("splits")]
    if args.max_cases is not None and args.max_cases < len(ids):
        ids = sorted(np.random.default_rng(args.seed).choice(ids, args.max_cases, replace=False).tolist())
    pool = UnlabeledPool(cases={c: full.cases[c] for c in ids}, sources={c: full.sources[c] for c in ids})
    print(f"{len(ids)} split-'unlabeled' cases of fold {args.f}")
    rows = suggest(suggester, pool, args.o, num_top=len(ids))  # every case's segmentation is written

    # only now are the labels opened
    lm = suggester.label_manager
    labels = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    reader = suggester.writer
    dice = {}
    for r in rows:
        metrics = compute_metrics(join(args.r, "labelsTr", r["case"] + ending), join(args.o, r["segmentation"]),
                                  reader, labels, lm.ignore_label)["metrics"]
        dice[r["case"]] = float(np.nanmean([metrics[label]["Dice"] for label in labels]))
    cases = [r["case"] for r in rows]  # rank order
    d = np.array([dice[c] for c in cases])
    error = 1 - d
    correlations = {k: _spearman_with_ci(np.array([float(r[k]) for r in rows]), error, args.resamples, args.seed)
                    for k in ("combined", "disagreement", "entropy")}
    k = min(args.k, len(cases))
    rng = np.random.default_rng(args.seed)
    random_means = np.array([d[rng.choice(len(d), k, replace=False)].mean() for _ in range(args.resamples)])
    top_mean = float(d[:k].mean())
    evidence = {
        "model_folder": args.m, "fold": args.f, "cases": len(cases), "k": k, "tta": not args.disable_tta,
        "dice_per_case": dice, "mean_dice_all": float(d.mean()),
        "spearman_vs_1_minus_dice": correlations,
        "top_k_mean_dice": top_mean,
        "random_k_mean_dice": {"mean": float(random_means.mean()),
                               "ci95": [float(np.percentile(random_means, 2.5)),
                                        float(np.percentile(random_means, 97.5))],
                               "fraction_of_draws_at_or_below_top_k": float((random_means <= top_mean).mean())},
        "seconds_per_case": {"median": float(np.median([float(r["seconds"]) for r in rows])),
                             "device": args.device},
    }
    with open(join(args.o, "evidence.json"), "w", encoding="utf-8") as f:
        json.dump(evidence, f, indent=2)
    print(json.dumps({k: v for k, v in evidence.items() if k != "dice_per_case"}, indent=2))
    print(f"written: {os.path.abspath(join(args.o, 'evidence.json'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
