"""nnU-Net's own recipe for unlabeled data, self-training, as one call: the comparison PICK has to beat.

nnU-Net's maintainers answer "how do I use my unlabeled scans?" with self-training (MIC-DKFZ/nnUNet #2233, #2338):
train on the labeled cases, predict the unlabeled ones, retrain on labeled + pseudo-labeled. For one fold ``F`` of a
dataset this module

1. trains the teacher (labeled-only ``nnUNetTrainer`` by default) with ``nnUNetv2_train`` unless its
   ``checkpoint_final.pth`` exists (a killed run is continued);
2. predicts the fold's unlabeled cases (``imagesUnlabeled`` and the fold's ``"unlabeled"`` ids of
   ``splits_final.json``, as :mod:`nnunet_pick.unlabeled.pool` defines them) with nnU-Net's predictor
   (``nnUNetPredictor``) from the teacher's ``checkpoint_final.pth`` -- never ``checkpoint_best`` --;
3. assembles a derived raw dataset ``DatasetYYY_<Name>_selftraining_from_<teacher>_<plans>_<configuration>`` in
   ``nnUNet_raw``: the fold's labeled and validation cases (images and their true labels, hard-linked or copied
   from the source), and every unlabeled case as ``<case>_pseudo_fold<F>`` with the teacher's prediction as its
   label. ``splits_final.json`` of the derived dataset gives fold ``F`` the labeled + pseudo-labeled cases for
   training and the source fold's validation cases for validation, so fold numbers keep their meaning;
4. moves the source's plans to it with nnU-Net's ``move_plans_between_datasets`` (same normalisation, patch and
   network as the teacher) and preprocesses it with ``nnUNetv2_preprocess``;
5. trains the student (stock ``nnUNetTrainer``) on the derived dataset's fold ``F``.

The source dataset is only read: the labels of its split-``"unlabeled"`` cases are never opened, its files are never
written. The student is an ordinary nnU-Net model in nnU-Net's results layout, so ``nnUNetv2_predict -d YYY``,
``nnUNetv2_pick_evaluate`` and ``nnUNetv2_pick_report`` work on it as on any trainer. ``pick_self_training.json``
in the derived raw folder records the source, the teacher and, per fold, which case came from where.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from os.path import basename, isdir, isfile, join

from nnunet_pick.console import print_text
from nnunet_pick.unlabeled.pool import list_raw_unlabeled_cases, raw_unlabeled_folder, unlabeled_ids_from_split

RECORD = "pick_self_training.json"
PSEUDO_SUFFIX = "_pseudo_fold{fold}"
DERIVED_IDS = range(500, 1000)  # where a new derived dataset's id is looked for (first free one)

#: ``train(dataset_name, fold, trainer)`` brings that fold to checkpoint_final + validation (see fold_runs.train_fold)
TrainFunction = Callable[[str, int, str], None]


@dataclass(frozen=True)
class Teacher:
    """The model whose predictions become pseudo-labels."""

    trainer: str
    plans: str
    configuration: str

    def tag(self) -> str:
        return f"{self.trainer}_{self.plans}_{self.configuration}"


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json_atomic(obj, path: str) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (a kill leaves the old or the new file)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def fold_split(preprocessed_dataset_folder: str, fold: int) -> dict:
    """Fold ``fold`` of ``splits_final.json``.

    Raises:
        FileNotFoundError / IndexError: if the file or the fold is missing (nnU-Net writes the file when the first
            fold trains; the teacher's training does that).
    """
    path = join(preprocessed_dataset_folder, "splits_final.json")
    if not isfile(path):
        raise FileNotFoundError(f"{path} does not exist; train the teacher first or write the splits.")
    splits = read_json(path)
    if not 0 <= fold < len(splits):
        raise IndexError(f"{path} has {len(splits)} folds; fold {fold} does not exist.")
    return splits[fold]


def training_images(raw_dataset_folder: str, dataset_json: dict) -> dict[str, list[str]]:
    """Case id -> image files of ``imagesTr`` (nnU-Net's ``get_filenames_of_train_images_and_targets``; label files
    are named, never opened)."""
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    if "dataset" in dataset_json:
        raise NotImplementedError(
            f"{join(raw_dataset_folder, 'dataset.json')} lists its files under 'dataset'; self-training supports the "
            f"standard imagesTr / labelsTr layout only.")
    found = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    return {case: list(v["images"]) for case, v in found.items()}


def unlabeled_images(raw_dataset_folder: str, dataset_json: dict, split: dict, fold: int) -> dict[str, list[str]]:
    """Case id -> image files of every unlabeled case of the fold: ``imagesUnlabeled`` and the split's
    ``"unlabeled"`` ids (images from ``imagesTr``; their labels are not touched).

    Raises:
        ValueError: if a split id is also labeled or validation data of the fold, is not a case of ``imagesTr``,
            or a case id exists in both sources.
    """
    from nnunet_pick.unlabeled.pool import check_ids_exist

    from_split = unlabeled_ids_from_split(split, fold)
    train_images = training_images(raw_dataset_folder, dataset_json) if from_split else {}
    check_ids_exist(from_split, list(train_images), where=f"'unlabeled' ids of fold {fold} vs imagesTr of "
                    f"{raw_dataset_folder}", fix="List only cases of imagesTr under 'unlabeled'.")
    pool = {case: train_images[case] for case in from_split}
    extra = list_raw_unlabeled_cases(raw_unlabeled_folder(raw_dataset_folder), dataset_json["file_ending"])
    clashes = sorted(set(pool) & set(extra))
    if clashes:
        raise ValueError(f"Case ids {clashes} are split-'unlabeled' cases of imagesTr and cases of imagesUnlabeled "
                         f"in {raw_dataset_folder}; rename the imagesUnlabeled files.")
    pool.update(extra)
    return dict(sorted(pool.items()))


def check_no_evaluation_leak(split: dict, unlabeled: dict, fold: int) -> None:
    """Refuse if a validation case of the fold is also labeled, unlabeled or (hence) pseudo-labeled data.

    Raises:
        ValueError: naming the cases.
    """
    val = set(split.get("val", []))
    leaks = {"train": sorted(val & set(split.get("train", []))), "unlabeled": sorted(val & set(unlabeled))}
    leaks = {k: v for k, v in leaks.items() if v}
    if leaks:
        raise ValueError(f"fold {fold}: validation cases are also training data: {leaks}. Evaluation cases must "
                         f"never be trained on; fix splits_final.json or imagesUnlabeled.")


def _dataset_names(*roots: str) -> dict[int, str]:
    names = {}
    for root in roots:
        if root and isdir(root):
            for name in os.listdir(root):
                if name.startswith("Dataset") and name[7:10].isdigit():
                    names.setdefault(int(name[7:10]), name)
    return names


def derived_dataset_name(source_dataset: str, teacher: Teacher, requested_id: int | None = None) -> str:
    """The derived raw dataset for (source, teacher), created if needed: an existing one whose record matches,
    else ``requested_id`` or the first id of :data:`DERIVED_IDS` free in ``nnUNet_raw``, ``nnUNet_preprocessed``
    and ``nnUNet_results``. A new one gets its folder and record at once, so a later call finds it again even if
    nothing else was written.

    Raises:
        ValueError: if ``requested_id`` is taken by another dataset, or no id is free.
    """
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results

    raw = str(nnUNet_raw)
    taken = _dataset_names(raw, nnUNet_preprocessed.get(), nnUNet_results.get())
    wanted = {"source_dataset": source_dataset, "teacher": teacher.__dict__}
    for dataset_id, name in sorted(taken.items()):
        record = join(raw, name, RECORD)
        if isfile(record) and {k: read_json(record).get(k) for k in wanted} == wanted:
            if requested_id is not None and requested_id != dataset_id:
                raise ValueError(f"{name} already holds self-training data of this source and teacher; use "
                                 f"--derived-id {dataset_id} or remove it.")
            return name
    suffix = f"{source_dataset[len('DatasetXXX_'):]}_selftraining_from_{teacher.tag()}"
    if requested_id is not None:
        if requested_id in taken:
            raise ValueError(f"Dataset id {requested_id} is taken by {taken[requested_id]}; choose another.")
        free = requested_id
    else:
        free = next((i for i in DERIVED_IDS if i not in taken), None)
        if free is None:
            raise ValueError(f"No free dataset id in {DERIVED_IDS.start}-{DERIVED_IDS.stop - 1}; pass one explicitly.")
    name = f"Dataset{free:03d}_{suffix}"
    os.makedirs(join(raw, name), exist_ok=True)
    write_json_atomic({**wanted, "folds": {}}, join(raw, name, RECORD))
    return name


def predict_pseudo_labels(teacher_model_folder: str, fold: int, images: dict[str, list[str]], output_folder: str,
                          file_ending: str, *, device: str = "cuda", use_mirroring: bool = True,
                          num_processes_preprocessing: int = 2, num_processes_export: int = 2) -> dict[str, str]:
    """Segment ``images`` with the teacher's ``fold_<fold>/checkpoint_final.pth`` through nnU-Net's
    ``nnUNetPredictor`` (sliding window, Gaussian weighting, optional mirroring TTA: nnU-Net's defaults).

    Predictions go to ``<output_folder>.incomplete`` and the folder is renamed to ``output_folder`` when all are
    written, so a killed prediction is redone rather than leaving truncated files that look finished.

    Returns:
        Case id -> pseudo-label file (``<output_folder>/<case><file_ending>``, the dataset's label format).

    Raises:
        FileNotFoundError: if the teacher's final checkpoint is missing.
    """
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    files = {case: join(output_folder, case + file_ending) for case in images}
    if isdir(output_folder) and all(isfile(f) for f in files.values()):
        return files
    checkpoint = join(teacher_model_folder, f"fold_{fold}", "checkpoint_final.pth")
    if not isfile(checkpoint):
        raise FileNotFoundError(f"{checkpoint} does not exist: the teacher has not finished training.")
    partial = output_folder + ".incomplete"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(output_folder, ignore_errors=True)
    os.makedirs(partial)
    predictor = nnUNetPredictor(use_mirroring=use_mirroring, device=torch.device(device),
                                perform_everything_on_device=device == "cuda", verbose=False,
                                verbose_preprocessing=False, allow_tqdm=True)
    predictor.initialize_from_trained_model_folder(teacher_model_folder, use_folds=(fold,),
                                                   checkpoint_name="checkpoint_final.pth")
    cases = sorted(images)
    predictor.predict_from_files([images[c] for c in cases], [join(partial, c) for c in cases],
                                 save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=num_processes_preprocessing,
                                 num_processes_segmentation_export=num_processes_export)
    missing = [c for c in cases if not isfile(join(partial, c + file_ending))]
    if missing:
        raise RuntimeError(f"nnU-Net's predictor wrote no prediction for {missing[:10]} in {partial}.")
    os.replace(partial, output_folder)
    return files


def _place(source: str, target: str) -> None:
    """Hard-link ``source`` to ``target`` (copy through a temporary name where linking is impossible); a target
    that exists already is kept (files are placed once and never changed)."""
    if isfile(target):
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target + ".tmp")
        os.replace(target + ".tmp", target)


def _renamed(image_file: str, case: str, new_case: str) -> str:
    """``<case>_0000.nii.gz`` -> ``<new_case>_0000.nii.gz`` (channel suffix and file ending kept)."""
    return new_case + basename(image_file)[len(case):]


def assemble_derived_dataset(source_raw: str, derived_raw: str, source_dataset: str, teacher: Teacher, fold: int,
                             split: dict, unlabeled: dict[str, list[str]], pseudo_labels: dict[str, str],
                             dataset_json: dict) -> dict:
    """Write (or complete) the derived raw dataset for one fold; returns that fold's record.

    Labeled and validation cases keep their ids and their true labels; unlabeled case ``c`` becomes
    ``c_pseudo_fold<fold>`` with ``pseudo_labels[c]`` as label. ``dataset.json`` is the source's with
    ``numTraining`` recounted. Nothing in ``source_raw`` is written.
    """
    ending = dataset_json["file_ending"]
    train_images = training_images(source_raw, dataset_json)
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(join(derived_raw, sub), exist_ok=True)
    for case in [*split["train"], *split["val"]]:
        for image in train_images[case]:
            _place(image, join(derived_raw, "imagesTr", basename(image)))
        _place(join(source_raw, "labelsTr", case + ending), join(derived_raw, "labelsTr", case + ending))
    pseudo = {}
    for case, images in unlabeled.items():
        new_case = case + PSEUDO_SUFFIX.format(fold=fold)
        for image in images:
            _place(image, join(derived_raw, "imagesTr", _renamed(image, case, new_case)))
        _place(pseudo_labels[case], join(derived_raw, "labelsTr", new_case + ending))
        pseudo[new_case] = case
    record_path = join(derived_raw, RECORD)
    record = read_json(record_path)
    record["folds"][str(fold)] = {"labeled": list(split["train"]), "val": list(split["val"]),
                                  "pseudo_labeled": pseudo}
    cases = {f[: -len(ending)] for f in os.listdir(join(derived_raw, "labelsTr")) if f.endswith(ending)}
    derived_json = {**dataset_json, "numTraining": len(cases),
                    "name": basename(derived_raw)[len("DatasetXXX_"):],
                    "description": f"nnU-Net self-training data derived from {source_dataset}: labeled and validation "
                                   f"cases with their labels, unlabeled cases with pseudo-labels of "
                                   f"{teacher.trainer} ({teacher.plans}, {teacher.configuration}); see {RECORD}."}
    write_json_atomic(derived_json, join(derived_raw, "dataset.json"))
    write_json_atomic(record, record_path)
    return record["folds"][str(fold)]


def write_derived_splits(derived_preprocessed: str, record: dict) -> None:
    """``splits_final.json`` of the derived dataset: fold F = labeled + pseudo-labeled of fold F for training, the
    source fold's validation cases for validation. Folds not built yet get empty lists (training them fails in
    nnU-Net; build them with this recipe first)."""
    folds = {int(k): v for k, v in record["folds"].items()}
    splits = [{"train": [], "val": []} for _ in range(max(folds) + 1)]
    for fold, entry in folds.items():
        splits[fold] = {"train": sorted([*entry["labeled"], *entry["pseudo_labeled"]]), "val": sorted(entry["val"])}
    os.makedirs(derived_preprocessed, exist_ok=True)
    write_json_atomic(splits, join(derived_preprocessed, "splits_final.json"))


def prepare_derived_preprocessing(source_dataset: str, derived_dataset: str, plans: str, configuration: str,
                                  env: dict[str, str], log: str, num_processes: int = 2) -> None:
    """Move the source's plans to the derived dataset (nnU-Net's ``move_plans_between_datasets``, same plans
    identifier) and preprocess it with ``nnUNetv2_preprocess`` -- skipped when the cases preprocessed last time
    are the derived ``labelsTr`` cases of now (recorded in ``pick_self_training_preprocessed.json``)."""
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    from nnunet_pick.subprocesses import installed_command, run_logged

    derived_pre = join(str(nnUNet_preprocessed), derived_dataset)
    os.makedirs(derived_pre, exist_ok=True)
    # nnU-Net's experiment planner puts dataset.json there and its trainer copies dataset_fingerprint.json into
    # the results; moved plans skip planning, so copy both (the fingerprint is the source's: its intensity
    # statistics are the ones the moved plans normalise with)
    shutil.copyfile(join(str(nnUNet_raw), derived_dataset, "dataset.json"), join(derived_pre, "dataset.json"))
    shutil.copyfile(join(str(nnUNet_preprocessed), source_dataset, "dataset_fingerprint.json"),
                    join(derived_pre, "dataset_fingerprint.json"))
    move_plans_between_datasets(source_dataset, derived_dataset, plans, plans)
    labels = sorted(os.listdir(join(str(nnUNet_raw), derived_dataset, "labelsTr")))
    stamp = join(derived_pre, "pick_self_training_preprocessed.json")
    done = read_json(stamp) if isfile(stamp) else {}
    if done.get(configuration) == labels:
        return
    done.pop(configuration, None)
    write_json_atomic(done, stamp)
    run_logged([installed_command("nnUNetv2_preprocess"), "-d", derived_dataset[7:10], "-plans_name", plans,
                "-c", configuration, "-np", str(num_processes)], env, log)
    done[configuration] = labels
    write_json_atomic(done, stamp)


def run_self_training(source_dataset: str, configuration: str, fold: int, *, teacher: Teacher,
                      student_trainer: str, train: TrainFunction, env: dict[str, str], log: str,
                      device: str = "cuda", use_mirroring: bool = True, derived_id: int | None = None,
                      num_processes: int = 2, forbidden_cases: set[str] | None = None) -> str:
    """nnU-Net's self-training recipe for one fold (steps 1-5 of the module docstring); resumes after a kill.

    Args:
        source_dataset: ``DatasetXXX_Name`` in ``nnUNet_raw`` / ``nnUNet_preprocessed``.
        configuration: the teacher's and the student's configuration (``teacher.configuration``).
        fold: fold of the source's ``splits_final.json``.
        teacher: trainer, plans and configuration of the teacher.
        student_trainer: the student's trainer (stock ``nnUNetTrainer`` for nnU-Net's recipe).
        train: ``train(dataset_name, fold, trainer)`` trains a fold to completion (teacher and student).
        env: environment for nnU-Net's subprocesses.
        log: log file of the subprocesses.
        device: ``cuda`` or ``cpu`` for the prediction.
        use_mirroring: mirroring test-time augmentation for the pseudo-labels (nnU-Net's default: on).
        derived_id: id for a new derived dataset (default: the first free one >= 500).
        num_processes: processes for nnU-Net's preprocessing and export.
        forbidden_cases: evaluation cases of a benchmark; refused if any of them is labeled, unlabeled or
            pseudo-labeled training data of the student.

    Returns:
        The derived dataset's name; the student is
        ``nnUNet_results/<derived>/<student_trainer>__<plans>__<configuration>/fold_<fold>``.

    Raises:
        ValueError: for evaluation cases in training data, unusable splits, taken dataset ids.
        RuntimeError: if an nnU-Net command fails.
    """
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results

    from nnunet_pick.fold_runs import model_folder

    source_raw = join(str(nnUNet_raw), source_dataset)
    dataset_json = read_json(join(source_raw, "dataset.json"))
    teacher_folder = model_folder(str(nnUNet_results), source_dataset, teacher.trainer, teacher.plans,
                                  teacher.configuration)
    if not isfile(join(teacher_folder, f"fold_{fold}", "checkpoint_final.pth")):
        print_text(f"[self-training] training the teacher {teacher.trainer} on {source_dataset} fold {fold}")
    train(source_dataset, fold, teacher.trainer)
    split = fold_split(join(str(nnUNet_preprocessed), source_dataset), fold)
    unlabeled = unlabeled_images(source_raw, dataset_json, split, fold)
    if not unlabeled:
        raise ValueError(f"{source_dataset} fold {fold} has no unlabeled cases (imagesUnlabeled is empty and the "
                         f"fold has no 'unlabeled' ids): there is nothing to pseudo-label.")
    check_no_evaluation_leak(split, unlabeled, fold)
    if forbidden_cases:
        used = sorted(set(forbidden_cases) & {*split["train"], *unlabeled})
        if used:
            raise ValueError(f"fold {fold}: evaluation cases {used} are training data of the student; refusing.")
    derived = derived_dataset_name(source_dataset, teacher, derived_id)
    derived_raw = join(str(nnUNet_raw), derived)
    pseudo_folder = join(derived_raw, f"pseudo_labels_fold{fold}")
    print_text(f"[self-training] predicting {len(unlabeled)} unlabeled cases with the teacher -> {pseudo_folder}")
    pseudo = predict_pseudo_labels(teacher_folder, fold, unlabeled, pseudo_folder, dataset_json["file_ending"],
                                   device=device, use_mirroring=use_mirroring,
                                   num_processes_preprocessing=num_processes, num_processes_export=num_processes)
    record = assemble_derived_dataset(source_raw, derived_raw, source_dataset, teacher, fold, split, unlabeled,
                                      pseudo, dataset_json)
    write_derived_splits(join(str(nnUNet_preprocessed), derived), read_json(join(derived_raw, RECORD)))
    print_text(f"[self-training] {derived}: {len(record['labeled'])} labeled + {len(record['pseudo_labeled'])} "
               f"pseudo-labeled training cases, {len(record['val'])} validation cases; preprocessing")
    prepare_derived_preprocessing(source_dataset, derived, teacher.plans, configuration, env, log, num_processes)
    print_text(f"[self-training] training the student {student_trainer} on {derived} fold {fold}")
    train(derived, fold, student_trainer)
    return derived
