"""Running nnU-Net's own commands as subprocesses, the way users run them (for the demo and the benchmark)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path


def installed_command(name: str) -> str:
    """Path of a console script, from this interpreter's environment first, then ``PATH``.

    Raises:
        FileNotFoundError: if the command is not installed.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"Command {name} not found; install nnunetv2 and nnunet-pick into this environment.")
    return found


def run_logged(args: list[str], env: dict[str, str], log: str | Path, tail_lines: int = 40) -> None:
    """Run ``args`` with its output appended to ``log``.

    Raises:
        RuntimeError: if it exits non-zero; the message holds the command and the end of the log.
    """
    log = Path(log)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        proc = subprocess.run(args, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8").splitlines()[-tail_lines:]
        raise RuntimeError(f"{' '.join(args)} failed with exit code {proc.returncode}. Last lines of {log}:\n"
                           + "\n".join(tail))


def run_streamed(args: list[str], env: dict[str, str], log: str | Path, on_line: Callable[[str], bool],
                 on_silence: Callable[[float], None], *, silence_seconds: float = 45.0, tail_lines: int = 40) -> None:
    """Run ``args`` with its output appended to ``log`` and shown line by line to ``on_line`` while it runs.

    Args:
        args: the command.
        env: its environment (``PYTHONUNBUFFERED=1`` is added so that Python commands' lines arrive as printed).
        log: the file all of stdout and stderr is appended to.
        on_line: called with every output line (without the newline); returns True if it showed something.
        on_silence: called with the seconds since the command started whenever ``on_line`` has shown nothing for
            ``silence_seconds`` (so that a console never stays silent longer than that).
        silence_seconds: see ``on_silence``.
        tail_lines: lines of the log quoted in the error.

    Raises:
        RuntimeError: if it exits non-zero; the message holds the command and the end of the log.
    """
    log = Path(log)
    lines: queue.Queue[str | None] = queue.Queue()
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        proc = subprocess.Popen(args, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, encoding="utf-8", errors="replace")

        def read() -> None:  # a thread, so that silence is noticed while no line arrives
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        last_shown = start
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                f.write(line)
                f.flush()
                if on_line(line.rstrip("\n").split("\r")[-1]):
                    last_shown = time.monotonic()
            if time.monotonic() - last_shown >= silence_seconds:
                on_silence(time.monotonic() - start)
                last_shown = time.monotonic()
        returncode = proc.wait()
    if returncode != 0:
        tail = log.read_text(encoding="utf-8").splitlines()[-tail_lines:]
        raise RuntimeError(f"{' '.join(args)} failed with exit code {returncode}. Last lines of {log}:\n"
                           + "\n".join(tail))
