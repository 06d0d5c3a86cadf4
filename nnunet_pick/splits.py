"""Label-fraction splits for semi-supervised benchmarks, in nnU-Net's ``splits_final.json`` format.

Each fold is ``{"train": [labeled ids], "val": [ids], "unlabeled": [ids]}``. Stock ``nnUNetTrainer`` reads only
``train`` and ``val``, so the labeled-only baseline trains on exactly the labeled cases PICK uses and validates on the
same cases; ``nnUNetTrainerPICK`` adds the ``unlabeled`` ones.

Two protocols:

- K-fold cross-validation (:func:`kfold_splits`): the cases are split into K folds with nnU-Net's own
  ``generate_crossval_split`` (scikit-learn ``KFold``, shuffled, seeded); in each fold the training part is shuffled
  with the same seed and its first ``n_labeled`` cases are labeled, the rest unlabeled.
- A fixed split (:func:`fixed_split`) as the SSL papers use it (e.g. Left Atrium: 80 train / 20 test, the first 8 or
  16 of ``train.list`` labeled): one fold, validation = the test ids, labeled = the first ``n_labeled`` ids of the
  given training list, in its order.

Rounding of a labeled fraction: ``n_labeled = floor(fraction * n_train + 0.5)`` (half up), at least 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from nnunetv2.utilities.crossval_split import generate_crossval_split


def labeled_count(n_train: int, *, fraction: float | None = None, number: int | None = None) -> int:
    """Number of labeled cases of a training part of ``n_train`` cases.

    Args:
        n_train: cases in the training part.
        fraction: labeled fraction in (0, 1]; rounded half up, at least 1.
        number: an absolute number instead.

    Raises:
        ValueError: if neither or both are given, or the result is not in [1, n_train].
    """
    if (fraction is None) == (number is None):
        raise ValueError("Give exactly one of a labeled fraction or a number of labeled cases.")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"labeled fraction must be in (0, 1], got {fraction}")
        number = max(1, math.floor(fraction * n_train + 0.5))
    if not 1 <= number <= n_train:
        raise ValueError(f"{number} labeled cases requested but the training part has {n_train} cases")
    return number


def kfold_splits(case_ids: Sequence[str], n_folds: int, *, seed: int = 12345, fraction: float | None = None,
                 number: int | None = None) -> list[dict[str, list[str]]]:
    """K-fold cross-validation with a labeled / unlabeled split of each fold's training part.

    Args:
        case_ids: every case id of the dataset (``imagesTr``).
        n_folds: K (at least 2).
        seed: seeds the fold assignment (nnU-Net's default 12345 gives nnU-Net's own 5 folds) and the choice of
            labeled cases.
        fraction / number: labeled fraction of each training part, or the number of labeled cases.

    Returns:
        K folds ``{"train", "val", "unlabeled"}``, ids sorted within each list.
    """
    ids = sorted(case_ids)
    folds = generate_crossval_split(ids, seed=seed, n_splits=n_folds)
    result = []
    for k, fold in enumerate(folds):
        train = sorted(fold["train"])
        n_lab = labeled_count(len(train), fraction=fraction, number=number)
        random.Random(seed + k).shuffle(train)
        result.append({"train": sorted(train[:n_lab]), "val": sorted(fold["val"]),
                       "unlabeled": sorted(train[n_lab:])})
    return result


def fixed_split(train_list: Sequence[str], test_ids: Sequence[str], *, fraction: float | None = None,
                number: int | None = None) -> list[dict[str, list[str]]]:
    """One fold: the first ``n_labeled`` ids of ``train_list`` (in its order) labeled, the rest unlabeled, the test ids
    as validation.

    Raises:
        ValueError: if an id is both a training and a test id.
    """
    both = sorted(set(train_list) & set(test_ids))
    if both:
        raise ValueError(f"ids in both the training list and the test ids: {both[:10]}")
    n_lab = labeled_count(len(train_list), fraction=fraction, number=number)
    return [{"train": list(train_list[:n_lab]), "val": sorted(test_ids), "unlabeled": list(train_list[n_lab:])}]


def fold_table(splits: list[dict[str, list[str]]]) -> str:
    """A plain-text table of the fold sizes."""
    lines = ["fold  labeled  unlabeled  val"]
    for k, s in enumerate(splits):
        lines.append(f"{k:>4}  {len(s['train']):>7}  {len(s.get('unlabeled', [])):>9}  {len(s['val']):>3}")
    return "\n".join(lines)
