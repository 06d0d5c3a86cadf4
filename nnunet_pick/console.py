"""Console output that survives ASCII-only terminals and CI runners (``LC_ALL=C``, ``PYTHONUTF8=0``).

Reports keep their typography (``±``, ``Δ``, ``λ``) in the UTF-8 files they write; on a console whose encoding
cannot show a character, :func:`print_text` prints an ASCII spelling instead of failing with
``UnicodeEncodeError`` after the work is done.
"""

from __future__ import annotations

import sys
from typing import TextIO

ASCII_SPELLING = str.maketrans({"±": "+/-", "Δ": "delta ", "λ": "lambda", "×": "x", "−": "-", "–": "-", "…": "..."})


def print_text(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` to ``stream`` (default ``sys.stdout``); characters the stream's encoding lacks are spelled in
    ASCII (``ASCII_SPELLING``), anything still unencodable becomes ``?``. Never raises ``UnicodeEncodeError``."""
    stream = stream or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.translate(ASCII_SPELLING).encode(encoding, errors="replace").decode(encoding)
    print(text, file=stream, flush=True)
