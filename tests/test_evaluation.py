"""Dice / Jaccard / ASD / HD95 against values worked out by hand on small masks, and on real files."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.evaluation import METRICS, binary_metrics, evaluate_folder, label_metrics


def squares():
    """3x3 square (rows 2-4, columns 2-4) and the same square shifted one column to the right."""
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    b = np.zeros((8, 8), bool)
    b[2:5, 3:6] = True
    return a, b


def test_overlap_and_surface_distances_by_hand():
    a, b = squares()
    m = binary_metrics(a, b, spacing=(1.0, 2.0))
    # overlap 6 voxels of 9 + 9: Dice 12/18, Jaccard 6/12
    assert m["Dice"] == pytest.approx(2 / 3)
    assert m["Jaccard"] == pytest.approx(0.5)
    # surfaces (8 border voxels each). In voxels, a -> b distances are 1,1,1,1 and four 0: ASD 0.5; the 16 symmetric
    # distances are eight 0 and eight 1: HD95 1.
    assert m["ASD_voxel"] == pytest.approx(0.5)
    assert m["HD95_voxel"] == pytest.approx(1.0)
    # columns 2 mm apart: a's left column is 2 mm from b's surface, (3,4) is 1 mm (row neighbour): ASD 7/8;
    # symmetric distances: eight 0, two 1, six 2 -> 95th percentile 2
    assert m["ASD_mm"] == pytest.approx(7 / 8)
    assert m["HD95_mm"] == pytest.approx(2.0)


def test_identical_masks_and_empty_mask_rules():
    a, _ = squares()
    same = binary_metrics(a, a, (1, 1))
    assert same == {"Dice": 1.0, "Jaccard": 1.0, "ASD_voxel": 0.0, "HD95_voxel": 0.0, "ASD_mm": 0.0, "HD95_mm": 0.0}
    empty = np.zeros_like(a)
    missed = binary_metrics(empty, a, (1, 1))
    assert missed["Dice"] == 0
    assert missed["Jaccard"] == 0
    assert all(math.isnan(missed[k]) for k in METRICS[2:])
    assert all(math.isnan(v) for v in binary_metrics(empty, empty, (1, 1)).values())
    with pytest.raises(ValueError, match="differ in shape"):
        binary_metrics(a, a[:4], (1, 1))


def test_3d_spacing_scales_distances():
    a = np.zeros((6, 6, 6), bool)
    a[1:4, 1:4, 1:4] = True
    b = np.roll(a, 1, axis=0)  # shifted one voxel along the first axis
    m = binary_metrics(a, b, (2.5, 1.0, 1.0))
    assert m["HD95_voxel"] == pytest.approx(1.0)
    assert m["HD95_mm"] == pytest.approx(2.5)


def test_evaluate_folder_on_real_hippocampus_labels(tmp_path, capsys):
    cases = ["hippocampus_004", "hippocampus_006"]
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for c in cases:
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{c}.nii.gz", ref)
    # prediction 1: the reference itself; prediction 2: label 2 removed (a missed class)
    shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{cases[0]}.nii.gz", pred)
    img = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{cases[1]}.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == 2] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(pred / f"{cases[1]}.nii.gz"))
    dataset_json = {"labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "file_ending": ".nii.gz",
                    "channel_names": {"0": "MRI"}, "numTraining": 2}
    summary = evaluate_folder(str(ref), str(pred), dataset_json, str(tmp_path / "summary.json"))
    first, second = (c["metrics"] for c in summary["metric_per_case"])
    assert first["1"]["Dice"] == 1.0
    assert first["2"]["HD95_mm"] == 0.0
    assert second["1"]["Dice"] == 1.0
    assert second["2"]["Dice"] == 0.0
    assert math.isnan(second["2"]["HD95_voxel"])
    assert summary["mean"]["2"]["Dice"] == pytest.approx(0.5)
    assert summary["std"]["2"]["Dice"] == pytest.approx(0.5)
    assert summary["n_undefined"]["2"]["HD95_mm"] == 1
    assert summary["mean"]["2"]["HD95_mm"] == 0.0  # the undefined case is skipped, not counted as 0
    saved = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert saved["mean"]["1"]["Jaccard"] == 1.0
    rows = (tmp_path / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "case,label," + ",".join(METRICS)
    assert len(rows) == 1 + 2 * 2

    # the command prints the label names beside the values (a new user read "1" and "2" without names)
    from nnunet_pick.cli import evaluate as cli

    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    capsys.readouterr()
    assert cli.main([str(ref), str(pred), "-djfile", str(tmp_path / "dataset.json"), "-o",
                     str(tmp_path / "cli.json")]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("label "))
    assert printed[header + 1].startswith("1 Anterior ") and " 1.0000 +/- " in printed[header + 1]
    assert printed[header + 2].startswith("2 Posterior") and " 0.5000 +/- 0.5000" in printed[header + 2]


def ignore_label_dataset(folder, cases: list[str]) -> tuple:
    """A real ignore-label dataset from Hippocampus labels: in each reference the posterior third of the slices is
    marked "ignore" (label 3), as sparse annotation leaves it. Predictions: the reference shifted by one voxel (real
    errors everywhere) and, inside the ignored slices, label 1 everywhere (wrong if those voxels were scored)."""
    ref, pred = folder / "ref", folder / "pred"
    ref.mkdir()
    pred.mkdir()
    for c in cases:
        img = sitk.ReadImage(str(HIPPOCAMPUS / "labelsTr" / f"{c}.nii.gz"))
        truth = sitk.GetArrayFromImage(img)
        band = slice(0, truth.shape[0] // 3)
        reference = truth.copy()
        reference[band] = 3
        prediction = np.roll(truth, 1, axis=1)
        prediction[band] = 1
        for array, target in ((reference, ref), (prediction, pred)):
            out = sitk.GetImageFromArray(array.astype(np.uint8))
            out.CopyInformation(img)
            sitk.WriteImage(out, str(target / f"{c}.nii.gz"))
    dataset_json = {"labels": {"background": 0, "Anterior": 1, "Posterior": 2, "ignore": 3},
                    "file_ending": ".nii.gz", "channel_names": {"0": "MRI"}, "numTraining": len(cases)}
    return ref, pred, dataset_json


def test_ignore_label_is_excluded_exactly_as_nnunet_does(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    cases = ["hippocampus_004", "hippocampus_006", "hippocampus_014", "hippocampus_015"]
    ref, pred, dataset_json = ignore_label_dataset(tmp_path, cases)
    ours = evaluate_folder(str(ref), str(pred), dataset_json)
    nnunet = compute_metrics_on_folder(str(ref), str(pred), str(tmp_path / "nnunet_summary.json"), SimpleITKIO(),
                                       ".nii.gz", [1, 2], ignore_label=3, num_processes=1)
    for mine, theirs in zip(ours["metric_per_case"], nnunet["metric_per_case"], strict=True):
        assert mine["prediction_file"] == theirs["prediction_file"]
        for label in (1, 2):
            assert mine["metrics"][str(label)]["Dice"] == pytest.approx(theirs["metrics"][label]["Dice"], abs=1e-12)
            assert mine["metrics"][str(label)]["Jaccard"] == pytest.approx(theirs["metrics"][label]["IoU"], abs=1e-12)
    for label in (1, 2):
        assert ours["mean"][str(label)]["Dice"] == pytest.approx(nnunet["mean"][label]["Dice"], abs=1e-12)
    assert ours["foreground_mean"]["Dice"] == pytest.approx(nnunet["foreground_mean"]["Dice"], abs=1e-12)
    # the ignored band matters: counted as background it would lower label 1's Dice a lot
    counted = label_metrics(*(sitk.GetArrayFromImage(sitk.ReadImage(str(d / f"{cases[0]}.nii.gz")))
                              for d in (pred, ref)), [1], (1.0, 1.0, 1.0))
    assert counted["1"]["Dice"] < ours["metric_per_case"][0]["metrics"]["1"]["Dice"] - 0.1


def test_predictions_inside_the_ignored_region_do_not_count_for_surface_distances(tmp_path):
    """Prediction = reference outside the ignored slices, anything inside them: every metric is perfect."""
    ref, pred, dataset_json = ignore_label_dataset(tmp_path, ["hippocampus_004"])
    img = sitk.ReadImage(str(ref / "hippocampus_004.nii.gz"))
    reference = sitk.GetArrayFromImage(img)
    prediction = np.where(reference == 3, 1, reference).astype(np.uint8)  # label 1 all over the ignored slices
    out = sitk.GetImageFromArray(prediction)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(pred / "hippocampus_004.nii.gz"))
    metrics = evaluate_folder(str(ref), str(pred), dataset_json)["metric_per_case"][0]["metrics"]
    for label in ("1", "2"):
        assert metrics[label] == {"Dice": 1.0, "Jaccard": 1.0, "ASD_voxel": 0.0, "HD95_voxel": 0.0, "ASD_mm": 0.0,
                                  "HD95_mm": 0.0}
