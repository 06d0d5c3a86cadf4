"""Segmentation metrics of the semi-supervised segmentation literature: Dice, Jaccard, ASD, HD95.

Overlap (Dice, Jaccard) is computed here from voxel counts; surface distances come from MedPy
(``medpy.metric.binary.asd`` and ``hd95``), the library the PICK authors and the SSL papers they compare with used
(e.g. UA-MT's ``calculate_metric_percase``), so the numbers follow the same convention:

- ``HD95``: the 95th percentile of the symmetric surface distances (MedPy ``hd95``).
- ``ASD``: the mean distance from the prediction's surface to the reference's surface (MedPy ``asd``; one-directional,
  as in those papers, not the symmetric ASSD).
- Both in voxels (``voxelspacing=None``) and in mm (the image's spacing from its header, read by nnU-Net's reader).

Rule for empty masks (stated because the literature differs): when prediction and reference of a label are both
empty, every metric is NaN, like nnU-Net's Dice (nothing to score); when exactly one is empty, Dice and Jaccard are 0
and the surface distances are NaN (undefined: MedPy raises on an empty mask; some SSL code reports 0 instead, which
would reward missing an organ). Means and standard deviations skip NaN; ``n_undefined`` counts them.

Ignore label (``dataset.json`` label ``"ignore"``): voxels the reference marks with it are excluded from every metric,
as nnU-Net's ``compute_metrics`` excludes them (``compute_tp_fp_fn_tn`` with ``ignore_mask``): both masks are restricted
to the voxels that are not ignored before anything is counted, so Dice and Jaccard equal nnU-Net's Dice and IoU. The
surface distances are computed on the same restricted masks: a prediction that reaches into the ignored region is cut
at its border (its surface there is the border of the ignored region), and nothing predicted inside it counts.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from os.path import basename, join

import numpy as np
from medpy.metric.binary import asd, hd95

METRICS: tuple[str, ...] = ("Dice", "Jaccard", "ASD_voxel", "HD95_voxel", "ASD_mm", "HD95_mm")


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, Jaccard, ASD and HD95 (voxels and mm) of one binary mask against another.

    Args:
        prediction: bool (X, Y[, Z]).
        reference: bool, same shape.
        spacing: voxel size per axis of the arrays, in mm.

    Returns:
        {metric: value} for :data:`METRICS`, NaN where undefined (see the module's rule for empty masks).

    Raises:
        ValueError: if the shapes differ or the spacing has the wrong length.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match the {prediction.ndim}D arrays")
    n_pred, n_ref = int(prediction.sum()), int(reference.sum())
    if n_pred == 0 and n_ref == 0:
        return dict.fromkeys(METRICS, math.nan)
    tp = int(np.logical_and(prediction, reference).sum())
    result = {"Dice": 2 * tp / (n_pred + n_ref), "Jaccard": tp / (n_pred + n_ref - tp)}
    if n_pred == 0 or n_ref == 0:
        return {**result, **dict.fromkeys(METRICS[2:], math.nan)}
    spacing = tuple(float(s) for s in spacing)
    result.update(ASD_voxel=float(asd(prediction, reference)), HD95_voxel=float(hd95(prediction, reference)),
                  ASD_mm=float(asd(prediction, reference, voxelspacing=spacing)),
                  HD95_mm=float(hd95(prediction, reference, voxelspacing=spacing)))
    return result


def label_metrics(prediction: np.ndarray, reference: np.ndarray, labels_or_regions: Sequence,
                  spacing: Sequence[float], ignore_label: int | None = None) -> dict[str, dict[str, float]]:
    """:func:`binary_metrics` per label (int) or region (tuple of labels) of two label maps.

    Args:
        prediction, reference: integer label maps of the same shape.
        labels_or_regions: what to score.
        spacing: voxel size per axis in mm.
        ignore_label: voxels where ``reference`` has this value are left out of every metric (nnU-Net's rule; see
            the module docstring); None scores every voxel.

    Returns:
        {str(label or region): {metric: value}}.
    """
    def mask(seg: np.ndarray, label) -> np.ndarray:
        return np.isin(seg, label) if isinstance(label, (tuple, list)) else seg == label

    scored = None if ignore_label is None else reference != ignore_label

    def restricted(m: np.ndarray) -> np.ndarray:
        return m if scored is None else m & scored

    return {str(lab): binary_metrics(restricted(mask(prediction, lab)), restricted(mask(reference, lab)), spacing)
            for lab in labels_or_regions}


def summarize(per_case: list[dict]) -> tuple[dict, dict, dict]:
    """Mean, standard deviation (ddof 0) and NaN count per label and metric over cases, skipping NaN."""
    labels = list(per_case[0]["metrics"]) if per_case else []
    mean, std, undefined = {}, {}, {}
    for lab in labels:
        mean[lab], std[lab], undefined[lab] = {}, {}, {}
        for m in METRICS:
            values = np.array([c["metrics"][lab][m] for c in per_case], dtype=float)
            finite = values[~np.isnan(values)]
            mean[lab][m] = float(finite.mean()) if finite.size else math.nan
            std[lab][m] = float(finite.std()) if finite.size else math.nan
            undefined[lab][m] = int(np.isnan(values).sum())
    return mean, std, undefined


def evaluate_folder(reference_folder: str, prediction_folder: str, dataset_json: dict,
                    output_file: str | None = None) -> dict:
    """Score every prediction in ``prediction_folder`` against the same-named file in ``reference_folder``.

    Files are read with the dataset's nnU-Net reader/writer (``determine_reader_writer_from_dataset_json``), spacing
    from the image headers, labels (or regions) from ``dataset.json`` excluding background and ignore; voxels of the
    ignore label in the reference are excluded from every metric, as in nnU-Net's ``compute_metrics``.

    Args:
        reference_folder: reference segmentations (``labelsTr``, ``labelsTs`` or nnU-Net's ``gt_segmentations``).
        prediction_folder: predicted segmentations with the dataset's file ending.
        dataset_json: the dataset's ``dataset.json`` content.
        output_file: if given, JSON written there (nnU-Net's ``summary.json`` layout: ``metric_per_case`` ->
            ``metrics`` -> label -> metric, plus ``mean``, ``std``, ``n_undefined``, ``foreground_mean``) and a CSV
            with one row per case and label beside it (same name, ``.csv``).

    Returns:
        The summary dict.

    Raises:
        FileNotFoundError: if there are no predictions, or a reference file is missing.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    ending = dataset_json["file_ending"]
    predictions = sorted(f for f in os.listdir(prediction_folder) if f.endswith(ending))
    if not predictions:
        raise FileNotFoundError(f"No predictions ending in {ending} in {prediction_folder}.")
    missing = [f for f in predictions if not os.path.isfile(join(reference_folder, f))]
    if missing:
        raise FileNotFoundError(f"No reference in {reference_folder} for predictions {missing[:10]}.")
    labels = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    targets = labels.foreground_regions if labels.has_regions else labels.foreground_labels
    reader = determine_reader_writer_from_dataset_json(dataset_json, join(prediction_folder, predictions[0]))()
    per_case = []
    for f in predictions:
        pred, _ = reader.read_seg(join(prediction_folder, f))
        ref, properties = reader.read_seg(join(reference_folder, f))
        spacing = properties["spacing"][-(ref.ndim - 1):]
        per_case.append({"reference_file": join(reference_folder, f), "prediction_file": join(prediction_folder, f),
                         "metrics": label_metrics(pred[0], ref[0], targets, spacing, labels.ignore_label)})
    mean, std, undefined = summarize(per_case)
    foreground = {m: float(np.nanmean([mean[lab][m] for lab in mean])) if mean else math.nan for m in METRICS}
    summary = {"metric_per_case": per_case, "mean": mean, "std": std, "n_undefined": undefined,
               "foreground_mean": foreground,
               "conventions": "Dice/Jaccard from voxel counts; ASD = MedPy asd (prediction -> reference), HD95 = MedPy "
                              "hd95; NaN where undefined (empty masks), skipped in mean/std; voxels of the ignore "
                              "label in the reference are excluded from every metric (as nnU-Net's compute_metrics)."}
    if output_file is not None:
        with open(output_file, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2, allow_nan=True)
        with open(output_file.rsplit(".", 1)[0] + ".csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case", "label", *METRICS])
            for c in per_case:
                for lab, values in c["metrics"].items():
                    writer.writerow([basename(c["prediction_file"]), lab, *[values[m] for m in METRICS]])
    return summary
