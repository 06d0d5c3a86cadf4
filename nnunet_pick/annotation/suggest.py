"""Rank the unlabeled pool of a trained PICK model by how unsure the model is (``nnUNetv2_pick_suggest``).

Every unlabeled case (``imagesUnlabeled`` and the given folds' ``"unlabeled"`` ids of ``splits_final.json``, whose
label files are never opened) goes through nnU-Net's own inference path:

1. preprocessing with the plans' preprocessor (``preprocessor_class.run_case``, as ``nnUNetv2_predict`` does);
2. nnU-Net's sliding window (``nnUNetPredictor.predict_sliding_window_return_logits``: Gaussian weighting, tile step,
   mirroring) once with the PICK network as it is (``forward`` = encoder + primary decoder), and once with the
   network wrapped in :class:`AuxiliaryDecoderView`, whose ``forward`` returns the auxiliary decoder's logits. Each
   fold's weights are loaded in turn, as nnU-Net's predictor does;
3. the scores of :mod:`nnunet_pick.annotation.scores`, and the primary decoder's segmentation brought back to the
   image's geometry by nnU-Net (``convert_predicted_logits_to_segmentation_with_correct_shape``) and written with
   the plans' image writer, i.e. in the dataset's own file format.

**What the auxiliary decoder is fed** (exactly the training step's input, ``nnUNetTrainerPICK._unlabeled_branches``,
for every sliding-window patch and every mirrored copy of it): the primary decoder's hard prediction on that patch
(argmax of the softmax; sigmoid > 0.5 for regions) defines the mask ``M`` = predicted foreground (PICK's attentive
masking); the image with ``M`` set to 0 goes through the MIM decoder; its reconstruction is pasted into ``M``, the
original image is kept outside ``M``; the auxiliary decoder segments that image. Where the primary decoder predicts
no foreground the auxiliary decoder sees the unchanged image. Always attentive masking, whatever ``masking`` or
``startup_masking_min_fraction`` the trainer used: random masks would make the score of a case change between runs.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass, field
from os.path import isdir, isfile, join

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from torch import nn
from tqdm import tqdm

from nnunet_pick.annotation.figure import disagreement_slices, save_suggestion_figure
from nnunet_pick.annotation.scores import case_scores, combined_scores
from nnunet_pick.losses import paste_reconstruction
from nnunet_pick.masking import apply_mask, attentive_mask, pseudo_label
from nnunet_pick.unlabeled.pool import list_raw_unlabeled_cases, raw_unlabeled_folder, unlabeled_ids_from_split
from nnunet_pick.unlabeled.validate import check_unlabeled_folder, raise_if_problems

SCORE_COLUMNS = ("combined", "disagreement", "entropy", "fold_disagreement")
STAGING = ".all_segmentations"


class AuxiliaryDecoderView(nn.Module):
    """A PICK network whose ``forward(x)`` returns the auxiliary decoder's logits on ``x`` as the training step
    computes them (see the module docstring), so that nnU-Net's sliding window can run it unchanged.

    Args:
        network: a :class:`~nnunet_pick.network.PICKNetwork` (deep supervision off, as nnU-Net's predictor builds it).
        has_regions: the label manager's ``has_regions``.
    """

    def __init__(self, network: nn.Module, *, has_regions: bool) -> None:
        super().__init__()
        self.network = network
        self.has_regions = has_regions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, X, Y[, Z]) patches -> auxiliary logits (B, heads, X, Y[, Z])."""
        primary = self.network(x)
        primary = primary[0] if isinstance(primary, (list, tuple)) else primary
        masked = attentive_mask(pseudo_label(primary, has_regions=self.has_regions), has_regions=self.has_regions)
        reconstruction = self.network(apply_mask(x, masked), branch="mim")
        return self.network(paste_reconstruction(x, reconstruction, masked), branch="aux")


@dataclass
class UnlabeledPool:
    """The cases to rank: ``cases`` id -> channel files, ``sources`` id -> where it came from, and the ids left out
    because they are labeled training data of one of the folds used (``excluded``)."""

    cases: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)


