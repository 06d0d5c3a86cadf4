"""The accuracy protocol's arithmetic: paired differences with a t confidence interval, and the gap closed.

Repeats are paired: repeat ``r`` of every arm uses the same labeled subset and the same seed, so the difference of
an arm to the labeled-only arm is taken per repeat and its mean gets Student's t interval over repeats (SciPy's
``scipy.stats.t``), which is what a paired t-test inverts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-repeat differences (arm - baseline) and its two-sided confidence interval, same unit as the
    inputs; ``n`` repeats present in both arms."""

    mean: float
    low: float
    high: float
    n: int


def paired_difference(arm: Mapping[int, float], baseline: Mapping[int, float],
                      confidence: float = 0.95) -> PairedDifference:
    """Difference arm - baseline over the repeats both have (repeat index -> value), with a t interval.

    With one common repeat the interval is (-inf, inf)... reported as NaN bounds; with none, all NaN.

    Raises:
        ValueError: if ``confidence`` is not in (0, 1).
    """
    from scipy.stats import t

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    common = sorted(set(arm) & set(baseline))
    d = np.array([arm[r] - baseline[r] for r in common], dtype=float)
    if d.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if d.size == 1:
        return PairedDifference(mean, math.nan, math.nan, 1)
    half = float(t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return PairedDifference(mean, mean - half, mean + half, int(d.size))


def gap_closed(arm_mean: float, labeled_only_mean: float, fully_supervised_mean: float) -> float:
    """(arm - labeled-only) / (fully supervised - labeled-only): 0 = no gain, 1 = as good as labeling everything.

    NaN when the gap is not positive (the ceiling is not above the baseline, so the ratio means nothing).
    """
    gap = fully_supervised_mean - labeled_only_mean
    if not gap > 0:
        return math.nan
    return (arm_mean - labeled_only_mean) / gap
