"""Promote corrected unlabeled cases to labeled training data (``nnUNetv2_pick_promote``).

For each case: its image files move from ``imagesUnlabeled`` to ``imagesTr``, its corrected label is copied into
``labelsTr``, ``numTraining`` of ``dataset.json`` grows, the case is added to ``"train"`` of every fold of
``splits_final.json`` (never ``"val"``) and its preprocessed ``imagesUnlabeled`` files (``<data_identifier>_unlabeled``
folders) are deleted, so the PICK trainer no longer draws it as unlabeled data.

**Everything is checked first** and the command refuses with one message listing every problem, before any file is
touched: the case is in ``imagesUnlabeled`` with all channels; no file or split entry of that id exists in
``imagesTr`` / ``labelsTr`` / ``splits_final.json``; the label file is present and readable and passes nnU-Net's own
dataset checks (``nnunetv2.experiment_planning.verify_dataset_integrity.check_cases``: shape, spacing, NaN; its
origin / direction / affine warnings count as errors here) and only has declared label values (``verify_labels``).
Nothing is overwritten.

**Crash safety.** The planned operations are first written to a journal (``.pick_promote_journal.json`` in the raw
dataset folder, written to a temporary name and renamed). Every operation is idempotent (copy a label only if it is
not there, move a file only if it is still at its source, rewrite a JSON to its target content by rename), and the
next ``nnUNetv2_pick_promote`` finishes a journal it finds before anything else. Each image file is renamed, which is
atomic: a kill at any point leaves every file in exactly one of ``imagesUnlabeled`` / ``imagesTr``, and a re-run
completes the promotion.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
from dataclasses import asdict, dataclass, field
from os.path import basename, isdir, isfile, join

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from nnunet_pick.unlabeled.pool import (
    PREPROCESSED_SUFFIX,
    RAW_UNLABELED_FOLDER,
    list_raw_unlabeled_cases,
)

JOURNAL = ".pick_promote_journal.json"
#: written in this order per case: the .pkl marks a preprocessed case complete, so it goes first
PREPROCESSED_FILES = (".pkl", ".b2nd", "_seg.b2nd")


def _hook(step: str) -> None:
    """Called after each step of a promotion (``labels``, ``stale``, ``move:<file>``, ``dataset_json``,
    ``splits``). Does nothing; tests replace it to kill the process at that point."""


class PromotionRefusedError(ValueError):
    """Raised with every problem found; nothing was changed."""


@dataclass
class PromotionPlan:
    """The operations of one promotion, as stored in the journal (all paths absolute)."""

    cases: list[str]
    labels: list[tuple[str, str]] = field(default_factory=list)  # corrected label -> labelsTr
    moves: list[tuple[str, str]] = field(default_factory=list)  # imagesUnlabeled file -> imagesTr
    stale: list[str] = field(default_factory=list)  # preprocessed imagesUnlabeled files to delete
    num_training: int = 0  # numTraining afterwards
    dataset_json_files: list[str] = field(default_factory=list)
    splits_files: list[str] = field(default_factory=list)


def _write_json_atomic(obj, path: str) -> None:
    tmp = join(os.path.dirname(path), "." + basename(path) + ".partial")
    save_json(obj, tmp, sort_keys=False)
    os.replace(tmp, path)


def _captured(fn, *args) -> tuple[object, str]:
    """Run one of nnU-Net's checks that print their findings; return (result, printed text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    return result, buffer.getvalue().strip()


