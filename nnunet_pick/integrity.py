"""Is an image file complete and finite? Checked once per file version, in parallel, before anything is written.

Why: SimpleITK (nnU-Net's default reader for ``.nii.gz`` / ``.nii``) decodes a NIfTI file cut short after its header
without an error and fills the missing voxels with zeros, so a truncated download is preprocessed and trained on.
``.mha`` / ``.nrrd`` / ``.png`` / ``.tif`` readers do raise on truncation, but formats that keep floating-point voxels
can hold NaN / Inf, which nnU-Net's normalisation spreads over the whole case.

What "complete" means, per format:

- NIfTI (``.nii.gz``, ``.nii``): the header is parsed with nibabel
  (``nibabel.Nifti1Header`` / ``Nifti2Header``, header only); a gzip file is decoded to its end with Python's
  :mod:`gzip` module, which verifies the stream's end marker, CRC-32 and length (a cut anywhere, even of the last
  8 bytes, raises ``EOFError`` / ``gzip.BadGzipFile``); the decoded (or, uncompressed, the on-disk) size must hold the
  data the header promises (``vox_offset`` + voxels x bytes per voxel); float voxels must be finite.
- Every other format: read completely with the dataset's own nnU-Net reader (``read_images``), which raises on a
  truncated file for these formats; the voxels (float32 after nnU-Net's reader) must be finite.

Results of files that passed are cached in a JSON file keyed by (absolute path, size, modification time in ns), so a
later run re-checks only new or changed files; problems are never cached, and the cache is written only once the
whole input was accepted. Files are checked by a thread pool (zlib,
numpy and ITK's readers do their work outside the GIL).
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from os.path import abspath, isfile

import nibabel
import numpy as np

# bump when the checks change, so that older cache entries are not trusted
CHECK_VERSION = 2
CACHE_FILE_NAME = ".pick_file_checks.json"
_NIFTI_ENDINGS = (".nii.gz", ".nii")


def _nifti_header(head: bytes):
    """nibabel's NIfTI-1 or NIfTI-2 header from the first bytes of a file (raises ValueError if neither)."""
    for header_class in (nibabel.Nifti1Header, nibabel.Nifti2Header):
        size = header_class.template_dtype.itemsize
        if len(head) < size:
            continue
        try:
            header = header_class.from_fileobj(_BytesReader(head[:size]), check=True)
        except Exception:  # noqa: BLE001 (nibabel raises several types for a non-matching header)
            continue
        return header
    raise ValueError("no valid NIfTI-1 or NIfTI-2 header")


class _BytesReader:
    """The minimal file object nibabel's ``from_fileobj`` reads a header from."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        out, self._pos = self._data[self._pos:end], min(end, len(self._data))
        return out


def _check_nifti(path: str) -> str | None:
    """Problem with a NIfTI file (see the module docstring), or None."""
    compressed = path.endswith(".gz")
    try:
        if compressed:
            with gzip.open(path, "rb") as f:
                content = f.read()  # to the end: end marker, CRC-32 and length are verified by the gzip module
        else:
            with open(path, "rb") as f:
                content = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        return (f"incomplete or corrupt {'gzip stream' if compressed else 'file'} ({type(e).__name__}: {e}); the "
                f"file was cut short (interrupted download or copy, full disk) or damaged")
    try:
        header = _nifti_header(content[:540])
    except ValueError as e:
        return f"not a NIfTI file ({e})"
    shape = header.get_data_shape()
    dtype = header.get_data_dtype()
    offset = int(header.get_data_offset())
    n_voxels = int(np.prod(shape, dtype=np.int64))
    promised = offset + n_voxels * dtype.itemsize
    if len(content) < promised:
        what = "decompressed data" if compressed else "file"
        return (f"the header promises {promised} bytes ({'x'.join(map(str, shape))} voxels of {dtype} from byte "
                f"{offset}) but the {what} holds only {len(content)} ({100 * len(content) / promised:.1f} %); the file "
                f"was cut short")
    if dtype.kind in "fc":
        voxels = np.frombuffer(content, dtype=dtype, count=n_voxels, offset=offset)
        return _nonfinite_problem(voxels)
    return None


def _nonfinite_problem(voxels: np.ndarray) -> str | None:
    finite = np.isfinite(voxels)
    if finite.all():
        return None
    n_bad = int(finite.size - np.count_nonzero(finite))
    return (f"{n_bad} of {finite.size} voxels are NaN or infinite ({100 * n_bad / finite.size:.1f} %); nnU-Net's "
            f"normalisation would turn the whole case into NaN")


def check_image_file(path: str, reader_class: Callable | None = None) -> str | None:
    """Check that one image (or segmentation) file is complete and its voxels finite.

    Args:
        path: the file.
        reader_class: nnU-Net reader/writer class (``BaseReaderWriter`` subclass) for formats other than NIfTI; from
            :func:`nnunetv2.imageio.reader_writer_registry.determine_reader_writer_from_file_ending` if None.

    Returns:
        None if the file is fine, else a sentence saying what is wrong (without the path or a fix; callers add both).
    """
    if not isfile(path):
        return "file not found"
    if path.endswith(_NIFTI_ENDINGS):
        return _check_nifti(path)
    try:
        if reader_class is None:
            from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

            reader_class = determine_reader_writer_from_file_ending(os.path.splitext(path)[1], None, verbose=False)
        data, _ = reader_class().read_images([path])
    except Exception as e:  # noqa: BLE001 (any reader error means the file cannot be used)
        return f"cannot be read completely ({type(e).__name__}: {_short_reason(str(e))})"
    return _nonfinite_problem(np.asarray(data))


def _short_reason(message: str) -> str:
    """The informative line of a reader's (often multi-line ITK) error message."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    for line in lines:
        if "ERROR" in line:
            return line.rsplit("): ", 1)[-1]
    return lines[-1] if lines else ""


