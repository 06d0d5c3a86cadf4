"""``nnUNetv2_pick_self_training`` on the real Hippocampus test dataset: teacher, pseudo-labels, derived dataset,
student, as a user runs it (nnU-Net's commands in subprocesses, tiny schedules).

What must hold: pseudo-labels exist exactly for the fold's unlabeled cases (``imagesUnlabeled`` and the split's
``"unlabeled"`` ids) and are the teacher's predictions; labeled and validation cases keep their true labels; the
source raw dataset is byte-for-byte unchanged; the labels of split-``"unlabeled"`` cases are never opened (they are
moved away while the command runs, so any read would fail); the student is a normal nnU-Net model that
``nnUNetv2_predict`` uses; a second run trains nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from helpers import DATASET_ID, DATASET_NAME, base_env, command, run_checked

TRAINER = "nnUNetTrainer_selfTrainingTest"
PICK_TRAINER = "nnUNetTrainerPICK_fineTuneTest"
pytestmark = pytest.mark.slow


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def self_trained(hippocampus, nnunet_dirs, tmp_path_factory):
    ext = tmp_path_factory.mktemp("ext_self_training")
    (ext / "st_trainers").mkdir()
    (ext / "st_trainers" / "__init__.py").write_text("", encoding="utf-8")
    (ext / "st_trainers" / "tiny.py").write_text(textwrap.dedent(f"""
        import torch
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunet_pick import nnUNetTrainerPICK

        class {TRAINER}(nnUNetTrainer):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 2, 2, 1

        class {PICK_TRAINER}(nnUNetTrainerPICK):
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1, 2, 1
                self.num_warmup_epochs = 0
    """), encoding="utf-8")
    env = base_env(nnunet_dirs, nnUNet_n_proc_DA="1", nnUNet_extTrainer=str(ext))
    raw = nnunet_dirs["nnUNet_raw"] / DATASET_NAME
    split = json.loads((hippocampus / "splits_final.json").read_text(encoding="utf-8"))[0]
    before = tree_hashes(raw)
    hidden = tmp_path_factory.mktemp("hidden_labels")
    for case in split["unlabeled"]:  # any attempt to read these labels fails while the command runs
        shutil.move(raw / "labelsTr" / f"{case}.nii.gz", hidden / f"{case}.nii.gz")
    args = [command("nnUNetv2_pick_self_training"), "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "-tr", TRAINER,
            "-tr_student", TRAINER, "-device", "cpu", "--disable_tta", "-np", "1"]
    try:
        first = run_checked(args, env)
        student_folder = next((nnunet_dirs["nnUNet_results"]).glob(f"Dataset*_selftraining_from_{TRAINER}_*"))
        checkpoint = student_folder / f"{TRAINER}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth"
        mtime = checkpoint.stat().st_mtime
        second = run_checked(args, env)
    finally:
        for case in split["unlabeled"]:
            shutil.move(hidden / f"{case}.nii.gz", raw / "labelsTr" / f"{case}.nii.gz")
    derived = student_folder.name
    return {"raw": raw, "split": split, "before": before, "derived": derived, "env": env, "first": first,
            "second": second, "checkpoint": checkpoint, "mtime": mtime,
            "derived_raw": nnunet_dirs["nnUNet_raw"] / derived,
            "derived_pre": nnunet_dirs["nnUNet_preprocessed"] / derived,
            "teacher": nnunet_dirs["nnUNet_results"] / DATASET_NAME / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"}


def test_pseudo_labels_exist_exactly_for_the_unlabeled_cases(self_trained):
    raw, split, derived_raw = self_trained["raw"], self_trained["split"], self_trained["derived_raw"]
    from_folder = {p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesUnlabeled").glob("*_0000.nii.gz")}
    assert split["unlabeled"]
    assert from_folder  # both sources
    unlabeled = set(split["unlabeled"]) | from_folder
    record = json.loads((derived_raw / "pick_self_training.json").read_text(encoding="utf-8"))
    fold = record["folds"]["0"]
    assert fold["pseudo_labeled"] == {f"{c}_pseudo_fold0": c for c in sorted(unlabeled)}
    assert fold["labeled"] == split["train"]
    assert fold["val"] == split["val"]
    assert record["teacher"] == {"trainer": TRAINER, "plans": "nnUNetPlans", "configuration": "2d"}
    labels = {p.name[: -len(".nii.gz")] for p in (derived_raw / "labelsTr").iterdir()}
    assert labels == {*split["train"], *split["val"], *fold["pseudo_labeled"]}
    assert not labels & {*split["unlabeled"]}  # unlabeled cases only appear under their pseudo-label names
    json_ = json.loads((derived_raw / "dataset.json").read_text(encoding="utf-8"))
    assert json_["numTraining"] == len(labels)
    for new_case, case in fold["pseudo_labeled"].items():
        # the label is the teacher's prediction, the image the source's
        pseudo = (derived_raw / "pseudo_labels_fold0" / f"{case}.nii.gz").read_bytes()
        assert (derived_raw / "labelsTr" / f"{new_case}.nii.gz").read_bytes() == pseudo
        source = raw / ("imagesTr" if case in split["unlabeled"] else "imagesUnlabeled") / f"{case}_0000.nii.gz"
        assert (derived_raw / "imagesTr" / f"{new_case}_0000.nii.gz").read_bytes() == source.read_bytes()


def test_labeled_and_validation_cases_keep_their_labels_and_the_source_is_unchanged(self_trained):
    raw, split, derived_raw = self_trained["raw"], self_trained["split"], self_trained["derived_raw"]
    for case in [*split["train"], *split["val"]]:
        assert (derived_raw / "labelsTr" / f"{case}.nii.gz").read_bytes() == \
            (raw / "labelsTr" / f"{case}.nii.gz").read_bytes()
    assert tree_hashes(raw) == self_trained["before"]


def test_student_trains_on_labeled_plus_pseudo_labeled_and_validates_on_the_folds_validation(self_trained):
    split = self_trained["split"]
    splits = json.loads((self_trained["derived_pre"] / "splits_final.json").read_text(encoding="utf-8"))
    record = json.loads((self_trained["derived_raw"] / "pick_self_training.json").read_text(encoding="utf-8"))
    assert splits[0] == {"train": sorted([*split["train"], *record["folds"]["0"]["pseudo_labeled"]]),
                         "val": sorted(split["val"])}
    # same plans as the teacher: nnU-Net's move_plans_between_datasets kept the data identifier and the network
    teacher_plans = json.loads((self_trained["teacher"].parent / "plans.json").read_text(encoding="utf-8"))
    student_plans = json.loads((self_trained["checkpoint"].parent.parent / "plans.json").read_text(encoding="utf-8"))
    assert student_plans["configurations"]["2d"] == teacher_plans["configurations"]["2d"]
    assert student_plans["dataset_name"] == self_trained["derived"]
    summary = json.loads((self_trained["checkpoint"].parent / "validation" / "summary.json").read_text(
        encoding="utf-8"))
    assert sorted(Path(c["prediction_file"]).name[: -len(".nii.gz")] for c in summary["metric_per_case"]) == \
        sorted(split["val"])
    assert (self_trained["teacher"] / "checkpoint_final.pth").is_file()  # the teacher was trained first
    assert "training the teacher" in self_trained["first"].stdout


def test_a_second_run_trains_nothing_and_the_student_predicts_with_nnunet(self_trained, nnunet_dirs, tmp_path):
    assert self_trained["checkpoint"].stat().st_mtime == self_trained["mtime"]
    assert "training the teacher" not in self_trained["second"].stdout
    out = tmp_path / "pred"
    run_checked([command("nnUNetv2_predict"), "-i", str(self_trained["raw"] / "imagesTs"), "-o", str(out),
                 "-d", self_trained["derived"][7:10], "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu",
                 "-npp", "1", "-nps", "1", "--disable_tta"], self_trained["env"])
    assert len(list(out.glob("*.nii.gz"))) == len(list((self_trained["raw"] / "imagesTs").iterdir()))


# ---------------------------------------------------------------- fine-tuning an nnU-Net model with PICK (the teacher)
def test_pick_network_loads_a_plain_nnunet_checkpoint(self_trained, hippocampus):
    """nnU-Net's loader, as run_training calls it, fills a PICK network from an nnUNetTrainer checkpoint: encoder and
    primary decoder equal the checkpoint, the auxiliary decoder is the primary one, the MIM decoder is the primary
    one except its output head (image channels), which keeps its initialisation."""
    import nnunetv2.run.run_training as run_training
    import torch
    from helpers import make_trainer

    from nnunet_pick import nnUNetTrainerPICK

    checkpoint = self_trained["teacher"] / "checkpoint_final.pth"
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    trainer = make_trainer(nnUNetTrainerPICK, hippocampus, "2d")
    trainer.initialize()
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    run_training.load_pretrained_weights(trainer.network, str(checkpoint))
    after = trainer.network.state_dict()
    primary = [k for k in after if k.split(".")[0] in ("encoder", "decoder")]
    assert primary
    assert all(torch.equal(after[k], weights[k]) for k in primary)
    aux = [k for k in after if k.startswith("aux_decoder.")]
    assert all(torch.equal(after[k], weights["decoder." + k.split(".", 1)[1]]) for k in aux)
    mim = [k for k in after if k.startswith("mim_decoder.")]
    head = [k for k in mim if ".seg_layers." in k]
    assert len(head) == 2  # weight and bias of the single full-resolution output conv (1 image channel)
    assert after[head[0]].shape[0] == 1
    assert weights["decoder." + head[0].split(".", 1)[1]].shape[0] == 3
    assert all(torch.equal(after[k], before[k]) for k in head)
    assert all(torch.equal(after[k], weights["decoder." + k.split(".", 1)[1]]) for k in mim if k not in head)
    key = "aux_decoder.stages.0.convs.0.conv.weight"
    assert not torch.equal(before[key], after[key])  # the copy changed something


def test_the_fine_tuning_control_loads_the_segmentation_heads_too(self_trained, hippocampus, capsys):
    """nnUNetTrainer_finetune (the protocol's labeled-only fine-tuning control) gets every tensor of an nnUNetTrainer
    checkpoint, heads included, as PICK's primary decoder does; stock nnUNetTrainer keeps nnU-Net's rule (heads
    re-initialised), which made the control restart its heads while PICK kept them."""
    import nnunetv2.run.run_training as run_training
    import torch
    from helpers import make_trainer
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_pick.training.variants import TRAINERS

    checkpoint = self_trained["teacher"] / "checkpoint_final.pth"
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    loaded = {}
    for cls in (TRAINERS["nnUNetTrainer_finetune"], nnUNetTrainer):
        trainer = make_trainer(cls, hippocampus, "2d")
        trainer.initialize()
        run_training.load_pretrained_weights(trainer.network, str(checkpoint))
        loaded[cls] = trainer.network.state_dict()
    control, stock = loaded[TRAINERS["nnUNetTrainer_finetune"]], loaded[nnUNetTrainer]
    heads = [k for k in weights if ".seg_layers." in k]
    assert heads and set(control) == set(weights)
    assert all(torch.equal(control[k], weights[k]) for k in weights)
    # stock: heads at a fresh initialisation (biases start at 0, so the bias of nnU-Net's lowest deep-supervision
    # head, whose loss weight is 0, is 0 in both; its weights are not)
    assert not any(torch.equal(stock[k], weights[k]) for k in heads if k.endswith(".weight"))
    assert all(torch.equal(stock[k], weights[k]) for k in weights if k not in heads)
    assert f"nnunet-pick: pretrained weights from {checkpoint}" in capsys.readouterr().out


def test_nnunet_pick_fine_tunes_from_pretrained_weights_and_predicts(self_trained, nnunet_dirs, tmp_path):
    env = self_trained["env"]
    checkpoint = self_trained["teacher"] / "checkpoint_final.pth"
    train = run_checked([command("nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", PICK_TRAINER,
                         "-pretrained_weights", str(checkpoint), "-device", "cpu"], env)
    assert f"nnunet-pick: pretrained weights from {checkpoint} ({TRAINER})" in train.stdout
    assert "aux_decoder: " in train.stdout
    assert "tensors initialised from the primary decoder" in train.stdout
    fold = nnunet_dirs["nnUNet_results"] / DATASET_NAME / f"{PICK_TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    out = tmp_path / "pred"
    run_checked([command("nnUNetv2_predict"), "-i", str(self_trained["raw"] / "imagesTs"), "-o", str(out),
                 "-d", str(DATASET_ID), "-c", "2d", "-tr", PICK_TRAINER, "-f", "0", "-device", "cpu", "-npp", "1",
                 "-nps", "1", "--disable_tta"], env)
    assert len(list(out.glob("*.nii.gz"))) == 2
