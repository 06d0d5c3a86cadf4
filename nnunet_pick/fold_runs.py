"""Train one nnU-Net fold to completion with nnU-Net's own ``nnUNetv2_train``, resuming whatever a kill left.

The state of a fold folder decides the command (the same rule nnU-Net's own flags encode):

- ``checkpoint_final.pth`` and ``validation/summary.json``: nothing to do;
- ``checkpoint_final.pth`` only (killed during the final validation): ``--val``;
- ``checkpoint_latest.pth`` (killed during training): ``--c``, which continues from the latest checkpoint;
- nothing: train from the start.

Used by the self-training recipe (teacher and student), the benchmark driver and the accuracy protocol.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from os.path import isfile, join

from nnunet_pick.subprocesses import installed_command, run_logged


def model_folder(results_root: str, dataset_name: str, trainer: str, plans: str, configuration: str) -> str:
    """nnU-Net's model folder ``<results>/<Dataset>/<trainer>__<plans>__<configuration>`` (as
    ``nnunetv2.utilities.file_path_utilities.get_output_folder``)."""
    return join(results_root, dataset_name, f"{trainer}__{plans}__{configuration}")


def fold_state(fold_folder: str) -> str:
    """``"done"``, ``"validate"``, ``"continue"`` or ``"train"`` (see the module docstring)."""
    if isfile(join(fold_folder, "checkpoint_final.pth")):
        return "done" if isfile(join(fold_folder, "validation", "summary.json")) else "validate"
    return "continue" if isfile(join(fold_folder, "checkpoint_latest.pth")) else "train"


FLAGS = {"train": [], "continue": ["--c"], "validate": ["--val"]}


def train_fold(dataset_id: str, configuration: str, fold: int, trainer: str, plans: str, *, fold_folder: str,
               env: dict[str, str], log: str, device: str = "cuda", seed: int | None = None,
               settings: dict | None = None, extra_args: Sequence[str] = ()) -> str:
    """Bring one fold to ``done`` with ``nnUNetv2_train`` (or, with ``seed``, through
    :mod:`nnunet_pick.benchmark.seeded_train`, which seeds and applies ``settings`` first).

    Args:
        dataset_id: nnU-Net dataset id or name.
        configuration / fold / trainer / plans: as ``nnUNetv2_train``'s positional arguments, ``-tr`` and ``-p``.
        fold_folder: where nnU-Net writes this fold (``model_folder(...)/fold_<fold>``); decides the flags.
        env: environment of the subprocess (``nnUNet_results`` must point where ``fold_folder`` is).
        log: file the command's output is appended to.
        device: ``-device``.
        seed: seed for :mod:`nnunet_pick.benchmark.seeded_train`; None runs the installed ``nnUNetv2_train``.
        settings: trainer attributes for ``seeded_train --settings`` (needs ``seed``).
        extra_args: more ``nnUNetv2_train`` arguments (e.g. ``-pretrained_weights``).

    Returns:
        The state found before running (``"done"`` means nothing ran).

    Raises:
        RuntimeError: if nnU-Net fails (with the end of ``log``).
        ValueError: for ``settings`` without ``seed``.
    """
    state = fold_state(fold_folder)
    if state == "done":
        return state
    if seed is None:
        if settings:
            raise ValueError("trainer settings need a seed (they are applied by seeded_train)")
        command = [installed_command("nnUNetv2_train")]
    else:
        command = [sys.executable, "-m", "nnunet_pick.benchmark.seeded_train", str(seed)]
        if settings:
            command += ["--settings", json.dumps(settings, sort_keys=True)]
    run_logged([*command, str(dataset_id), configuration, str(fold), "-tr", trainer, "-p", plans,
                "-device", device, *FLAGS[state], *extra_args], env, log)
    return state
