"""Running nnU-Net's own commands as subprocesses, the way users run them (for the demo and the benchmark)."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
