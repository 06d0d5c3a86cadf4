"""Check an ``imagesUnlabeled`` folder (and, for the trainer, the labeled training files) before anything is written.

Every problem is collected and reported at once (``ValueError`` from :func:`raise_if_problems`), each naming the
file and the fix. Image headers are read with SimpleITK (``ReadImageInformation``: header only, no voxel data) for
every file; when SimpleITK cannot read the dataset's format at all, the header checks are skipped (nnU-Net's own
reader reports such files when preprocessing). Large spacing or orientation differences from ``imagesTr`` are
warnings, not errors: nnU-Net's preprocessing resamples to the plans' spacing anyway. Every image that passes these
checks is then decoded completely (:mod:`nnunet_pick.integrity`: no file cut short, no NaN / Inf voxels), once per
file version. ``nnUNetv2_pick_preprocess_unlabeled`` and the PICK trainer run the same :func:`check_unlabeled_folder`,
so they accept exactly the same pool with the same messages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from os.path import isdir, join

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

from nnunet_pick.integrity import CACHE_FILE_NAME, FileCheckCache, check_image_files
from nnunet_pick.unlabeled.pool import RAW_UNLABELED_FOLDER, list_raw_unlabeled_cases

SPACING_WARNING_RATIO = 2.0


@dataclass
class PoolCheck:
    """Errors (must be fixed) and warnings (worth a look) about an unlabeled folder."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _header(path: str) -> tuple[int, int, tuple[float, ...], tuple[float, ...]]:
    """(dimension, components per voxel, spacing, direction) from the file's header."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return (reader.GetDimension(), reader.GetNumberOfComponents(), tuple(reader.GetSpacing()),
            tuple(reader.GetDirection()))


def integrity_cache_file(preprocessed_dataset_folder_base: str) -> str:
    """Where the results of :mod:`nnunet_pick.integrity` are kept: ``$nnUNet_preprocessed/DatasetXXX/`` +
    :data:`~nnunet_pick.integrity.CACHE_FILE_NAME`."""
    return join(preprocessed_dataset_folder_base, CACHE_FILE_NAME)


def check_unlabeled_folder(raw_dataset_folder: str, dataset_json: dict, *, cache_file: str | None = None,
                           check_labeled: bool = False, num_threads: int | None = None) -> PoolCheck:
    """Check ``imagesUnlabeled`` of a raw dataset: names, file endings, channel files, readability, dimensionality
    and components against ``imagesTr``, id clashes with ``imagesTr``, complete and finite voxel data
    (:func:`nnunet_pick.integrity.check_image_file`); spacing / orientation differences warn.

    Args:
        raw_dataset_folder: ``$nnUNet_raw/DatasetXXX_Name``.
        dataset_json: its ``dataset.json``.
        cache_file: JSON cache of files that passed the integrity check before (:func:`integrity_cache_file`); it is
            written only when there is no error at all. None checks every file.
        check_labeled: also check every image and label file of the labeled training cases (``imagesTr`` /
            ``labelsTr``, or ``dataset.json``'s ``dataset`` key) for completeness, and that every label file holds
            only values ``dataset.json`` declares: the PICK trainer's start-up check.
        num_threads: parallel integrity checks (default: nnU-Net's ``default_num_processes``).

    Returns:
        :class:`PoolCheck` (no ``imagesUnlabeled`` checks if the folder is absent).
    """
    result = PoolCheck()
    folder = join(raw_dataset_folder, RAW_UNLABELED_FOLDER)
    unlabeled_files = _check_names_and_headers(folder, raw_dataset_folder, dataset_json, result) if isdir(folder) \
        else []
    labeled_files: dict[str, str] = {}  # image or label file -> its case
    label_files: set[str] = set()
    if check_labeled and "dataset" not in dataset_json and not isdir(join(raw_dataset_folder, "imagesTr")):
        result.errors.append(f"{join(raw_dataset_folder, 'imagesTr')}: not found; the labeled images this dataset "
                             f"was preprocessed from belong there (with labelsTr beside it)")
    elif check_labeled:
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        for case, entry in get_filenames_of_train_images_and_targets(raw_dataset_folder, dict(dataset_json)).items():
            for path in entry["images"]:
                labeled_files[path] = case
            labeled_files[entry["label"]] = case
            label_files.add(entry["label"])
    cache = FileCheckCache(cache_file)
    problems, values = check_image_files([*unlabeled_files, *labeled_files], cache, num_threads,
                                         reader_class=_reader_class(dataset_json), segmentations=label_files)
    for path in unlabeled_files:
        if path in problems:
            result.errors.append(f"{path}: {problems[path]}; replace it with a complete, valid copy or remove it from "
                                 f"{RAW_UNLABELED_FOLDER}")
    for path, case in labeled_files.items():
        if path in problems:
            result.errors.append(
                f"{path} (labeled case {case}): {problems[path]}; replace it with a complete, valid copy, then re-run "
                f"nnUNetv2_plan_and_preprocess for this dataset (its preprocessed case was made from this file)")
    if label_files:
        from nnunetv2.utilities.label_handling.label_handling import LabelManager

        labels = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
        declared = {int(v) for v in labels.all_labels}
        for path in sorted(values):
            undeclared = sorted(set(values[path]) - declared)
            if undeclared:
                result.errors.append(
                    f"{path} (labeled case {labeled_files[path]}): label value(s) {undeclared} are not declared in "
                    f"dataset.json 'labels' (declared: {sorted(declared)}); nnU-Net's loss would fail on them in the "
                    f"first epochs ('index out of bounds'). Correct the file or declare the label, then re-run "
                    f"nnUNetv2_plan_and_preprocess")
    if not result.errors:
        cache.save()
    return result


def _reader_class(dataset_json: dict):
    """The dataset's nnU-Net reader/writer class (for non-NIfTI files), or None if nnU-Net has none for it."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    try:
        return determine_reader_writer_from_dataset_json(dataset_json, None, verbose=False)
    except RuntimeError:
        return None


def _check_names_and_headers(folder: str, raw_dataset_folder: str, dataset_json: dict, result: PoolCheck) -> list[str]:
    """Name, channel, header and id checks of ``imagesUnlabeled`` into ``result``; returns the image files whose
    voxel data is to be checked next (those whose header was fine or could not be compared)."""
    to_decode: list[str] = []
    ending = dataset_json["file_ending"]
    n_channels = len(dataset_json["channel_names"])
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    for f in files:
        if not f.endswith(ending):
            result.errors.append(f"{join(folder, f)}: file ending is not the dataset's {ending!r}; convert it to "
                                 f"{ending} or move it out of {RAW_UNLABELED_FOLDER}")
        elif not pattern.fullmatch(f):
            result.errors.append(f"{join(folder, f)}: name is not {{CASE}}_{{XXXX}}{ending} (XXXX = 4-digit channel "
                                 f"index); rename it, e.g. to case_001_0000{ending}")
    cases = list_raw_unlabeled_cases(folder, ending)
    labeled_folder = join(raw_dataset_folder, "imagesTr")
    labeled = list_raw_unlabeled_cases(labeled_folder, ending)  # {} without imagesTr
    # channel files per case as in imagesTr (an RGB PNG holds 3 channels of channel_names in one _0000 file, so
    # nnU-Net counts channels after reading); dataset.json's channel_names when there is no imagesTr to compare to
    if labeled:
        ref_case, ref_files = sorted(labeled.items())[0]
        expected = sorted(os.path.basename(p)[len(ref_case):] for p in ref_files)
        declared = f"imagesTr cases have {expected}"
    else:
        expected = [f"_{c:04d}{ending}" for c in range(n_channels)]
        declared = f"dataset.json declares {n_channels} channel(s) {expected}"
    for case, channel_files in cases.items():
        suffixes = sorted(os.path.basename(p)[len(case):] for p in channel_files)
        if suffixes != expected:
            missing = [case + s for s in expected if s not in suffixes]
            extra = [case + s for s in suffixes if s not in expected]
            result.errors.append(f"{folder}/{case}: channel files missing {missing}, unexpected {extra}; {declared}")
    clashes = sorted(set(cases) & set(labeled))
    if clashes:
        result.errors.append(f"case ids {clashes[:10]} exist in both imagesTr and {RAW_UNLABELED_FOLDER}; rename the "
                             f"unlabeled files (preprocessed cases are stored by id)")
    reference = None
    if labeled:
        try:
            reference = _header(sorted(labeled.values())[0][0])
        except RuntimeError:
            reference = None  # SimpleITK cannot read this format: header checks are skipped
    for channel_files in cases.values():
        for path in channel_files:
            try:
                dim, comps, spacing, direction = _header(path)
            except RuntimeError as e:
                if reference is not None:
                    result.errors.append(f"{path}: cannot be read as an image ({str(e).strip().splitlines()[-1]}); "
                                         f"replace or remove it")
                else:
                    to_decode.append(path)  # SimpleITK cannot read this format: nnU-Net's reader decodes it
                continue
            if reference is None:
                to_decode.append(path)
                continue
            ref_dim, ref_comps, ref_spacing, ref_direction = reference
            if dim != ref_dim or comps != ref_comps:
                result.errors.append(f"{path}: {dim}D with {comps} component(s) per voxel, but imagesTr has "
                                     f"{ref_dim}D with {ref_comps}; convert it like the labeled images")
                continue
            ratio = np.max(np.maximum(np.array(spacing) / np.array(ref_spacing),
                                      np.array(ref_spacing) / np.array(spacing)))
            if ratio > SPACING_WARNING_RATIO:
                result.warnings.append(f"{path}: spacing {spacing} differs from imagesTr's {ref_spacing} by "
                                       f"{ratio:.1f}x (it is resampled to the plans' spacing)")
            if not np.allclose(direction, ref_direction, atol=1e-3):
                result.warnings.append(f"{path}: orientation differs from imagesTr's (nnU-Net does not reorient)")
            to_decode.append(path)
    return to_decode


def raise_if_problems(check: PoolCheck, folder: str) -> None:
    """Raise one ``ValueError`` listing every error of ``check`` (nothing was written)."""
    if check.errors:
        raise ValueError(f"{len(check.errors)} problem(s) in {folder}; nothing was preprocessed or written:\n  "
                         + "\n  ".join(check.errors))
