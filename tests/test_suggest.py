"""``nnUNetv2_pick_suggest`` on the session's trained PICK model (the ``trained`` fixture of conftest.py): what the
auxiliary decoder is fed, the CSV / Markdown / segmentations / figures written, and that the primary segmentation is
nnU-Net's own prediction of the case."""

from __future__ import annotations

import csv
import math
import os
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)
import torch
from helpers import (
    DATASET_ID,
    E2E_CONFIGURATION,
    E2E_TRAINER,
    FOLD0,
    UNLABELED_RAW,
    command,
    run_checked,
)

from nnunet_pick.annotation.scores import combined_scores
from nnunet_pick.annotation.suggest import AuxiliaryDecoderView, Suggester

pytestmark = pytest.mark.slow
TOP = 3
CLASSES = ("Anterior", "Posterior")
# scored by the command (two of each source; the whole pool of 10 would cost CI a minute more of CPU)
SCORED = [*UNLABELED_RAW[:2], *FOLD0["unlabeled"][:2]]


@pytest.fixture(scope="module")
def suggestion(trained, tmp_path_factory):
    """The command as a user types it (no test-time mirroring, to keep it short on the CPU)."""
    out = tmp_path_factory.mktemp("suggest") / "out"
    env = {**os.environ, "nnUNet_extTrainer": trained["nnUNet_extTrainer"]}
    proc = run_checked([command("nnUNetv2_pick_suggest"), "-d", str(DATASET_ID), "-c", E2E_CONFIGURATION, "-f", "0",
                        "-tr", E2E_TRAINER, "-n", str(TOP), "-o", str(out), "--disable_tta", "--cases", *SCORED], env)
    with open(out / "suggestions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {"out": out, "rows": rows, "stdout": proc.stdout, "env": env}


@pytest.fixture(scope="module")
def suggester(trained):
    from nnunet_pick._discovery import register

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_extTrainer", trained["nnUNet_extTrainer"])
        register()
        yield Suggester(str(trained["fold"].parent), [0], use_mirroring=False)


def test_the_pool_is_imagesunlabeled_and_the_folds_unlabeled_ids(trained, hippocampus):
    import json

    from nnunet_pick.annotation.suggest import restrict_pool, unlabeled_pool

    dataset_json = json.loads((trained["raw"] / "dataset.json").read_text(encoding="utf-8"))
    pool = unlabeled_pool(str(trained["raw"]), dataset_json, str(hippocampus / "splits_final.json"), [0])
    assert sorted(pool.cases) == sorted([*UNLABELED_RAW, *FOLD0["unlabeled"]])
    assert {pool.sources[c] for c in UNLABELED_RAW} == {"imagesUnlabeled"}
    assert {pool.sources[c] for c in FOLD0["unlabeled"]} == {"splits fold 0"}
    case = FOLD0["unlabeled"][0]
    assert pool.cases[case] == [str(trained["raw"] / "imagesTr" / f"{case}_0000.nii.gz")]  # the image, not the label
    assert unlabeled_pool(str(trained["raw"]), dataset_json, str(hippocampus / "splits_final.json"),
                          ["all"]).sources == {c: "imagesUnlabeled" for c in UNLABELED_RAW}
    with pytest.raises(ValueError, match="not unlabeled cases"):
        restrict_pool(pool, [FOLD0["train"][0]])  # a labeled case


def test_the_cases_are_ranked_by_the_combined_score(suggestion):
    rows = suggestion["rows"]
    assert sorted(r["case"] for r in rows) == sorted(SCORED)
    sources = {r["case"]: r["source"] for r in rows}
    assert [sources[c] for c in SCORED] == ["imagesUnlabeled"] * 2 + ["splits fold 0"] * 2
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    combined = [float(r["combined"]) for r in rows]
    assert combined == sorted(combined, reverse=True)
    # the combined score is the mean percentile rank of disagreement and entropy (one fold: no fold disagreement)
    assert all(math.isnan(float(r["fold_disagreement"])) for r in rows)
    recomputed = combined_scores({k: [float(r[k]) for r in rows] for k in ("disagreement", "entropy")})
    np.testing.assert_allclose(combined, recomputed, rtol=1e-12)
    for r in rows:
        per_class = [float(r[f"disagreement_{c}"]) for c in CLASSES]
        assert all(0 <= d <= 1 for d in per_class)
        assert float(r["disagreement"]) == pytest.approx(np.mean(per_class))
        assert float(r["seconds"]) > 0
    # the Markdown table has the same rows in the same order
    md = (suggestion["out"] / "suggestions.md").read_text(encoding="utf-8").splitlines()
    assert [line.split("|")[2].strip() for line in md[2:]] == [r["case"] for r in rows]
    assert "s per case on cpu" in suggestion["stdout"]


def test_top_k_segmentations_and_figures_are_written_in_the_dataset_format(suggestion, trained):
    out, rows = suggestion["out"], suggestion["rows"]
    top = [r["case"] for r in rows[:TOP]]
    assert sorted(os.listdir(out / "segmentations")) == sorted(f"{c}.nii.gz" for c in top)
    assert sorted(os.listdir(out / "figures")) == sorted(f"rank{i + 1:03d}_{c}.png" for i, c in enumerate(top))
    assert sorted(os.listdir(out)) == ["figures", "segmentations", "suggestions.csv", "suggestions.md"]
    for r in rows:
        if r["case"] not in top:
            assert r["segmentation"] == ""
            continue
        assert r["segmentation"] == f"segmentations/{r['case']}.nii.gz"
        seg_img = sitk.ReadImage(str(out / r["segmentation"]))
        folder = "imagesUnlabeled" if r["source"] == "imagesUnlabeled" else "imagesTr"
        image = sitk.ReadImage(str(trained["raw"] / folder / f"{r['case']}_0000.nii.gz"))
        assert seg_img.GetSize() == image.GetSize()
        np.testing.assert_allclose(seg_img.GetSpacing(), image.GetSpacing())
        np.testing.assert_allclose(seg_img.GetOrigin(), image.GetOrigin())
        seg = sitk.GetArrayFromImage(seg_img)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000
        for label, name in enumerate(CLASSES, start=1):
            assert int(r[f"voxels_{name}"]) == int((seg == label).sum())
            assert float(r[f"volume_mL_{name}"]) == pytest.approx(int((seg == label).sum()) * voxel_ml)
        with open(out / "figures" / f"rank{int(r['rank']):03d}_{r['case']}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_primary_segmentation_is_nnunets_prediction(suggestion, suggester, trained):
    """The written segmentation equals nnU-Net's predictor's (same settings) on the raw image."""
    case = suggestion["rows"][0]["case"]
    folder = "imagesUnlabeled" if case in UNLABELED_RAW else "imagesTr"
    reader = suggester.predictor.plans_manager.image_reader_writer_class()
    image, properties = reader.read_images([str(trained["raw"] / folder / f"{case}_0000.nii.gz")])
    expected = suggester.predictor.predict_single_npy_array(image, properties)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(suggestion["out"] / "segmentations" / f"{case}.nii.gz")))
    np.testing.assert_array_equal(written, expected)


