"""The accuracy protocol's driver on real Hippocampus cases (tiny schedule, one repeat): killed with SIGKILL while PICK
trains, then run again, it resumes without retraining what finished and writes the report and the curves."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import ALL_IDS, base_env

from nnunet_pick.demo_data import HIPPOCAMPUS

pytestmark = pytest.mark.slow
DATASET = "Dataset993_PICKProtocolTest"
CASES = ALL_IDS[18:26]
TEST_CASES = CASES[:2]


@pytest.fixture(scope="module")
def protocol_dataset(nnunet_dirs):
    raw = nnunet_dirs["nnUNet_raw"] / DATASET
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for case in CASES:
        shutil.copy(HIPPOCAMPUS / "imagesTr" / f"{case}_0000.nii.gz", raw / "imagesTr")
        shutil.copy(HIPPOCAMPUS / "labelsTr" / f"{case}.nii.gz", raw / "labelsTr")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
        "numTraining": len(CASES), "file_ending": ".nii.gz"}), encoding="utf-8")
    return raw


SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    from nnunet_pick.benchmark.protocol import PROTOCOLS, run_protocol

    if __name__ == "__main__":
        protocol = dataclasses.replace(
            PROTOCOLS["hippocampus-cpu"], test_case_ids={test!r}, num_labeled=2, repeats=1, seed={seed},
            schedule={{"num_epochs": 2, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1,
                      "save_every": 1}},
            finetune_schedule={{"num_epochs": 1, "num_iterations_per_epoch": 2, "num_val_iterations_per_epoch": 1,
                               "save_every": 1, "initial_lr": 1e-3}})
        print(run_protocol("993", "tiny", protocol=protocol, output=sys.argv[1], finetune_trainers={ft!r}))
""")


def test_protocol_resumes_after_a_kill_and_reports(protocol_dataset, nnunet_dirs, tmp_path):
    script = tmp_path / "tiny_protocol.py"
    script.write_text(SCRIPT.format(test=tuple(TEST_CASES), seed=11, ft=[]), encoding="utf-8")
    out = tmp_path / "protocol"
    env = base_env(nnunet_dirs, nnUNet_n_proc_DA="1")
    pick_log = out / "logs" / f"{DATASET}_fold0_nnUNetTrainerPICK.log"
    with open(tmp_path / "first.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(out)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 900
        while not pick_log.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # PICK is starting up or training
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = (tmp_path / "first.log").read_text(encoding="utf-8")
    assert pick_log.is_file(), first[-3000:]
    assert not (out / "report.md").exists()
    timings = json.loads((out / "runs.json").read_text(encoding="utf-8"))
    labeled_only_key = f"{DATASET}/nnUNetTrainer/fold_0"
    assert list(timings) == [labeled_only_key]  # only the labeled-only run finished before the kill
    results = out / "results" / DATASET
    lo_checkpoint = results / "nnUNetTrainer__nnUNetPlansPICKBench__2d" / "fold_0" / "checkpoint_final.pth"
    lo_mtime = lo_checkpoint.stat().st_mtime

    # the rerun adds a fine-tuning arm, which starts from the labeled-only run's final checkpoint
    script.write_text(SCRIPT.format(test=tuple(TEST_CASES), seed=11, ft=["nnUNetTrainerPICK_finetune"]),
                      encoding="utf-8")
    second = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True,
                            encoding="utf-8", errors="replace", timeout=1800)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert f"{DATASET} fold 0 nnUNetTrainer: train" not in second.stdout  # not retrained
    assert lo_checkpoint.stat().st_mtime == lo_mtime
    timings = json.loads((out / "runs.json").read_text(encoding="utf-8"))
    derived = next(nnunet_dirs["nnUNet_raw"].glob("Dataset*_PICKProtocolTest_selftraining_from_*"))
    assert set(timings) == {labeled_only_key, f"{DATASET}/nnUNetTrainerPICK/fold_0", "self-training/fold_0",
                            f"{derived.name}/nnUNetTrainer/fold_0", f"{DATASET}/nnUNetTrainer/fold_1",
                            f"{DATASET}/nnUNetTrainerPICK_finetune/fold_0"}
    finetune_log = (out / "logs" / f"{DATASET}_fold0_nnUNetTrainerPICK_finetune.log").read_text(encoding="utf-8")
    assert f"pretrained weights from {lo_checkpoint}" in finetune_log
    assert "'initial_lr': 0.001, 'num_epochs': 1" in finetune_log  # the fine-tuning schedule, not the protocol's
    ft_curve = json.loads((out / "curves" / f"{DATASET}_nnUNetTrainerPICK_finetune_fold0.json").read_text(
        encoding="utf-8"))
    assert ft_curve["iterations"] == [2]  # one epoch of 2 iterations (drawn after the labeled-only run's 4)
    report = (out / "report.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[0].lstrip("| ") for line in report.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["labeled-only", "nnUNetTrainerPICK", "nnUNetTrainerPICK_finetune from labeled-only",
                        "self-training", "fully supervised"]
    assert f"repeat 0: labeled {json.loads((nnunet_dirs['nnUNet_preprocessed'] / DATASET / 'splits_final.json').read_text(encoding='utf-8'))[0]['train']}" in report  # noqa: E501
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "curves").glob("*.json"))) == 5
    # hygiene: the test cases are no arm's training data, in particular not pseudo-labeled
    splits = json.loads((nnunet_dirs["nnUNet_preprocessed"] / DATASET / "splits_final.json").read_text(
        encoding="utf-8"))
    assert [s["val"] for s in splits] == [sorted(TEST_CASES)] * 2
    record = json.loads((derived / "pick_self_training.json").read_text(encoding="utf-8"))
    assert not set(record["folds"]["0"]["pseudo_labeled"].values()) & set(TEST_CASES)
    assert sorted(record["folds"]["0"]["pseudo_labeled"].values()) == splits[0]["unlabeled"]

    # another protocol (seed) on the same preprocessed dataset is refused, nothing overwritten
    script.write_text(SCRIPT.format(test=tuple(TEST_CASES), seed=12, ft=[]), encoding="utf-8")
    third = subprocess.run([sys.executable, str(script), str(tmp_path / "other")], env=env, capture_output=True,
                           encoding="utf-8", errors="replace", timeout=600)
    assert third.returncode != 0
    assert "is not this protocol's split" in third.stderr
    assert json.loads((nnunet_dirs["nnUNet_preprocessed"] / DATASET / "splits_final.json").read_text(
        encoding="utf-8")) == splits


def test_protocol_refuses_test_cases_the_dataset_lacks(protocol_dataset, nnunet_dirs, tmp_path, monkeypatch):
    from nnunet_pick.benchmark.protocol import PROTOCOLS, run_protocol

    for k, v in base_env(nnunet_dirs).items():
        monkeypatch.setenv(k, v)
    protocol = dataclasses.replace(PROTOCOLS["hippocampus-cpu"], test_case_ids=("hippocampus_999",))
    with pytest.raises(ValueError, match=r"lacks the protocol's test cases \['hippocampus_999'\]"):
        run_protocol("993", "x", protocol=protocol, output=str(tmp_path))
