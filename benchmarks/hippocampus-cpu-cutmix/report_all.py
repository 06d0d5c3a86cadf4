"""report.md, report.csv, learning_curves.png and scores_per_repeat.csv of this folder from the finished runs in OUT
(no training): ``python report_all.py OUT``, with ``nnUNet_preprocessed`` set as for the benchmark."""
import json
import os
import sys

from nnunet_pick.benchmark.protocol import PROTOCOLS, report_protocol
from nnunet_pick.self_training import Teacher, derived_dataset_name

protocol = PROTOCOLS["hippocampus-cpu"]
dataset = "Dataset004_Hippocampus"
out = sys.argv[1]  # the benchmark folder (OUT)
os.environ["nnUNet_results"] = out + "/results"
with open(os.path.join(os.environ["nnUNet_preprocessed"], dataset, "splits_final.json")) as f:
    splits = json.load(f)
derived = derived_dataset_name(dataset, Teacher("nnUNetTrainer", protocol.plans, protocol.base_configuration))
print(report_protocol(dataset, derived, protocol, "hippocampus-cpu",
                      ["nnUNetTrainerPICK_emaTeacher", "nnUNetTrainerPICK_CutMix", "nnUNetTrainer_CutMix"], 4,
                      splits, out))

# per-repeat scores (the protocol's evaluation) and the paired difference PICK_CutMix - its labeled-only CutMix control
import csv  # noqa: E402

from nnunet_pick.benchmark.protocol import run_scores  # noqa: E402
from nnunet_pick.benchmark.statistics import paired_difference  # noqa: E402
from nnunet_pick.fold_runs import model_folder  # noqa: E402

prep = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
with open(os.path.join(prep, "dataset.json")) as f:
    dataset_json = json.load(f)
arms = {"labeled-only": "nnUNetTrainer", "nnUNetTrainerPICK_emaTeacher": "nnUNetTrainerPICK_emaTeacher",
        "nnUNetTrainerPICK_CutMix": "nnUNetTrainerPICK_CutMix", "nnUNetTrainer_CutMix": "nnUNetTrainer_CutMix"}
scores = {}
with open(os.path.join(out, "scores_per_repeat.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["arm", "repeat", "dice_mean", "dice_Anterior", "dice_Posterior"])
    for arm, trainer in arms.items():
        for r in range(4):
            folder = os.path.join(model_folder(out + "/results", dataset, trainer, protocol.plans,
                                               protocol.base_configuration), f"fold_{r}")
            s = run_scores(folder, os.path.join(prep, "gt_segmentations"), dataset_json)
            if s is None:
                continue
            scores.setdefault(arm, {})[r] = s["mean"]
            w.writerow([arm, r, s["mean"], s["Anterior"], s["Posterior"]])
for a, b in [("nnUNetTrainerPICK_CutMix", "nnUNetTrainer_CutMix"), ("nnUNetTrainer_CutMix", "labeled-only"),
             ("nnUNetTrainerPICK_CutMix", "labeled-only")]:
    print(a, "-", b, paired_difference(scores[a], scores[b]), {r: round(100 * v, 2) for r, v in scores[a].items()})
