"""Were a checkpoint's plans the current ones? (``nnUNetv2_train ... --c`` / ``--val`` after the plans were edited.)

nnU-Net stores the plans a run was started with in every checkpoint (``checkpoint['init_args']['plans']``, the
trainer's constructor arguments) but never compares them with the plans file when it continues. What is compared here
is everything that decides the network and its input: the trained configuration after nnU-Net's ``inherits_from``
resolution (``PlansManager.get_configuration``), and the plans' global entries (spacing, transpose, intensity
statistics used for normalisation, reader/writer, ...). Other configurations and ``continue_training`` (a flag nnU-Net
itself sets in the dict) are not part of the comparison, so adding a configuration to the plans is no change.
"""

from __future__ import annotations

from os.path import join

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

_NOT_COMPARED = ("configurations", "continue_training")
_MISSING = object()


def _differences(old, new, where: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _differences(old.get(key, _MISSING), new.get(key, _MISSING), f"{where}.{key}" if where else str(key), out)
    elif isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new) and \
            any(isinstance(o, (dict, list, tuple)) for o in old):
        for i, (o, n) in enumerate(zip(old, new, strict=True)):
            _differences(o, n, f"{where}[{i}]", out)
    elif _plain(old) != _plain(new):
        out.append(f"{where}: {'(absent)' if old is _MISSING else repr(old)} in the checkpoint, "
                   f"{'(absent)' if new is _MISSING else repr(new)} now")


def _plain(value):
    """Tuples and lists compare equal (JSON has only lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plans_differences(saved_plans: dict, current_plans: dict, configuration: str) -> list[str]:
    """What differs between the plans a checkpoint was trained with and the current ones, for one configuration.

    Args:
        saved_plans: ``checkpoint['init_args']['plans']``.
        current_plans: the plans the trainer was constructed with now.
        configuration: the trained configuration.

    Returns:
        One line per differing entry (``configurations.2d.architecture.arch_kwargs.nonlin: ... in the checkpoint, ...
        now``); empty if nothing that matters changed.
    """
    out: list[str] = []
    _differences({k: v for k, v in saved_plans.items() if k not in _NOT_COMPARED},
                 {k: v for k, v in current_plans.items() if k not in _NOT_COMPARED}, "", out)
    try:
        saved_configuration = PlansManager(saved_plans).get_configuration(configuration).configuration
    except ValueError:
        saved_configuration = _MISSING  # the checkpoint's plans do not have this configuration at all
    current_configuration = PlansManager(current_plans).get_configuration(configuration).configuration
    _differences(saved_configuration, current_configuration, f"configurations.{configuration}", out)
    return out


def refuse_changed_plans(differences: list[str], checkpoint: str, plans_name: str, preprocessed_base: str,
                         results_folder: str, configuration: str) -> None:
    """Raise the ``ValueError`` that says what differs and the two ways out.

    Raises:
        ValueError: always.
    """
    shown = differences[:15]
    more = f"\n  ... and {len(differences) - 15} more" if len(differences) > 15 else ""
    raise ValueError(
        f"{checkpoint} was trained with other plans than the current {join(preprocessed_base, plans_name + '.json')} "
        f"(configuration {configuration!r}):\n  " + "\n  ".join(shown) + more + "\n"
        f"Continuing (--c) or validating (--val) would use a different network than the one trained, and every later "
        f"prediction would change too. Nothing was loaded or written. Either restore the plans file (the plans of "
        f"this training are in {join(results_folder, 'plans.json')}), or keep the edited plans under a new plans "
        f"name (save them as {join(preprocessed_base, plans_name + 'Edited.json')} with \"plans_name\": "
        f"\"{plans_name}Edited\") and train from scratch with -p {plans_name}Edited.")