def unlabeled_pool(raw_dataset_folder: str, dataset_json: dict, splits_file: str, folds: list) -> UnlabeledPool:
    """Every unlabeled case of a dataset for the given folds.

    Args:
        raw_dataset_folder: ``$nnUNet_raw/DatasetXXX_Name``.
        dataset_json: the dataset's ``dataset.json`` (file ending, channels).
        splits_file: ``splits_final.json`` (may not exist: then only ``imagesUnlabeled``).
        folds: fold numbers (int) or ``"all"``; ``"unlabeled"`` ids are taken from the numbered folds. An id that is
            ``"train"`` in another of these folds is left out: its label trained one of the models.

    Returns:
        :class:`UnlabeledPool`, ids sorted.

    Raises:
        ValueError: for problems of ``imagesUnlabeled`` (:mod:`nnunet_pick.unlabeled.validate`, all listed at once),
            an invalid fold entry of the splits, a fold the file lacks, an id in both sources, split ids
            without images in ``imagesTr``, or an empty pool (with where to put unlabeled data).
    """
    folder = raw_unlabeled_folder(raw_dataset_folder)
    raise_if_problems(check_unlabeled_folder(raw_dataset_folder, dataset_json), folder)
    file_ending = dataset_json["file_ending"]
    pool = UnlabeledPool()
    for case, files in list_raw_unlabeled_cases(folder, file_ending).items():
        pool.cases[case], pool.sources[case] = files, "imagesUnlabeled"
    numbered = [int(f) for f in folds if f != "all"]
    if numbered and isfile(splits_file):
        splits = load_json(splits_file)
        split_ids: dict[str, list[int]] = {}
        labeled: set[str] = set()
        for f in numbered:
            if f >= len(splits):
                raise ValueError(f"{splits_file} has {len(splits)} folds; fold {f} does not exist")
            for i in unlabeled_ids_from_split(splits[f], f):
                split_ids.setdefault(i, []).append(f)
            labeled |= {str(i) for i in splits[f].get("train", [])}
        clashes = sorted(set(split_ids) & set(pool.cases))
        if clashes:
            raise ValueError(f"case ids {clashes} are in imagesUnlabeled and 'unlabeled' ids of {splits_file}; rename "
                             f"the imagesUnlabeled files so that every case id is unique")
        pool.excluded = sorted(set(split_ids) & labeled)
        images_tr = join(raw_dataset_folder, "imagesTr")
        all_tr = list_raw_unlabeled_cases(images_tr, file_ending)  # same {CASE}_{XXXX} rule as imagesTr
        missing = sorted(set(split_ids) - set(all_tr))
        if missing:
            raise ValueError(f"'unlabeled' ids of {splits_file} without images in {images_tr}: {missing[:20]}")
        for case, in_folds in split_ids.items():
            if case not in pool.excluded:
                pool.cases[case] = all_tr[case]
                pool.sources[case] = "splits fold " + ",".join(map(str, in_folds))
    if not pool.cases:
        raise ValueError(
            f"no unlabeled cases: {raw_unlabeled_folder(raw_dataset_folder)} is empty or absent and folds {folds} of "
            f"{splits_file} list no 'unlabeled' ids. Put unlabeled images into imagesUnlabeled or list imagesTr cases "
            f"under 'unlabeled' in splits_final.json.")
    pool.cases = dict(sorted(pool.cases.items()))
    return pool


def restrict_pool(pool: UnlabeledPool, ids: list[str]) -> UnlabeledPool:
    """Only the cases ``ids`` of ``pool`` (``--cases``).

    Raises:
        ValueError: naming every id that is not an unlabeled case of the pool.
    """
    missing = sorted(set(ids) - set(pool.cases))
    if missing:
        raise ValueError(f"--cases {missing} are not unlabeled cases of this dataset and folds (imagesUnlabeled or "
                         f"'unlabeled' ids of splits_final.json)")
    keep = sorted(set(ids))
    return UnlabeledPool({c: pool.cases[c] for c in keep}, {c: pool.sources[c] for c in keep}, pool.excluded)


