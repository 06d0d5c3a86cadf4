"""Check an ``imagesUnlabeled`` folder against its dataset before anything is written.

Every problem is collected and reported at once (``ValueError`` from :func:`raise_if_problems`), each naming the
file and the fix. Image headers are read with SimpleITK (``ReadImageInformation``: header only, no voxel data) for
every file; when SimpleITK cannot read the dataset's format at all, the header checks are skipped (nnU-Net's own
reader reports such files when preprocessing). Large spacing or orientation differences from ``imagesTr`` are
warnings, not errors: nnU-Net's preprocessing resamples to the plans' spacing anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from os.path import isdir, join

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the library's usual alias)

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


def check_unlabeled_folder(raw_dataset_folder: str, dataset_json: dict) -> PoolCheck:
    """Check ``imagesUnlabeled`` of a raw dataset: names, file endings, channel files, readability, dimensionality
    and components against ``imagesTr``, id clashes with ``imagesTr``; spacing / orientation differences warn.

    Args:
        raw_dataset_folder: ``$nnUNet_raw/DatasetXXX_Name``.
        dataset_json: its ``dataset.json``.

    Returns:
        :class:`PoolCheck` (empty if the folder is absent).
    """
    result = PoolCheck()
    folder = join(raw_dataset_folder, RAW_UNLABELED_FOLDER)
    if not isdir(folder):
        return result
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
                continue
            if reference is None:
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
    return result


def raise_if_problems(check: PoolCheck, folder: str) -> None:
    """Raise one ``ValueError`` listing every error of ``check`` (nothing was written)."""
    if check.errors:
        raise ValueError(f"{len(check.errors)} problem(s) in {folder}; nothing was preprocessed or written:\n  "
                         + "\n  ".join(check.errors))
