"""Dataset converters of examples/, run as the commands users run, on real sample files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LA_SAMPLE = Path(__file__).resolve().parent / "data" / "LA2018_h5_sample"


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)


def test_la2018_converter_on_real_h5_cases(tmp_path):
    proc = run_example("convert_la2018.py", "-i", str(LA_SAMPLE), "-o", str(tmp_path), "-d", "120",
                       "--num-labeled", "1")
    assert proc.returncode == 0, proc.stderr
    assert "98 listed cases have no h5 file" in proc.stderr  # the sample has 2 of the 100 listed cases
    out = tmp_path / "Dataset120_LA2018"
    listed = (LA_SAMPLE / "train.list").read_text(encoding="utf-8").split()
    train_order = [c for c in listed if (LA_SAMPLE / c).is_dir()]
    assert train_order == ["0RZDK210BSMWAA6467LU", "1GU15S0GJ6PFNARO469W"]
    # the papers' protocol: the first N of train.list labeled, the rest unlabeled, test.list as validation
    assert json.loads((out / "splits_final.json").read_text(encoding="utf-8")) == [
        {"train": ["0RZDK210BSMWAA6467LU"], "val": [], "unlabeled": ["1GU15S0GJ6PFNARO469W"]}]
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "left_atrium": 1}
    assert dataset_json["numTraining"] == 2
    for case in train_order:
        with h5py.File(LA_SAMPLE / case / "mri_norm2.h5", "r") as f:
            image, label = f["image"][:], f["label"][:]
        nii = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        seg = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        assert nii.GetSpacing() == (0.625, 0.625, 0.625)
        assert nii.GetSize() == image.shape  # (X, Y, Z) kept as the image axes
        np.testing.assert_array_equal(sitk.GetArrayFromImage(nii).transpose(2, 1, 0), image)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(seg).transpose(2, 1, 0), label)
    # nnU-Net accepts the dataset
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(out), num_processes=1)


def test_la2018_converter_reports_a_wrong_folder(tmp_path):
    (tmp_path / "train.list").write_text("A\n", encoding="utf-8")
    (tmp_path / "test.list").write_text("B\n", encoding="utf-8")
    proc = run_example("convert_la2018.py", "-i", str(tmp_path), "-o", str(tmp_path / "raw"))
    assert proc.returncode == 1
    assert "No <CASE>/mri_norm2.h5" in proc.stderr


def write_nifti(path: Path, array_zyx: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_msd_lung_converter_uses_nnunets_converter_and_moves_test_images(tmp_path, monkeypatch):
    """A Task06_Lung folder in MSD's layout (NIfTI files and MSD's dataset.json) with 2 training and 1 test case."""
    task = tmp_path / "Task06_Lung"
    rng = np.random.default_rng(0)
    for case in ("lung_001", "lung_003"):
        write_nifti(task / "imagesTr" / f"{case}.nii.gz", rng.normal(size=(6, 8, 8)).astype(np.float32))
        write_nifti(task / "labelsTr" / f"{case}.nii.gz", (rng.random((6, 8, 8)) > 0.9).astype(np.uint8))
    write_nifti(task / "imagesTs" / "lung_002.nii.gz", rng.normal(size=(6, 8, 8)).astype(np.float32))
    (task / "dataset.json").write_text(json.dumps({
        "name": "Lung", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"}, "numTraining": 2,
        "numTest": 1, "license": "CC-BY-SA 4.0",
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                     for c in ("lung_001", "lung_003")], "test": ["./imagesTs/lung_002.nii.gz"]}), encoding="utf-8")
    raw = tmp_path / "raw"
    raw.mkdir()
    env_root = {"nnUNet_raw": str(raw), "nnUNet_preprocessed": str(tmp_path / "pre"),
                "nnUNet_results": str(tmp_path / "res")}
    for k, v in env_root.items():
        monkeypatch.setenv(k, v)
    proc = run_example("convert_msd_lung.py", "-i", str(task), "-d", "506", "--test-as-unlabeled", "-np", "1")
    assert proc.returncode == 0, proc.stderr
    out = raw / "Dataset506_Lung"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["lung_001_0000.nii.gz", "lung_003_0000.nii.gz"]
    assert [p.name for p in (out / "imagesUnlabeled").iterdir()] == ["lung_002_0000.nii.gz"]
    assert not (out / "imagesTs").exists()
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["labels"] == {"background": 0, "cancer": 1}


def test_amos_converter_splits_216_24_120_and_keeps_labels(tmp_path):
    amos = tmp_path / "amos22"
    ids = [f"amos_{i:04d}" for i in range(1, 361)]
    small = np.zeros((2, 2, 2), np.uint8)
    for i, case in enumerate(ids):
        images, labels = ("imagesTr", "labelsTr") if i < 240 else ("imagesVa", "labelsVa")
        write_nifti(amos / images / f"{case}.nii.gz", small.astype(np.int16))
        write_nifti(amos / labels / f"{case}.nii.gz", small + (i % 16))
    names = ["background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach",
             "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
             "prostate/uterus"]
    labels = {str(i): n for i, n in enumerate(names)}
    (amos / "dataset.json").write_text(json.dumps({"labels": labels}), encoding="utf-8")
    proc = run_example("convert_amos.py", "-i", str(amos), "-o", str(tmp_path / "raw"), "--num-labeled", "11")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "raw" / "Dataset218_AMOS"
    (split,) = json.loads((out / "splits_final.json").read_text(encoding="utf-8"))
    assert (len(split["train"]), len(split["unlabeled"]), len(split["val"])) == (11, 205, 24)
    tr = sorted(p.name[:-12] for p in (out / "imagesTr").iterdir())
    ts = sorted(p.name[:-12] for p in (out / "imagesTs").iterdir())
    assert len(tr) == 240
    assert len(ts) == 120
    assert not set(tr) & set(ts)
    assert sorted(split["train"] + split["unlabeled"] + split["val"]) == tr
    labels = json.loads((out / "dataset.json").read_text(encoding="utf-8"))["labels"]
    assert labels["background"] == 0
    assert labels["prostate/uterus"] == 15
    case = ts[0]
    original = int(case.split("_")[1]) - 1
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTs" / f"{case}.nii.gz"))).max() == original % 16


def test_btcv_labels_are_renumbered_to_amos(tmp_path):
    raw = tmp_path / "RawData" / "Training"
    label = np.arange(14, dtype=np.uint8).reshape(1, 2, 7)  # every BTCV label once
    write_nifti(raw / "img" / "img0001.nii.gz", np.zeros((1, 2, 7), np.int16), spacing=(0.8, 0.8, 3.0))
    write_nifti(raw / "label" / "label0001.nii.gz", label, spacing=(0.8, 0.8, 3.0))
    proc = run_example("convert_btcv.py", "-i", str(tmp_path / "RawData"), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    mapped = sitk.ReadImage(str(tmp_path / "out" / "labelsTs" / "btcv_0001.nii.gz"))
    # 0-9 unchanged, 10 (portal/splenic vein) -> 0, 11 pancreas -> 10, 12/13 adrenal glands -> 11/12
    assert sitk.GetArrayFromImage(mapped).ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 10, 11, 12]
    np.testing.assert_allclose(mapped.GetSpacing(), (0.8, 0.8, 3.0), rtol=1e-6)  # NIfTI stores float32
    assert (tmp_path / "out" / "imagesTs" / "btcv_0001_0000.nii.gz").is_file()


def test_mnms_converter_extracts_ed_es_frames_and_leaves_one_vendor_out(tmp_path):
    root = tmp_path / "OpenDataset"
    rows = ["External code,VendorName,Vendor,Centre,ED,ES"]
    codes = {"A1A1A1": "A", "A2A2A2": "A", "B1B1B1": "B", "C1C1C1": "C", "D1D1D1": "D", "D2D2D2": "D"}
    for i, (code, vendor) in enumerate(codes.items()):
        part = root / ("Training/Labeled" if i < 3 else "Validation") / code
        cine = np.zeros((5, 3, 4, 4), np.float32)  # numpy (t, z, y, x): 5 frames
        gt = np.zeros((5, 3, 4, 4), np.uint8)
        for t in range(5):
            cine[t] += t
        gt[1, :, 0, 0], gt[3, :, 0, 0] = 1, 3  # ED = frame 1, ES = frame 3
        for name, arr in ((f"{code}_sa.nii.gz", cine), (f"{code}_sa_gt.nii.gz", gt)):
            image = sitk.GetImageFromArray(arr, isVector=False)
            image.SetSpacing((1.25, 1.25, 10.0, 1.0))
            part.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(part / name))
        rows.append(f"{code},Vendor{vendor},{vendor},1,1,3")
    unlabeled = root / "Training" / "Unlabeled" / "U1U1U1"
    unlabeled.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 3, 4, 4), np.float32), isVector=False),
                    str(unlabeled / "U1U1U1_sa.nii.gz"))
    rows.append("U1U1U1,VendorC,C,1,0,2")
    (tmp_path / "info.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    proc = run_example("convert_mnms.py", "-i", str(root), "--info", str(tmp_path / "info.csv"), "-o",
                       str(tmp_path / "raw"), "--labeled-fraction", "0.5", "--include-unlabeled")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "raw" / "Dataset114_MnMs"
    ed = sitk.ReadImage(str(out / "imagesTr" / "A1A1A1_ED_0000.nii.gz"))
    assert ed.GetDimension() == 3
    np.testing.assert_allclose(ed.GetSpacing(), (1.25, 1.25, 10.0), rtol=1e-6)
    assert float(sitk.GetArrayFromImage(ed).max()) == 1.0  # frame 1
    assert float(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTr" / "A1A1A1_ES_0000.nii.gz"))).max()) == 3
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "A1A1A1_ES.nii.gz"))).max() == 3
    assert sorted(p.name for p in (out / "imagesUnlabeled").iterdir()) == ["U1U1U1_ED_0000.nii.gz",
                                                                        "U1U1U1_ES_0000.nii.gz"]
    splits = json.loads((out / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 4
    fold_a = splits[0]
    assert fold_a["val"] == ["A1A1A1_ED", "A1A1A1_ES", "A2A2A2_ED", "A2A2A2_ES"]
    others = fold_a["train"] + fold_a["unlabeled"]
    assert sorted(others) == sorted(f"{c}_{p}" for c in ("B1B1B1", "C1C1C1", "D1D1D1", "D2D2D2") for p in ("ED", "ES"))
    assert len(fold_a["train"]) == 4  # half of 4 subjects, both frames of each


def test_nih_pancreas_converter_reads_dicom_series_and_puts_labels_on_the_ct_grid(tmp_path):
    """PANCREAS_0001/<study>/<series>/*.dcm written as a CT series by SimpleITK, label0001.nii.gz beside."""
    series_dir = tmp_path / "Pancreas-CT" / "PANCREAS_0001" / "study" / "series"
    series_dir.mkdir(parents=True)
    volume = (np.arange(3 * 4 * 5).reshape(3, 4, 5) - 30).astype(np.int16)  # z, y, x
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.7, 0.7, 1.5))
    image.SetOrigin((-10.0, 5.0, 100.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(3):
        s = image[:, :, z]
        for tag, value in (("0008|0060", "CT"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000d", "1.2.826.0.1.3680043.2.1125.2"), ("0020|0013", str(z + 1)),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z))))),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.7\\0.7"), ("0018|0050", "1.5")):
            s.SetMetaData(tag, value)
        writer.SetFileName(str(series_dir / f"1-{z + 1:03d}.dcm"))
        writer.Execute(s)
    labels = tmp_path / "labels"
    label = np.zeros((3, 4, 5), np.uint8)
    label[1, 2, 3] = 1
    write_nifti(labels / "label0001.nii.gz", label)  # no geometry, as released
    proc = run_example("convert_nih_pancreas.py", "--ct", str(tmp_path / "Pancreas-CT"), "--labels", str(labels),
                       "-o", str(tmp_path / "raw"))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "raw" / "Dataset082_NIHPancreas"
    ct = sitk.ReadImage(str(out / "imagesTr" / "pancreas_0001_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), volume)
    np.testing.assert_allclose(ct.GetSpacing(), (0.7, 0.7, 1.5), atol=1e-4)
    seg = sitk.ReadImage(str(out / "labelsTr" / "pancreas_0001.nii.gz"))
    assert seg.GetOrigin() == ct.GetOrigin()
    assert seg.GetSpacing() == ct.GetSpacing()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(seg), label)
    flipped = run_example("convert_nih_pancreas.py", "--ct", str(tmp_path / "Pancreas-CT"), "--labels", str(labels),
                          "-o", str(tmp_path / "raw2"), "--flip-label-axes", "0")
    assert flipped.returncode == 0, flipped.stderr
    seg2 = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "raw2" / "Dataset082_NIHPancreas" / "labelsTr" /
                                                     "pancreas_0001.nii.gz")))
    assert seg2[1, 2, 3] == 1
    assert seg2.sum() == 1
    bad = labels / "label0001.nii.gz"
    write_nifti(bad, np.zeros((2, 4, 5), np.uint8))
    proc = run_example("convert_nih_pancreas.py", "--ct", str(tmp_path / "Pancreas-CT"), "--labels", str(labels),
                       "-o", str(tmp_path / "raw3"))
    assert proc.returncode == 1
    assert "differ in voxels" in proc.stderr
