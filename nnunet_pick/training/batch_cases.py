"""Which cases a training step used, so that a skipped step's warning can name them (issue 11).

nnU-Net's ``nnUNetDataLoader`` puts the case ids of a batch under ``batch['keys']``; the augmenters pass the dict on.
"""

from __future__ import annotations


def case_ids(batch) -> list[str] | None:
    """The case ids of a batch dict (``'keys'``), or None if it carries none."""
    keys = batch.get("keys") if isinstance(batch, dict) else None
    return None if keys is None else [str(k) for k in keys]


class CaseRecordingLoader:
    """Wraps a batch iterator (nnU-Net augmenter) and remembers the case ids of the last batch it returned.

    Attributes other than ``loader`` / ``last_cases`` are the wrapped loader's (e.g. ``_finish``).
    """

    def __init__(self, loader) -> None:
        self.loader = loader
        self.last_cases: list[str] | None = None

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.loader)
        self.last_cases = case_ids(batch)
        return batch

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (e.g. during copying): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
