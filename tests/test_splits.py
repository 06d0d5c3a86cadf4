"""Label-fraction splits: counts, rounding, disjointness, reproducibility, the fixed LA-style protocol, the CLI."""

from __future__ import annotations

import json
import shutil

import pytest
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_pick.cli.make_splits import main as make_splits
from nnunet_pick.demo_data import HIPPOCAMPUS
from nnunet_pick.splits import fixed_split, kfold_splits, labeled_count

IDS = [f"case_{i:03d}" for i in range(100)]


def test_labeled_count_rounds_half_up_and_checks_range():
    assert labeled_count(80, fraction=0.1) == 8
    assert labeled_count(80, fraction=0.2) == 16
    assert labeled_count(45, fraction=0.1) == 5  # 4.5 -> 5 (half up)
    assert labeled_count(3, fraction=0.01) == 1  # at least one
    assert labeled_count(10, number=4) == 4
    with pytest.raises(ValueError, match="exactly one"):
        labeled_count(10)
    with pytest.raises(ValueError, match="training part has 10"):
        labeled_count(10, number=11)


def test_kfold_splits_partition_every_fold_and_match_nnunets_folds():
    splits = kfold_splits(IDS, 5, fraction=0.1)
    reference = generate_crossval_split(sorted(IDS), seed=12345, n_splits=5)
    vals = []
    for fold, ref in zip(splits, reference, strict=True):
        assert sorted(fold["val"]) == sorted(ref["val"])  # nnU-Net's own 5 folds
        assert len(fold["train"]) == 8
        assert len(fold["unlabeled"]) == 72
        parts = fold["train"] + fold["unlabeled"] + fold["val"]
        assert sorted(parts) == IDS  # disjoint and complete
        vals += fold["val"]
    assert sorted(vals) == IDS
    assert kfold_splits(IDS, 5, fraction=0.1) == splits  # reproducible
    assert kfold_splits(IDS, 5, fraction=0.1, seed=1) != splits


def test_fixed_split_takes_the_first_ids_of_the_training_list():
    train = [f"t{i}" for i in range(80)][::-1]  # order matters, not sorting
    test = [f"s{i}" for i in range(20)]
    (split,) = fixed_split(train, test, number=8)
    assert split["train"] == train[:8]
    assert split["unlabeled"] == train[8:]
    assert split["val"] == sorted(test)
    with pytest.raises(ValueError, match="both the training list and the test ids"):
        fixed_split(train, [train[0]], number=8)


@pytest.fixture
def raw_dataset(tmp_path, monkeypatch):
    raw = tmp_path / "raw" / "Dataset994_Splits"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    cases = sorted(p.name[: -len(".nii.gz")] for p in (HIPPOCAMPUS / "labelsTr").glob("*.nii.gz"))[:20]
    for c in cases:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{c}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{c}.nii.gz", raw / "labelsTr")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1,
                                                  "b": 2}, "numTraining": 20, "file_ending": ".nii.gz"}))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    return tmp_path, cases


def test_cli_writes_kfold_splits_and_refuses_to_overwrite(raw_dataset, capsys):
    tmp, cases = raw_dataset
    assert make_splits(["-d", "994", "--labeled-fraction", "0.25", "--folds", "4"]) == 0
    splits = json.loads((tmp / "pre" / "Dataset994_Splits" / "splits_final.json").read_text(encoding="utf-8"))
    assert [len(s["train"]) for s in splits] == [4, 4, 4, 4]  # 25 % of 15 = 3.75 -> 4
    assert [len(s["unlabeled"]) for s in splits] == [11, 11, 11, 11]
    assert "fold  labeled  unlabeled  val" in capsys.readouterr().out
    assert make_splits(["-d", "994", "--num-labeled", "2"]) == 1
    assert "pass --force" in capsys.readouterr().err
    assert json.loads((tmp / "pre" / "Dataset994_Splits" / "splits_final.json").read_text(encoding="utf-8")) == splits
    assert make_splits(["-d", "994", "--num-labeled", "2", "--force"]) == 0


def test_cli_fixed_split_from_id_files(raw_dataset):
    tmp, cases = raw_dataset
    (tmp / "train.list").write_text("\n".join(cases[:16]) + "\n", encoding="utf-8")
    (tmp / "test.list").write_text("\n".join(cases[16:]) + "\n", encoding="utf-8")
    assert make_splits(["-d", "994", "--num-labeled", "4", "--labeled-ids", str(tmp / "train.list"),
                        "--test-ids", str(tmp / "test.list")]) == 0
    (split,) = json.loads((tmp / "pre" / "Dataset994_Splits" / "splits_final.json").read_text(encoding="utf-8"))
    assert split == {"train": cases[:4], "val": cases[16:], "unlabeled": cases[4:16]}
    (tmp / "test.list").write_text("not_a_case\n", encoding="utf-8")
    assert make_splits(["-d", "994", "--num-labeled", "4", "--test-ids", str(tmp / "test.list"), "--force"]) == 1
