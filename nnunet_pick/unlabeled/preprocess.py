"""Preprocess ``imagesUnlabeled`` with a dataset's plans (``nnUNetv2_pick_preprocess_unlabeled``).

Each case goes through the configuration's own nnU-Net preprocessor (``DefaultPreprocessor.run_case_save`` with
``seg_file=None``, exactly what nnU-Net does for test images): transpose, crop to non-zero, normalise with the labeled
fingerprint's statistics, resample to the plans' spacing. The result is written as nnU-Net's blosc2 files into
``<data_identifier>_unlabeled/`` beside the configuration's folder.

Writes are atomic per case: files are produced in a hidden staging folder and moved into place, the ``.pkl`` last; a
case counts as done only when its ``.pkl`` exists, so an interrupted run resumes where it stopped and never treats a
half-written case as done. Parallelism is a ``spawn`` process pool like nnU-Net's preprocessing; the progress bar is
``tqdm``'s.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from os.path import isfile, join

from batchgenerators.utilities.file_and_folder_operations import load_json, maybe_mkdir_p
from nnunetv2.configuration import default_num_processes
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_pick.unlabeled.pool import (
    RAW_UNLABELED_FOLDER,
    list_preprocessed_cases,
    list_raw_unlabeled_cases,
    preprocessed_unlabeled_folder,
    raw_unlabeled_folder,
)
from nnunet_pick.unlabeled.validate import check_unlabeled_folder, raise_if_problems

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".partial"


def _preprocess_case(case_id: str, image_files: list[str], output_folder: str, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict) -> str:
    """Preprocess one case into ``output_folder`` atomically (worker function; picklable arguments only)."""
    staging = join(output_folder, STAGING_FOLDER)
    maybe_mkdir_p(staging)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    try:
        preprocessor.run_case_save(join(staging, case_id), image_files, None, plans_manager,
                                   configuration_manager, dataset_json)
    except Exception as e:
        raise RuntimeError(f"Preprocessing unlabeled case {case_id} ({image_files}) failed: {e!r}") from e
    # the .pkl last: its presence marks the case as complete (pool.list_preprocessed_cases)
    for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
        os.replace(join(staging, case_id + suffix), join(output_folder, case_id + suffix))
    return case_id


def preprocess_unlabeled(dataset_name_or_id: int | str, configuration: str, plans_identifier: str = "nnUNetPlans",
                         num_processes: int = default_num_processes, *, progress_bar: bool = True) -> list[str]:
    """Preprocess every not yet preprocessed case of ``imagesUnlabeled`` for one plans configuration.

    Args:
        dataset_name_or_id: nnU-Net dataset id or name.
        configuration: plans configuration (``2d``, ``3d_fullres``, ...).
        plans_identifier: plans name (``nnUNetPlans``, ``nnUNetResEncUNetMPlans``, ...).
        num_processes: worker processes; 1 or less runs in this process.
        progress_bar: show a ``tqdm`` progress bar.

    Returns:
        The ids preprocessed by this call (cases already done are skipped).

    Raises:
        FileNotFoundError: if the plans, ``dataset.json`` or ``imagesUnlabeled`` are missing.
        ValueError: listing every problem of ``imagesUnlabeled`` (:mod:`nnunet_pick.unlabeled.validate`: names,
            file endings, channel files, unreadable files, dimensionality, id clashes); nothing is written then.
        RuntimeError: if a case fails to preprocess (the message names it).
    """
    dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
    base = join(nnUNet_preprocessed, dataset_name)
    plans_file = join(base, plans_identifier + ".json")
    if not isfile(plans_file):
        raise FileNotFoundError(f"Plans file {plans_file} not found. Run nnUNetv2_plan_and_preprocess -d "
                                f"{dataset_name_or_id} first (or pass the right -p).")
    plans_manager = PlansManager(plans_file)
    configuration_manager = plans_manager.get_configuration(configuration)
    dataset_json = load_json(join(base, "dataset.json"))

    raw_folder = raw_unlabeled_folder(join(nnUNet_raw, dataset_name))
    cases = list_raw_unlabeled_cases(raw_folder, dataset_json["file_ending"])
    if not cases:
        raise FileNotFoundError(
            f"No unlabeled images found in {raw_folder}. Put them there as {{CASE}}_{{XXXX}}"
            f"{dataset_json['file_ending']} (same channels and file ending as imagesTr), "
            f"or list imagesTr cases under 'unlabeled' in splits_final.json.")
    check = check_unlabeled_folder(join(nnUNet_raw, dataset_name), dataset_json)
    raise_if_problems(check, raw_folder)
    for warning in check.warnings:
        logger.warning(warning)

    output_folder = preprocessed_unlabeled_folder(base, configuration_manager.data_identifier)
    maybe_mkdir_p(output_folder)
    done = set(list_preprocessed_cases(output_folder))
    todo = [c for c in cases if c not in done]
    logger.info("%s: %d of %d unlabeled cases already preprocessed in %s", RAW_UNLABELED_FOLDER,
                len(cases) - len(todo), len(cases), output_folder)
    args = [(c, cases[c], output_folder, plans_manager, configuration_manager, dataset_json) for c in todo]
    with tqdm(total=len(todo), desc=f"Preprocessing {RAW_UNLABELED_FOLDER}", disable=not progress_bar) as bar:
        if num_processes <= 1 or len(todo) <= 1:
            for a in args:
                _preprocess_case(*a)
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(min(num_processes, len(todo))) as pool:
                for _ in pool.imap_unordered(_star_preprocess_case, args):
                    bar.update()
    shutil.rmtree(join(output_folder, STAGING_FOLDER), ignore_errors=True)
    return todo


def _star_preprocess_case(args: tuple) -> str:
    """``imap_unordered`` passes one argument; unpack it for :func:`_preprocess_case`."""
    return _preprocess_case(*args)
