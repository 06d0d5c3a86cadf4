"""Make nnU-Net find the PICK trainers with no set-up: add our trainer folder to ``nnUNet_extTrainer``.

nnU-Net 2.8 looks up ``-tr NAME`` (for ``nnUNetv2_train``, ``--c``, ``--val``, DDP ranks and ``nnUNetv2_predict``)
in its own package first and then in each folder listed in the environment variable ``nnUNet_extTrainer``
(``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``). This module runs at every interpreter
start-up of the environment nnunet-pick is installed in (through the ``nnunet_pick.pth`` file the wheel puts in
``site-packages``) and appends the folder holding the thin ``trainers/`` module to that variable. A user's own value
is kept first, so their trainers keep working and take precedence. Nothing of nnU-Net is modified, and
``pip uninstall nnunet-pick`` removes the ``.pth`` file with the package.

It imports only ``os`` and ``pathlib``: it must stay cheap, since it runs for every Python process.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "nnUNet_extTrainer"
#: folder name of the discovered trainer modules: in a wheel beside the package, in a source checkout ``trainers/``
INSTALLED_NAME = "nnunet_pick_trainers"
SOURCE_NAME = "trainers"


def trainer_folder() -> Path:
    """The folder nnU-Net must search: ``site-packages/nnunet_pick_trainers`` or ``<checkout>/trainers``.

    Raises:
        FileNotFoundError: if neither exists (a broken installation).
    """
    root = Path(__file__).resolve().parent.parent
    for name in (INSTALLED_NAME, SOURCE_NAME):
        candidate = root / name
        if (candidate / "nnunet_pick_trainers_index.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"nnunet-pick's trainer folder is missing (looked for {root / INSTALLED_NAME} and {root / SOURCE_NAME}); "
        f"reinstall with 'pip install --force-reinstall nnunet-pick'.")


def register(environ: os._Environ | dict = os.environ) -> str:
    """Append :func:`trainer_folder` to ``nnUNet_extTrainer`` in ``environ`` unless it is already listed.

    Returns:
        The resulting value of the variable.
    """
    folder = str(trainer_folder())
    current = [p for p in environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    if folder not in current:
        current.append(folder)
    environ[ENV_VAR] = os.pathsep.join(current)
    return environ[ENV_VAR]


def register_at_startup() -> None:
    """Called from ``nnunet_pick.pth``: never let a start-up hook break the interpreter, say what went wrong."""
    try:
        register()
    except Exception as e:  # a .pth hook that raises would print a traceback for every Python process
        import sys

        print(f"nnunet-pick: could not register its trainers with nnU-Net ({e}); "
              f"set {ENV_VAR} to nnunet-pick's trainer folder by hand.", file=sys.stderr)