def _signature(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


class FileCheckCache:
    """Paths that passed :func:`check_image_file`, keyed by (absolute path, size, mtime), in a JSON file.

    Args:
        cache_file: the JSON file (need not exist); None keeps nothing between runs.
    """

    def __init__(self, cache_file: str | None) -> None:
        self.cache_file = cache_file
        self.entries: dict[str, list[int]] = {}
        if cache_file and isfile(cache_file):
            try:
                with open(cache_file, encoding="utf-8") as f:
                    content = json.load(f)
                if content.get("version") == CHECK_VERSION:
                    self.entries = dict(content.get("passed", {}))
            except (OSError, ValueError, AttributeError):
                self.entries = {}  # an unreadable cache only means re-checking

    def passed(self, path: str) -> bool:
        """True if ``path`` passed before and its size and modification time are unchanged."""
        try:
            return self.entries.get(abspath(path), [None, None])[:2] == _signature(path)
        except OSError:
            return False

    def add(self, path: str, label_values: list[int] | None = None) -> None:
        entry = _signature(path)
        self.entries[abspath(path)] = entry if label_values is None else [*entry, label_values]

    def label_values(self, path: str) -> list[int] | None:
        """The distinct values stored for a segmentation file that passed (None if not stored)."""
        entry = self.entries.get(abspath(path), [])
        return entry[2] if len(entry) > 2 and self.passed(path) else None

    def save(self) -> None:
        """Write the cache atomically (temporary file + rename); a no-op without a cache file."""
        if not self.cache_file:
            return
        partial = f"{self.cache_file}.{os.getpid()}.partial"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump({"version": CHECK_VERSION, "passed": self.entries}, f)
        os.replace(partial, self.cache_file)


def label_values(path: str, reader_class: Callable | None = None) -> list[int]:
    """Sorted distinct values of a segmentation file, read with nnU-Net's reader (``read_seg``)."""
    if reader_class is None:
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending

        ending = ".nii.gz" if path.endswith(".nii.gz") else os.path.splitext(path)[1]
        reader_class = determine_reader_writer_from_file_ending(ending, None, verbose=False)
    seg, _ = reader_class().read_seg(path)
    return [int(v) for v in np.unique(seg)]


def check_image_files(paths: Iterable[str], cache: FileCheckCache, num_threads: int | None = None,
                      reader_class: Callable | None = None,
                      segmentations: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Check many files with :func:`check_image_file`, skipping those that passed unchanged before.

    Files that pass are added to ``cache`` in memory; the caller writes it (``cache.save()``) once it accepts the
    whole input, so a refusal writes nothing.

    Args:
        paths: files to check.
        cache: files that passed before (:class:`FileCheckCache`).
        num_threads: parallel checks (default: nnU-Net's ``default_num_processes``).
        reader_class: nnU-Net reader for non-NIfTI files (see :func:`check_image_file`).
        segmentations: those of ``paths`` that are segmentations: their distinct values are read too
            (:func:`label_values`; kept in the cache with the file's entry).

    Returns:
        ``(problems, values)``: {path: problem} for the files with a problem (empty if all are fine); {path: sorted
        distinct values} for every segmentation that passed.
    """
    from nnunetv2.configuration import default_num_processes

    segmentations = set(segmentations)
    todo = [p for p in dict.fromkeys(paths) if not cache.passed(p) or (p in segmentations and
                                                                       cache.label_values(p) is None)]

    def check(path: str) -> tuple[str | None, list[int] | None]:
        problem = check_image_file(path, reader_class)
        if problem is not None or path not in segmentations:
            return problem, None
        try:
            return None, label_values(path, reader_class)
        except Exception as e:  # noqa: BLE001 (any reader error means the file cannot be used)
            return f"cannot be read as a segmentation ({type(e).__name__}: {_short_reason(str(e))})", None

    problems: dict[str, str] = {}
    if todo:
        workers = max(1, min(num_threads or default_num_processes, len(todo)))
        with ThreadPoolExecutor(workers) as pool:
            for path, (problem, values) in zip(todo, pool.map(check, todo), strict=True):
                if problem is None:
                    cache.add(path, values)
                else:
                    problems[path] = problem
    values = {p: cache.label_values(p) for p in segmentations if p not in problems}
    return problems, values