def test_auxiliary_decoder_is_fed_the_image_with_the_predicted_foreground_reconstructed(suggester):
    """Where the primary decoder predicts no foreground the auxiliary decoder sees the image itself; where it
    predicts foreground everywhere it sees the MIM decoder's reconstruction of the fully masked (all-zero) image."""
    from nnunet_pick.demo_data import HIPPOCAMPUS

    p = suggester.predictor
    network = suggester.network.eval()
    view = AuxiliaryDecoderView(network, has_regions=False)
    data, _, _ = p.configuration_manager.preprocessor_class(verbose=False).run_case(
        [str(HIPPOCAMPUS / "imagesTr" / f"{UNLABELED_RAW[0]}_0000.nii.gz")], None, p.plans_manager,
        p.configuration_manager, p.dataset_json)
    patch = tuple(p.configuration_manager.patch_size)
    x = torch.from_numpy(np.ascontiguousarray(data[:, data.shape[1] // 2, : patch[0], : patch[1]])).float()[None]
    x = torch.nn.functional.pad(x, (0, patch[1] - x.shape[-1], 0, patch[0] - x.shape[-2]))  # one real 2d patch
    head = max(k for k in network.state_dict() if k.startswith("decoder.seg_layers.") and k.endswith(".bias"))
    bias = network.state_dict()[head]
    original = bias.clone()
    with torch.no_grad():
        try:
            bias[0] += 1000  # background everywhere: nothing masked
            assert network(x).argmax(1).max() == 0
            torch.testing.assert_close(view(x), network(x, branch="aux"), rtol=0, atol=0)
            bias.copy_(original)
            bias[1] += 1000  # foreground everywhere: everything masked and reconstructed
            assert network(x).argmax(1).min() == 1
            reconstruction = network(torch.zeros_like(x), branch="mim")
            torch.testing.assert_close(view(x), network(reconstruction, branch="aux"), rtol=0, atol=0)
            assert not torch.equal(view(x), network(x, branch="aux"))  # so the input really differs
        finally:
            bias.copy_(original)


def test_refuses_a_non_empty_output_folder(suggestion):
    proc = subprocess.run(
        [command("nnUNetv2_pick_suggest"), "-d", str(DATASET_ID), "-c", E2E_CONFIGURATION, "-f", "0", "-tr",
         E2E_TRAINER, "-o", str(suggestion["out"])], env=suggestion["env"], capture_output=True, encoding="utf-8")
    assert proc.returncode == 1
    assert "is not empty" in proc.stderr
