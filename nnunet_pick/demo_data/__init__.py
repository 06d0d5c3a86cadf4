"""Embedded real data for the demo and the tests (see ``Hippocampus/README.md`` for source and licence)."""

from pathlib import Path

HIPPOCAMPUS = Path(__file__).resolve().parent / "Hippocampus"
