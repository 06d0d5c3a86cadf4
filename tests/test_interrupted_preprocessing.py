"""``nnUNetv2_pick_preprocess_unlabeled`` interrupted by several signals, to several processes, mid-write: the next run
(the command, or the trainer) always resumes and produces nnU-Net's preprocessing of every case (issue 11).

The interruption lives in a small launcher script (a user's wrapper, not the package): it wraps ``blosc2.asarray``,
the call nnU-Net's ``save_case`` writes a case's image array with, so that after writing one case's image it cuts the
file in half (as a kill mid-write leaves it) and sends the signal. With ``-np 2`` the spawn workers import the launcher
too, so the signal comes from inside a worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import blosc2
import numpy as np
import pytest
from helpers import DATASET_ID, DATASET_NAME, UNLABELED_RAW, base_env, make_trainer

from nnunet_pick import nnUNetTrainerPICK
from nnunet_pick.unlabeled.preprocess import _preprocess_case

pytestmark = pytest.mark.slow

LAUNCHER = textwrap.dedent("""
    import os
    import signal
    import sys

    import blosc2

    # Ctrl-C as in a terminal: a job started in the background by a non-interactive shell (CI runners, nohup ... &)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so SIGINT would do nothing
    signal.signal(signal.SIGINT, signal.default_int_handler)
    MODE = os.environ.get("PICK_TEST_INTERRUPT", "")  # SIGNAL:target:case, target = group | self | parent

    if MODE:
        SIGNAL, TARGET, CASE = MODE.split(":")
        real_asarray = blosc2.asarray

        def asarray_then_interrupt(array, *args, **kwargs):
            out = real_asarray(array, *args, **kwargs)
            path = str(kwargs.get("urlpath", ""))
            if os.path.basename(path) == CASE + ".b2nd":
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(size // 2)
                sig = getattr(signal, SIGNAL)
                if TARGET == "group":
                    os.killpg(os.getpgid(0), sig)
                elif TARGET == "parent":
                    os.kill(os.getppid(), sig)
                else:
                    os.kill(os.getpid(), sig)
            return out

        blosc2.asarray = asarray_then_interrupt

    if __name__ == "__main__":
        from nnunet_pick.cli.preprocess_unlabeled import main

        sys.exit(main())
""")


def run(launcher: Path, env: dict, interrupt: str, num_processes: int, log) -> int:
    """The command in its own process group; returns its exit status."""
    args = [sys.executable, str(launcher), "-d", str(DATASET_ID), "-c", "2d", "-np", str(num_processes)]
    proc = subprocess.Popen(args, env=dict(env, PICK_TEST_INTERRUPT=interrupt), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return proc.wait(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):  # leave no worker behind
            os.killpg(proc.pid, signal.SIGKILL)
        wait_until_group_is_gone(proc.pid)


def wait_until_group_is_gone(pgid: int, timeout: float = 120) -> None:
    """Wait until every process of the group has exited (zombies count as exited: they hold no locks). A killed
    worker on a loaded machine can outlive its main process by seconds, holding its attempt's lock until it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    alive = True
                    break
        if not alive:
            return
        time.sleep(0.2)


def test_interrupted_preprocessing_never_blocks_the_next_run(hippocampus, nnunet_dirs, tmp_path, monkeypatch):
    raw = tmp_path / "raw" / DATASET_NAME
    pre = tmp_path / "pre" / DATASET_NAME
    (raw / "imagesUnlabeled").mkdir(parents=True)
    pre.mkdir(parents=True)
    source = nnunet_dirs["nnUNet_raw"] / DATASET_NAME
    shutil.copytree(source / "imagesTr", raw / "imagesTr")
    shutil.copytree(source / "labelsTr", raw / "labelsTr")
    shutil.copy(source / "dataset.json", raw / "dataset.json")
    cases = UNLABELED_RAW[:4]
    for case in cases:
        shutil.copy(source / "imagesUnlabeled" / f"{case}_0000.nii.gz", raw / "imagesUnlabeled")
    for name in ("nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json", "splits_final.json"):
        shutil.copy(hippocampus / name, pre / name)
    shutil.copytree(hippocampus / "nnUNetPlans_2d", pre / "nnUNetPlans_2d")
    dirs = {"nnUNet_raw": tmp_path / "raw", "nnUNet_preprocessed": tmp_path / "pre",
            "nnUNet_results": tmp_path / "results"}
    env = base_env(dirs)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    out = pre / "nnUNetPlans_2d_unlabeled"

    # (signal, who gets it, worker processes, case being written); every run is followed by an uninterrupted one
    interruptions = [
        ("SIGKILL", "group", 2, cases[0]),  # a job scheduler kills the whole run mid-write
        ("SIGTERM", "self", 2, cases[1]),  # one worker is terminated (e.g. the OOM killer): no hang, a clear error
        ("SIGINT", "self", 1, cases[2]),  # Ctrl-C while the main process itself writes
        ("SIGKILL", "self", 1, cases[3]),  # the main process alone is killed
    ]
    with open(tmp_path / "runs.log", "ab") as log:
        for i, (sig, target, num_processes, case) in enumerate(interruptions):
            for done_case in cases:  # forget finished cases: every run has all four (two per worker) to write
                (out / f"{done_case}.pkl").unlink(missing_ok=True)
            status = run(launcher, env, f"{sig}:{target}:{case}", num_processes, log)
            log.flush()
            assert status != 0, f"{sig} to {target} did not interrupt the run; see {log.name}"
            assert (out / f"{case}.pkl").exists() is False
            if i == 0:
                # the trainer resumes from it as well (it runs the same preprocessing at start-up)
                monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
                monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
                monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
                make_trainer(nnUNetTrainerPICK, pre, "2d").ensure_unlabeled_preprocessed()
            else:
                assert run(launcher, env, "", 2, log) == 0, f"the run after {sig} to {target} failed; see {log.name}"
            assert sorted(p.name[:-4] for p in out.glob("*.pkl")) == cases, (sig, target)
            assert not (out / ".partial").exists(), (sig, target)  # abandoned attempts removed
    log_text = (tmp_path / "runs.log").read_text(encoding="utf-8", errors="replace")
    assert "A preprocessing worker process died" in log_text  # the SIGTERMed worker ended the run with an error

    # every case, however often it was interrupted, equals a clean preprocessing with nnU-Net's preprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(str(pre / "nnUNetPlans.json"))
    dataset_json = json.loads((pre / "dataset.json").read_text(encoding="utf-8"))
    clean = tmp_path / "clean"
    for case in cases:
        _preprocess_case(case, [str(raw / "imagesUnlabeled" / f"{case}_0000.nii.gz")], str(clean), pm,
                         pm.get_configuration("2d"), dataset_json)
        np.testing.assert_array_equal(blosc2.open(str(out / f"{case}.b2nd"), mode="r")[:],
                                      blosc2.open(str(clean / f"{case}.b2nd"), mode="r")[:])