def _label_problems(case: str, image_files: list[str], label_file: str, dataset_json: dict) -> list[str]:
    """nnU-Net's dataset-integrity checks of one image/label pair, as messages (empty: fine)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import check_cases, verify_labels
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    try:
        reader = determine_reader_writer_from_dataset_json(dataset_json, image_files[0])
        ok, text = _captured(check_cases, image_files, label_file, len(dataset_json["channel_names"]), reader)
        labels = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
        expected = list(labels.all_labels) + ([labels.ignore_label] if labels.has_ignore_label else [])
        ok_values, values_text = _captured(verify_labels, label_file, reader, expected)
    except Exception as e:  # noqa: BLE001 (any reader error means the file cannot be used; the message says which)
        return [f"{case}: cannot read {label_file} with the dataset's reader ({type(e).__name__}: {e})"]
    problems = []
    if not ok or "mismatch" in text:
        problems.append(f"{case}: label {label_file} does not match the image's geometry: " + " ".join(text.split()))
    if not ok_values:
        problems.append(f"{case}: label {label_file} has undeclared label values: " + " ".join(values_text.split()))
    return problems


def _splits_files(raw_dataset_folder: str, preprocessed_dataset_folder: str | None) -> list[str]:
    """Every ``splits_final.json`` nnU-Net reads or copies: the raw one (copied by planning) and the preprocessed."""
    files = [join(raw_dataset_folder, "splits_final.json")]
    if preprocessed_dataset_folder:
        files.append(join(preprocessed_dataset_folder, "splits_final.json"))
    return [f for f in files if isfile(f)]


def plan_promotion(raw_dataset_folder: str, preprocessed_dataset_folder: str | None, corrected_folder: str,
                   cases: list[str] | None = None) -> PromotionPlan:
    """Check a promotion and return its operations; changes nothing.

    Args:
        raw_dataset_folder: ``$nnUNet_raw/DatasetXXX_Name``.
        preprocessed_dataset_folder: ``$nnUNet_preprocessed/DatasetXXX_Name`` (None or absent: nothing there).
        corrected_folder: holds ``CASE<file_ending>`` corrected labels.
        cases: ids to promote; None: every label file in ``corrected_folder``.

    Returns:
        The :class:`PromotionPlan`.

    Raises:
        PromotionRefusedError: listing every problem (missing / unreadable / mis-registered label, undeclared label
            values, id not in imagesUnlabeled or missing channels, name clash in imagesTr, labelsTr or the splits,
            a dataset.json with an explicit ``"dataset"`` file list).
    """
    dataset_json_file = join(raw_dataset_folder, "dataset.json")
    if not isfile(dataset_json_file):
        raise PromotionRefusedError(f"{dataset_json_file} not found; -d must name an nnU-Net raw dataset")
    dataset_json = load_json(dataset_json_file)
    ending = dataset_json["file_ending"]
    if "dataset" in dataset_json:
        raise PromotionRefusedError(f"{dataset_json_file} lists its files under 'dataset'; nnUNetv2_pick_promote only "
                               f"handles the imagesTr/labelsTr layout. Add the case to that list by hand.")
    if not isdir(corrected_folder):
        raise PromotionRefusedError(f"corrected-labels folder {corrected_folder} does not exist")
    if cases is None:
        cases = sorted(f[: -len(ending)] for f in os.listdir(corrected_folder)
                       if f.endswith(ending) and not f.startswith("."))
    problems = []
    if not cases:
        problems.append(f"no labels ending in {ending} in {corrected_folder} and no --cases given")
    duplicates = sorted({c for c in cases if cases.count(c) > 1})
    if duplicates:
        problems.append(f"cases named more than once: {duplicates}")
    unlabeled = list_raw_unlabeled_cases(join(raw_dataset_folder, RAW_UNLABELED_FOLDER), ending)
    training = list_raw_unlabeled_cases(join(raw_dataset_folder, "imagesTr"), ending)
    split_ids: dict[str, str] = {}
    splits_files = _splits_files(raw_dataset_folder, preprocessed_dataset_folder)
    for f in splits_files:
        for fold, split in enumerate(load_json(f)):
            for key, ids in split.items():
                for i in ids:
                    split_ids.setdefault(str(i), f"'{key}' of fold {fold} in {f}")
    n_channels = len(dataset_json["channel_names"])
    plan = PromotionPlan(cases=sorted(set(cases)), splits_files=splits_files)
    for case in plan.cases:
        if os.sep in case or "/" in case or case.startswith("."):
            problems.append(f"{case!r} is not a case id (a plain file name without the file ending)")
            continue
        label = join(corrected_folder, case + ending)
        target_label = join(raw_dataset_folder, "labelsTr", case + ending)
        clash = [p for p in (training.get(case, []) + [target_label]) if os.path.lexists(p)]
        if clash:
            problems.append(f"{case}: name clash, already exists: {clash}")
        if case in split_ids:
            problems.append(f"{case}: name clash, already listed as {split_ids[case]}")
        images = unlabeled.get(case)
        if images is None:
            problems.append(f"{case}: not in {join(raw_dataset_folder, RAW_UNLABELED_FOLDER)} (only imagesUnlabeled "
                            f"cases can be promoted)")
        elif len(images) != n_channels:
            problems.append(f"{case}: {len(images)} channel files in imagesUnlabeled, dataset.json declares "
                            f"{n_channels}")
        if not isfile(label):
            problems.append(f"{case}: missing label {label}")
        elif images is not None and len(images) == n_channels:
            problems += _label_problems(case, images, label, dataset_json)
        if images is not None:
            plan.labels.append((os.path.abspath(label), os.path.abspath(target_label)))
            plan.moves += [(os.path.abspath(i), os.path.abspath(join(raw_dataset_folder, "imagesTr", basename(i))))
                           for i in images]
    if problems:
        raise PromotionRefusedError("nnUNetv2_pick_promote changed nothing; fix these problems and run it again:\n  - "
                               + "\n  - ".join(problems))
    plan.num_training = int(dataset_json.get("numTraining", len(training))) + len(plan.cases)
    plan.dataset_json_files = [dataset_json_file]
    if preprocessed_dataset_folder and isfile(join(preprocessed_dataset_folder, "dataset.json")):
        plan.dataset_json_files.append(join(preprocessed_dataset_folder, "dataset.json"))
    if preprocessed_dataset_folder and isdir(preprocessed_dataset_folder):
        folders = [d for d in glob.glob(join(preprocessed_dataset_folder, "*" + PREPROCESSED_SUFFIX)) if isdir(d)]
        for folder in sorted(folders):
            for case in plan.cases:
                for where in (folder, join(folder, ".partial")):
                    plan.stale += [join(where, case + s) for s in PREPROCESSED_FILES if isfile(join(where, case + s))]
    return plan


def _execute(plan: PromotionPlan) -> None:
    """Carry out a journaled plan; every step may already have been done by an interrupted run."""
    for source, target in plan.labels:
        if not isfile(target):
            partial = join(os.path.dirname(target), "." + basename(target) + ".partial")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, partial)
            os.replace(partial, target)
    _hook("labels")
    for path in plan.stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    _hook("stale")
    for source, target in plan.moves:
        if os.path.lexists(source):
            if os.path.lexists(target):
                raise RuntimeError(f"{source} and {target} both exist; move one of them away and run "
                                   f"nnUNetv2_pick_promote again to finish the promotion")
            os.rename(source, target)
            _hook("move:" + basename(source))
    for path in plan.dataset_json_files:
        dataset_json = load_json(path)
        if dataset_json.get("numTraining") != plan.num_training:
            dataset_json["numTraining"] = plan.num_training
            _write_json_atomic(dataset_json, path)
    _hook("dataset_json")
    for path in plan.splits_files:
        splits = load_json(path)
        for split in splits:  # (an id listed anywhere in the splits was refused as a clash)
            split["train"] = list(split["train"]) + [c for c in plan.cases if c not in split["train"]]
        _write_json_atomic(splits, path)
    _hook("splits")


def resume_promotion(raw_dataset_folder: str) -> PromotionPlan | None:
    """Finish a promotion that was interrupted (its journal is still in ``raw_dataset_folder``).

    Returns:
        The finished plan, or None if there was nothing to finish.
    """
    journal = join(raw_dataset_folder, JOURNAL)
    if not isfile(journal):
        return None
    stored = load_json(journal)
    plan = PromotionPlan(**{**stored, "labels": [tuple(p) for p in stored["labels"]],
                            "moves": [tuple(p) for p in stored["moves"]]})
    _execute(plan)
    os.remove(journal)
    return plan


def promote(raw_dataset_folder: str, preprocessed_dataset_folder: str | None, corrected_folder: str,
            cases: list[str] | None = None) -> PromotionPlan:
    """Check (:func:`plan_promotion`), journal and carry out a promotion.

    Args / Raises: as :func:`plan_promotion`; also ``RuntimeError`` if an interrupted promotion's journal exists
    (finish it with :func:`resume_promotion` first).

    Returns:
        The plan carried out.
    """
    journal = join(raw_dataset_folder, JOURNAL)
    if isfile(journal):
        raise RuntimeError(f"{journal} exists: an earlier promotion was interrupted. Run nnUNetv2_pick_promote again "
                           f"to finish it first.")
    plan = plan_promotion(raw_dataset_folder, preprocessed_dataset_folder, corrected_folder, cases)
    _write_json_atomic(asdict(plan), journal)
    _execute(plan)
    os.remove(journal)
    return plan