def _foreground_classes(dataset_json: dict, has_regions: bool) -> list[tuple[str, list[int]]]:
    """(name, label values) of every output class in head order (labels by value; regions in dataset.json order,
    as nnU-Net's ``LabelManager``), background and ignore left out."""
    items = []
    for name, value in dataset_json["labels"].items():
        values = [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
        if name == "ignore" or values == [0]:
            continue
        items.append((name, values))
    return items if has_regions else sorted(items, key=lambda t: t[1][0])


class Suggester:
    """A trained PICK model folder loaded once through nnU-Net's predictor, ready to score cases.

    Args:
        model_folder: ``.../<trainer>__<plans>__<configuration>`` of a PICK trainer.
        folds: folds whose checkpoints are used (their logits are averaged, as nnU-Net's predictor does).
        checkpoint: checkpoint file name.
        device: ``"cpu"`` or ``"cuda"``.
        use_mirroring: nnU-Net's test-time mirroring (its default: on).
        tile_step_size: nnU-Net's sliding-window step (0.5).

    Raises:
        FileNotFoundError: if a fold's checkpoint is missing.
        ValueError: if the model is not a PICK model (no auxiliary / MIM decoder).
    """

    def __init__(self, model_folder: str, folds: list, checkpoint: str = "checkpoint_final.pth", device: str = "cpu",
                 use_mirroring: bool = True, tile_step_size: float = 0.5) -> None:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from torch._dynamo import OptimizedModule

        for f in folds:
            path = join(model_folder, f"fold_{f}", checkpoint)
            if not isfile(path):
                raise FileNotFoundError(f"{path} does not exist; train fold {f} first or give the folds (-f) and "
                                        f"checkpoint (-chk) that {model_folder} holds")
        self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_mirroring=use_mirroring,
                                         device=torch.device(device), allow_tqdm=False)
        self.predictor.initialize_from_trained_model_folder(model_folder, tuple(folds), checkpoint)
        network = self.predictor.network
        self.network = network._orig_mod if isinstance(network, OptimizedModule) else network
        if not (hasattr(self.network, "aux_decoder") and hasattr(self.network, "mim_decoder")):
            raise ValueError(f"{model_folder} was trained with {self.predictor.trainer_name}, whose network has no "
                             f"auxiliary and MIM decoders; nnUNetv2_pick_suggest needs a PICK model "
                             f"(-tr nnUNetTrainerPICK or one of its variants)")
        self.label_manager = self.predictor.label_manager
        self.aux_view = AuxiliaryDecoderView(network, has_regions=self.label_manager.has_regions)
        self.classes = _foreground_classes(self.predictor.dataset_json, self.label_manager.has_regions)
        self.writer = self.predictor.plans_manager.image_reader_writer_class()

    def _logits(self, data: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per fold: nnU-Net's sliding-window logits of the primary decoder and of the auxiliary decoder."""
        primary, aux = [], []
        p = self.predictor
        try:
            for params in p.list_of_parameters:
                self.network.load_state_dict(params)
                p.network = self.network
                primary.append(p.predict_sliding_window_return_logits(data).float().cpu())
                p.network = self.aux_view
                aux.append(p.predict_sliding_window_return_logits(data).float().cpu())
        finally:
            p.network = self.network
        return primary, aux

    def score_case(self, image_files: list[str], segmentation_file: str | None) -> dict:
        """Preprocess, predict and score one case; optionally write the primary segmentation.

        Args:
            image_files: the case's channel files.
            segmentation_file: where to write the primary decoder's segmentation (the dataset's file format and
                the image's geometry), or None.

        Returns:
            :func:`~nnunet_pick.annotation.scores.case_scores`'s dict plus ``voxels`` / ``volume_ml`` (per class
            name, of the segmentation in the image's geometry), ``slices`` (for the figure) and ``seconds``.
        """
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        start = time.perf_counter()
        p = self.predictor
        preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case(image_files, None, p.plans_manager, p.configuration_manager,
                                                    p.dataset_json)
        data = torch.from_numpy(np.ascontiguousarray(data)).float()
        primary, aux = self._logits(data)
        result = case_scores(primary, aux, has_regions=self.label_manager.has_regions)
        primary_mean = torch.stack(primary).mean(0)
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            primary_mean, p.plans_manager, p.configuration_manager, self.label_manager, properties)
        if segmentation_file is not None:
            self.writer.write_seg(seg, segmentation_file, properties)
        voxel_ml = float(np.prod(properties["spacing"])) / 1000.0  # spacing in mm -> mL
        result["voxels"] = {name: int(np.isin(seg, values).sum()) for name, values in self.classes}
        result["volume_ml"] = {name: n * voxel_ml for name, n in result["voxels"].items()}
        to_map = self.label_manager.convert_logits_to_segmentation
        result["slices"] = disagreement_slices(data[0].numpy(), np.asarray(to_map(primary_mean)),
                                               np.asarray(to_map(torch.stack(aux).mean(0))))
        result["seconds"] = time.perf_counter() - start
        return result


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def write_tables(rows: list[dict], output_folder: str) -> tuple[str, str]:
    """``suggestions.csv`` and ``suggestions.md`` (same columns, rank order) in ``output_folder``."""
    columns = list(rows[0])
    csv_path, md_path = join(output_folder, "suggestions.csv"), join(output_folder, "suggestions.md")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def suggest(suggester: Suggester, pool: UnlabeledPool, output_folder: str, num_top: int = 10,
            progress_bar: bool = True) -> list[dict]:
    """Score every case of ``pool``, rank by the combined score and write the outputs.

    Writes into ``output_folder`` (which must be empty or absent): ``suggestions.csv`` and ``suggestions.md`` (one
    row per case, rank 1 = annotate first), ``segmentations/CASE<file_ending>`` (the primary decoder's segmentation
    of the top ``num_top`` cases) and ``figures/rankNNN_CASE.png`` (slices through the largest disagreement).

    Args:
        suggester: the loaded model.
        pool: the cases (:func:`unlabeled_pool`).
        output_folder: where to write.
        num_top: K, cases whose segmentation and figure are written.
        progress_bar: ``tqdm`` progress bar over the cases.

    Returns:
        The table rows in rank order (the CSV's columns).

    Raises:
        FileExistsError: if ``output_folder`` exists and is not empty (nothing is written then).
        ValueError: if ``num_top`` < 1.
    """
    if num_top < 1:
        raise ValueError(f"-n must be at least 1, got {num_top}")
    if isdir(output_folder) and os.listdir(output_folder):
        raise FileExistsError(f"{output_folder} is not empty; give a new output folder (-o) so that no earlier "
                              f"suggestion is mixed with this one")
    ending = suggester.predictor.dataset_json["file_ending"]
    staging = join(output_folder, STAGING)
    os.makedirs(staging)
    results = {}
    for case, files in tqdm(pool.cases.items(), desc="Scoring unlabeled cases", disable=not progress_bar):
        results[case] = suggester.score_case(files, join(staging, case + ending))
    cases = list(results)
    combined = combined_scores({k: [results[c][k] for c in cases] for k in SCORE_COLUMNS[1:]})
    order = sorted(range(len(cases)), key=lambda i: (-combined[i], cases[i]))
    os.makedirs(join(output_folder, "segmentations"))
    os.makedirs(join(output_folder, "figures"))
    rows = []
    num_labels = max([v for _, values in suggester.classes for v in values], default=1) + 1
    for rank, i in enumerate(order, start=1):
        case, r = cases[i], results[cases[i]]
        row = {"rank": rank, "case": case, "source": pool.sources[case], "combined": float(combined[i]),
               "disagreement": r["disagreement"], "entropy": r["entropy"], "fold_disagreement": r["fold_disagreement"]}
        for (name, _), d in zip(suggester.classes, r["disagreement_per_class"], strict=True):
            row[f"disagreement_{name}"] = float(d)
        for name, _ in suggester.classes:
            row[f"voxels_{name}"] = r["voxels"][name]
            row[f"volume_mL_{name}"] = r["volume_ml"][name]
        row["seconds"] = r["seconds"]
        row["segmentation"] = ""
        if rank <= num_top:
            os.replace(join(staging, case + ending), join(output_folder, "segmentations", case + ending))
            row["segmentation"] = f"segmentations/{case}{ending}"
            title = (f"rank {rank}: {case}  combined {row['combined']:.3f}  disagreement {r['disagreement']:.3f}  "
                     f"entropy {r['entropy']:.3f}")
            save_suggestion_figure(join(output_folder, "figures", f"rank{rank:03d}_{case}.png"), r["slices"],
                                   num_labels, title)
        rows.append(row)
    shutil.rmtree(staging)
    write_tables(rows, output_folder)
    return rows
