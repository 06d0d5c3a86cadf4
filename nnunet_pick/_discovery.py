"""Make nnU-Net find the PICK trainers with no set-up (add our ``trainers/`` folder to ``nnUNet_extTrainer``), and
find planners by name for ``nnUNetv2_pick_plan_experiment`` (our ``planners/`` folder and ``nnUNet_extPlanner``).

nnU-Net 2.8 looks up ``-tr NAME`` (for ``nnUNetv2_train``, ``--c``, ``--val``, DDP ranks and ``nnUNetv2_predict``)
in its own package first and then in each folder listed in the environment variable ``nnUNet_extTrainer``
(``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``). This module runs at every interpreter
start-up of the environment nnunet-pick is installed in (through the ``nnunet_pick.pth`` file the wheel puts in
``site-packages``) and appends the folder holding the thin ``trainers/`` module to that variable. A user's own value
is kept first, so their trainers keep working and take precedence. Nothing of nnU-Net is modified, and
``pip uninstall nnunet-pick`` removes the ``.pth`` file with the package.

nnU-Net has no such variable for planners (``nnUNetv2_plan_experiment -pl`` searches its own package only), so
nnunet-pick's planning command does the same search itself, with nnU-Net's class lookup, over the folders of
``nnUNet_extPlanner`` (a user's own planners, first) and then the folder of the thin ``planners/`` module
(:func:`find_planner`).

At start-up it imports only ``os`` and ``pathlib``: it must stay cheap, since it runs for every Python process.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "nnUNet_extTrainer"
#: folder name of the discovered trainer modules: in a wheel beside the package, in a source checkout ``trainers/``
INSTALLED_NAME = "nnunet_pick_trainers"
SOURCE_NAME = "trainers"
#: nnunet-pick's counterpart of nnUNet_extTrainer for planners: folders (os.pathsep-separated) with a user's planners
PLANNER_ENV_VAR = "nnUNet_extPlanner"
#: folder of the planner module: in a wheel beside the package, in a source checkout ``planners/``
PLANNER_INSTALLED_NAME = "nnunet_pick_planners"
PLANNER_SOURCE_NAME = "planners"


def _installed_folder(installed_name: str, source_name: str, kind: str) -> Path:
    """``site-packages/<installed_name>`` (wheel) or ``<checkout>/<source_name>`` (source checkout, editable).

    Raises:
        FileNotFoundError: if neither holds ``<installed_name>_index.py`` (a broken installation).
    """
    root = Path(__file__).resolve().parent.parent
    for name in (installed_name, source_name):
        candidate = root / name
        if (candidate / f"{installed_name}_index.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"nnunet-pick's {kind} folder is missing (looked for {root / installed_name} and {root / source_name}); "
        f"reinstall with 'pip install --force-reinstall nnunet-pick'.")


def trainer_folder() -> Path:
    """The folder nnU-Net must search: ``site-packages/nnunet_pick_trainers`` or ``<checkout>/trainers``.

    Raises:
        FileNotFoundError: if neither exists (a broken installation).
    """
    return _installed_folder(INSTALLED_NAME, SOURCE_NAME, "trainer")


def planner_folder() -> Path:
    """The folder of the PICK planners' module: ``site-packages/nnunet_pick_planners`` or ``<checkout>/planners``.

    Raises:
        FileNotFoundError: if neither exists (a broken installation).
    """
    return _installed_folder(PLANNER_INSTALLED_NAME, PLANNER_SOURCE_NAME, "planner")


def planner_search_path(environ: os._Environ | dict = os.environ) -> list[str]:
    """The folders :func:`find_planner` searches, in order: those of ``nnUNet_extPlanner``, then
    :func:`planner_folder` (as ``nnUNet_extTrainer`` lists a user's trainer folders before ours)."""
    folders = [p for p in environ.get(PLANNER_ENV_VAR, "").split(os.pathsep) if p.strip()]
    return [*folders, str(planner_folder())]


def find_planner(name: str, environ: os._Environ | dict = os.environ) -> type:
    """The PICK planner class called ``name``, looked up like nnU-Net looks up ``-tr`` in ``nnUNet_extTrainer``.

    Each folder of :func:`planner_search_path` is searched with nnU-Net's
    ``nnunetv2.utilities.find_class_by_name.recursive_find_python_class`` (modules of the folder, then its
    packages; the folder is put on ``sys.path`` for the import). The first match wins.

    Returns:
        The class: ``nnunet_pick.planning.PICKPlannerMixin`` and nnU-Net's ``ExperimentPlanner`` are among its bases.

    Raises:
        LookupError: no folder has a class of that name, or the class found is not a PICK planner (each message
            names the folders or the module file, and what to do).
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from nnunet_pick.planning import PLANNERS, PICKPlannerMixin

    folders = planner_search_path(environ)
    for folder in folders:
        if not os.path.isdir(folder):
            raise LookupError(f"{PLANNER_ENV_VAR} lists {folder}, which is not a folder; set {PLANNER_ENV_VAR} to "
                              f"the folder that holds your planner module (or package)")
        cls = recursive_find_python_class(folder, name, None, base_folder=folder)
        if cls is None:
            continue
        if not (isinstance(cls, type) and issubclass(cls, PICKPlannerMixin) and issubclass(cls, ExperimentPlanner)):
            import inspect

            where = inspect.getsourcefile(cls) if isinstance(cls, type) else folder
            raise LookupError(f"{name} (in {where}) is not a PICK planner: subclass one of {', '.join(PLANNERS)} "
                              f"(from nnunet_pick.planning); nnU-Net's own planners run with nnUNetv2_plan_experiment")
        return cls
    raise LookupError(f"no planner {name} in {os.pathsep.join(folders)}; the PICK planners are "
                      f"{', '.join(PLANNERS)}; for your own planner (a subclass of one of them), set "
                      f"{PLANNER_ENV_VAR} to the folder that holds its module")


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
