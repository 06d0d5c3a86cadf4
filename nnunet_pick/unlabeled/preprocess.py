"""Preprocess ``imagesUnlabeled`` with a dataset's plans (``nnUNetv2_pick_preprocess_unlabeled``).

Each case goes through the configuration's own nnU-Net preprocessor (``DefaultPreprocessor.run_case_save`` with
``seg_file=None``, exactly what nnU-Net does for test images): transpose, crop to non-zero, normalise with the labeled
fingerprint's statistics, resample to the plans' spacing. The result is written as nnU-Net's blosc2 files into
``<data_identifier>_unlabeled/`` beside the configuration's folder.

Writes are atomic per case: each attempt writes into its own fresh folder under the hidden staging folder
``.partial/`` (``<case>.<pid>.<random>``, holding an exclusive ``flock`` on its ``.lock`` while it runs) and moves the
files into place, the ``.pkl`` last; a case counts as done only when its ``.pkl`` exists and is newer than its images
(:func:`~nnunet_pick.unlabeled.pool.preprocessing_state`). So a run interrupted in any way (any signal to the main
process or a worker) leaves at worst an abandoned attempt folder: the next run never writes into it (nnU-Net's blosc2
writer refuses to overwrite a file, which used to block every later run on a half-written staging file), removes it
once nobody holds its lock (the kernel releases the lock of a process that died, however it died), and redoes the
case. A worker that dies ends
the run with an error instead of a hang (``concurrent.futures`` reports a broken pool; ``multiprocessing.Pool`` waits
forever for the lost task). Workers are ``spawn`` processes like nnU-Net's preprocessing; the progress bar is
``tqdm``'s.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from os.path import isdir, isfile, join

from batchgenerators.utilities.file_and_folder_operations import load_json, maybe_mkdir_p
from nnunetv2.configuration import default_num_processes
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

from nnunet_pick.unlabeled.pool import (
    RAW_UNLABELED_FOLDER,
    list_raw_unlabeled_cases,
    preprocessed_unlabeled_folder,
    preprocessing_state,
    raw_unlabeled_folder,
)
from nnunet_pick.unlabeled.validate import check_unlabeled_folder, integrity_cache_file, raise_if_problems

logger = logging.getLogger(__name__)

STAGING_FOLDER = ".partial"
LOCK_FILE = ".lock"


def _preprocess_case(case_id: str, image_files: list[str], output_folder: str, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict) -> str:
    """Preprocess one case into ``output_folder`` atomically (worker function; picklable arguments only)."""
    staging_root = join(output_folder, STAGING_FOLDER)
    maybe_mkdir_p(staging_root)
    # a fresh folder per attempt: nothing an interrupted attempt left behind is ever in the way
    staging = tempfile.mkdtemp(prefix=f"{case_id}.{os.getpid()}.", dir=staging_root)
    lock = _hold_lock(staging)
    try:
        preprocessor = configuration_manager.preprocessor_class(verbose=False)
        try:
            preprocessor.run_case_save(join(staging, case_id), image_files, None, plans_manager,
                                       configuration_manager, dataset_json)
        except Exception as e:
            raise RuntimeError(f"Preprocessing unlabeled case {case_id} ({image_files}) failed: {e!r}") from e
        # the .pkl last: its presence marks the case as complete (pool.list_preprocessed_cases)
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            os.replace(join(staging, case_id + suffix), join(output_folder, case_id + suffix))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.close()
    return case_id


def _hold_lock(folder: str):
    """Open ``folder/.lock`` with an exclusive ``flock`` held until the returned file is closed (or the process ends,
    however it ends: the kernel releases the lock). None where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(join(folder, LOCK_FILE), "wb")  # noqa: SIM115 (held open on purpose until the attempt ends)
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _abandoned(folder: str) -> bool:
    """True if the attempt in ``folder`` has no running process any more (nobody holds its lock). Without
    ``fcntl`` (Windows) nothing is judged abandoned: a leftover attempt folder is harmless, only disk space."""
    try:
        import fcntl
    except ImportError:
        return False
    lock_path = join(folder, LOCK_FILE)
    if not isfile(lock_path):  # killed between creating the folder and its lock, or a live attempt that very moment
        return time.time() - os.path.getmtime(folder) > 60
    with open(lock_path, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def remove_abandoned_staging(output_folder: str) -> list[str]:
    """Remove what interrupted runs left in ``output_folder/.partial``: attempt folders whose process is gone, and
    loose files (the layout of earlier versions, which wrote every attempt into ``.partial`` itself).

    Returns:
        The names removed.
    """
    staging_root = join(output_folder, STAGING_FOLDER)
    if not isdir(staging_root):
        return []
    removed = []
    for name in sorted(os.listdir(staging_root)):
        path = join(staging_root, name)
        if isdir(path):
            if not _abandoned(path):
                continue  # an attempt of a run that is still going
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(name)
    return removed


def preprocess_unlabeled(dataset_name_or_id: int | str, configuration: str, plans_identifier: str = "nnUNetPlans",
                         num_processes: int = default_num_processes, *, progress_bar: bool = True,
                         check: bool = True) -> list[str]:
    """Preprocess every case of ``imagesUnlabeled`` not yet preprocessed (or changed since) for one configuration.

    Args:
        dataset_name_or_id: nnU-Net dataset id or name.
        configuration: plans configuration (``2d``, ``3d_fullres``, ...).
        plans_identifier: plans name (``nnUNetPlans``, ``nnUNetResEncUNetMPlans``, ...).
        num_processes: worker processes; 1 or less runs in this process.
        progress_bar: show a ``tqdm`` progress bar.
        check: run :func:`~nnunet_pick.unlabeled.validate.check_unlabeled_folder` first (the trainer, which has just
            run it itself, passes False).

    Returns:
        The ids preprocessed by this call (cases already done are skipped).

    Raises:
        FileNotFoundError: if the plans, ``dataset.json`` or ``imagesUnlabeled`` are missing.
        ValueError: listing every problem of ``imagesUnlabeled`` (:mod:`nnunet_pick.unlabeled.validate`: names,
            file endings, channel files, unreadable, truncated or non-finite files, dimensionality, id clashes); nothing
            is written then.
        RuntimeError: if a case fails to preprocess (the message names it), or a worker process dies.
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
    if check:
        result = check_unlabeled_folder(join(nnUNet_raw, dataset_name), dataset_json,
                                        cache_file=integrity_cache_file(base), num_threads=num_processes)
        raise_if_problems(result, raw_folder)
        for warning in result.warnings:
            logger.warning(warning)

    output_folder = preprocessed_unlabeled_folder(base, configuration_manager.data_identifier)
    maybe_mkdir_p(output_folder)
    abandoned = remove_abandoned_staging(output_folder)
    if abandoned:
        logger.info("Removed %d abandoned attempt(s) of interrupted runs from %s: %s", len(abandoned),
                    join(output_folder, STAGING_FOLDER), abandoned[:10])
    up_to_date, todo, orphaned = preprocessing_state(cases, output_folder)
    logger.info("%s: %d of %d unlabeled cases already preprocessed in %s", RAW_UNLABELED_FOLDER,
                len(up_to_date), len(cases), output_folder)
    if orphaned:
        logger.info("%d preprocessed case(s) in %s have no image in %s any more and are not used: %s", len(orphaned),
                    output_folder, raw_folder, orphaned[:10])
    args = [(c, cases[c], output_folder, plans_manager, configuration_manager, dataset_json) for c in todo]
    with tqdm(total=len(todo), desc=f"Preprocessing {RAW_UNLABELED_FOLDER}", disable=not progress_bar) as bar:
        if num_processes <= 1 or len(todo) <= 1:
            for a in args:
                _preprocess_case(*a)
                bar.update()
        else:
            with ProcessPoolExecutor(min(num_processes, len(todo)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [pool.submit(_preprocess_case, *a) for a in args]
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update()
                except BrokenProcessPool as e:
                    raise RuntimeError(
                        f"A preprocessing worker process died (killed or out of memory) while preprocessing "
                        f"{RAW_UNLABELED_FOLDER} into {output_folder}. Cases finished so far are kept; run the same "
                        f"command again to resume.") from e
    with contextlib.suppress(OSError):  # left in place while another run still has an attempt in it
        os.rmdir(join(output_folder, STAGING_FOLDER))
    return todo
