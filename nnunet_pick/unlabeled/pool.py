"""Where unlabeled cases come from, and which ones a fold uses.

Two sources, usable together:

1. ``$nnUNet_raw/DatasetXXX_Name/imagesUnlabeled/{CASE}_{XXXX}{file_ending}``: images without labels, preprocessed
   by ``nnUNetv2_pick_preprocess_unlabeled`` into ``$nnUNet_preprocessed/DatasetXXX_Name/<data_identifier>_unlabeled/``,
   a sibling of the configuration's preprocessed folder (never inside it: nnU-Net's preprocessing ``rmtree``s that
   folder and its ``do_split`` / validation list every case in it).
2. ``"unlabeled": [ids]`` in a fold of ``splits_final.json``: training cases of ``imagesTr`` used as unlabeled. Their
   preprocessed images are read from the configuration's own folder; their segmentation files are never opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from os.path import isdir, join

RAW_UNLABELED_FOLDER = "imagesUnlabeled"
PREPROCESSED_SUFFIX = "_unlabeled"
SPLITS_UNLABELED_KEY = "unlabeled"


def raw_unlabeled_folder(raw_dataset_folder: str) -> str:
    """``imagesUnlabeled`` inside a raw dataset folder (``$nnUNet_raw/DatasetXXX_Name``)."""
    return join(raw_dataset_folder, RAW_UNLABELED_FOLDER)


def preprocessed_unlabeled_folder(preprocessed_dataset_folder_base: str, data_identifier: str) -> str:
    """The sibling folder that holds preprocessed ``imagesUnlabeled`` cases for one plans configuration.

    Args:
        preprocessed_dataset_folder_base: ``$nnUNet_preprocessed/DatasetXXX_Name``.
        data_identifier: the configuration's ``data_identifier`` (e.g. ``nnUNetPlans_3d_fullres``).
    """
    return join(preprocessed_dataset_folder_base, data_identifier + PREPROCESSED_SUFFIX)


def list_raw_unlabeled_cases(folder: str, file_ending: str) -> dict[str, list[str]]:
    """Case id -> sorted channel files for every case in an ``imagesUnlabeled`` folder.

    nnU-Net's file-name rule ``{CASE}_{XXXX}{file_ending}`` (as ``nnunetv2.utilities.utils.create_paths_fn``); files
    that do not follow it are not cases (:mod:`nnunet_pick.unlabeled.validate` reports them). Returns {} if the
    folder is absent.
    """
    if not isdir(folder):
        return {}
    pattern = re.compile(r"(.+)_\d{4}" + re.escape(file_ending))
    cases: dict[str, list[str]] = {}
    # one pass over the sorted names (grouping per case with nnU-Net's create_paths_fn scans every file for every
    # case: quadratic, 8 s of trainer start-up for 5 000 cases)
    for f in sorted(os.listdir(folder)):
        match = pattern.fullmatch(f)
        if match and not f.startswith("."):
            cases.setdefault(match.group(1), []).append(join(folder, f))
    return dict(sorted(cases.items()))


def list_preprocessed_cases(folder: str) -> list[str]:
    """Ids of the cases completely written to a preprocessed folder (``ID.b2nd`` and ``ID.pkl`` both present).

    Preprocessing writes the ``.pkl`` last (see :mod:`nnunet_pick.unlabeled.preprocess`), so a case interrupted
    half-way is not listed.
    """
    if not isdir(folder):
        return []
    names = set(os.listdir(folder))
    return sorted(
        n[: -len(".pkl")] for n in names
        if n.endswith(".pkl") and not n.startswith(".") and n[: -len(".pkl")] + ".b2nd" in names
    )


def unlabeled_ids_from_split(split: dict, fold: int | str) -> list[str]:
    """The ``"unlabeled"`` ids of one fold of ``splits_final.json``, checked against its ``train`` and ``val``.

    Args:
        split: one element of the splits list (``{'train': [...], 'val': [...], 'unlabeled': [...]?}``).
        fold: the fold index, for the error message.

    Returns:
        The unlabeled ids (empty if the key is absent).

    Raises:
        ValueError: if an id is listed more than once, is also in ``train`` or ``val`` of the same fold, or is not a
            plain file name (a path separator or ``..`` could reach outside the dataset's folders).
    """
    ids = [str(i) for i in split.get(SPLITS_UNLABELED_KEY, [])]
    problems = []
    unsafe = sorted(i for i in ids if "/" in i or "\\" in i or i in ("", ".", "..") or i.startswith("."))
    if unsafe:
        problems.append(f"ids that are not plain file names: {unsafe}")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        problems.append(f"listed twice in 'unlabeled': {duplicates}")
    for key in ("val", "train"):
        both = sorted(set(ids) & {str(i) for i in split.get(key, [])})
        if both:
            problems.append(f"in both 'unlabeled' and '{key}': {both}")
    if problems:
        raise ValueError(
            f"splits_final.json fold {fold}: " + "; ".join(problems) + ". A case is either labeled training data "
            "('train'), validation data ('val') or unlabeled training data ('unlabeled'); remove it from all but one."
        )
    return ids


def check_ids_exist(ids: Iterable[str], available: Sequence[str], *, where: str, fix: str) -> None:
    """Raise ``ValueError`` naming every id of ``ids`` that is not in ``available``.

    Args:
        ids: ids to check.
        available: ids that exist.
        where: what the ids refer to, for the message (a file or folder).
        fix: how to fix it, for the message.
    """
    available_set = set(available)
    missing = sorted(i for i in ids if i not in available_set)
    if missing:
        shown = missing[:20]
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise ValueError(f"{where}: case ids not found: {shown}{more}. {fix}")


def preprocessing_state(raw_cases: dict[str, list[str]], folder: str) -> tuple[list[str], list[str], list[str]]:
    """Compare the cases of ``imagesUnlabeled`` with what is preprocessed in ``folder``.

    Args:
        raw_cases: case id -> channel files (:func:`list_raw_unlabeled_cases`).
        folder: the preprocessed unlabeled folder (may not exist).

    Returns:
        ``(up_to_date, to_do, orphaned)``: raw cases whose preprocessed ``.pkl`` is at least as new as every one of
        their image files; raw cases not preprocessed yet or whose image changed since (newer modification time: the
        preprocessed case is redone); preprocessed cases whose image is no longer in ``imagesUnlabeled`` (never
        trained on; the files are left on disk).
    """
    done = set(list_preprocessed_cases(folder))
    up_to_date, to_do = [], []
    for case, files in raw_cases.items():
        if case in done and os.stat(join(folder, case + ".pkl")).st_mtime_ns >= max(
                os.stat(f).st_mtime_ns for f in files):
            up_to_date.append(case)
        else:
            to_do.append(case)
    orphaned = sorted(done - set(raw_cases))
    return up_to_date, to_do, orphaned


def complete_case_folders(unlabeled_from_split: Sequence[str], configuration_folder: str,
                          unlabeled_folder: str, raw_unlabeled_ids: Iterable[str]) -> dict[str, str]:
    """Case id -> preprocessed folder for the whole unlabeled pool of a fold.

    The pool is exactly the fold's ``"unlabeled"`` ids plus the cases of ``imagesUnlabeled`` as the folder is now
    (``raw_unlabeled_ids``); preprocessed cases of images no longer there are not part of it.

    Args:
        unlabeled_from_split: ``"unlabeled"`` ids of the fold (cases of ``imagesTr``).
        configuration_folder: the configuration's preprocessed folder (``.../nnUNetPlans_3d_fullres``).
        unlabeled_folder: the preprocessed ``imagesUnlabeled`` folder (may not exist).
        raw_unlabeled_ids: the case ids of ``imagesUnlabeled`` (checked and preprocessed before this is called).

    Raises:
        ValueError: if a split id or an ``imagesUnlabeled`` case is not preprocessed, or an id is in both sources.
    """
    raw_unlabeled_ids = sorted(raw_unlabeled_ids)
    if unlabeled_from_split:
        check_ids_exist(
            unlabeled_from_split, list_preprocessed_cases(configuration_folder),
            where=f"'unlabeled' ids of splits_final.json vs {configuration_folder}",
            fix="Ids under 'unlabeled' must be training cases of imagesTr, preprocessed with "
                "nnUNetv2_plan_and_preprocess (or nnUNetv2_preprocess) for this configuration.")
    if raw_unlabeled_ids:
        check_ids_exist(
            raw_unlabeled_ids, list_preprocessed_cases(unlabeled_folder),
            where=f"{RAW_UNLABELED_FOLDER} cases vs {unlabeled_folder}",
            fix="Run nnUNetv2_pick_preprocess_unlabeled for this configuration (the PICK trainer runs it itself).")
    pool = {i: configuration_folder for i in unlabeled_from_split}
    clashes = sorted(set(pool) & set(raw_unlabeled_ids))
    if clashes:
        raise ValueError(
            f"Case ids {clashes} are both unlabeled cases of splits_final.json (imagesTr) and cases of "
            f"imagesUnlabeled ({unlabeled_folder}). Rename the imagesUnlabeled files so every case id is unique.")
    pool.update({i: unlabeled_folder for i in raw_unlabeled_ids})
    return dict(sorted(pool.items()))
