"""nnU-Net finds the PICK trainers with no set-up, next to a user's own external trainers."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

LOOKUP = textwrap.dedent("""
    import pickle, sys
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    for name in sys.argv[1:]:
        cls = recursive_find_trainer_class_by_name(name)
        if name.startswith("nnUNetTrainerPICK"):  # importable by name after the lookup (spawn workers, DDP ranks)
            assert pickle.loads(pickle.dumps(cls)) is cls
        print("FOUND", name, cls.__module__)
""")


def fresh_python(args: list[str], **env_changes: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    for k, v in env_changes.items():
        if v is not None:
            env[k] = v
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)


def test_fresh_interpreter_registers_the_trainer_folder():
    proc = fresh_python(["-c", "import os; print(os.environ['nnUNet_extTrainer'])"])
    assert proc.returncode == 0, proc.stderr
    folder = Path(proc.stdout.strip())
    assert (folder / "nnunet_pick_trainers_index.py").is_file()


def test_nnunet_finds_pick_trainers_and_a_users_own_trainer(tmp_path):
    user_pkg = tmp_path / "my_trainers"
    user_pkg.mkdir()
    (user_pkg / "__init__.py").write_text("", encoding="utf-8")
    (user_pkg / "mine.py").write_text(textwrap.dedent("""
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        class nnUNetTrainerMine(nnUNetTrainer):
            pass
    """), encoding="utf-8")
    proc = fresh_python(["-c", LOOKUP, "nnUNetTrainerMine", "nnUNetTrainerPICK", "nnUNetTrainerPICK_5epochs",
                         "nnUNetTrainerPICK_lambda1p2"], nnUNet_extTrainer=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = [line.split() for line in proc.stdout.splitlines() if line.startswith("FOUND")]
    assert found == [["FOUND", "nnUNetTrainerMine", "my_trainers.mine"],
                     ["FOUND", "nnUNetTrainerPICK", "nnunet_pick.training.trainer"],
                     ["FOUND", "nnUNetTrainerPICK_5epochs", "nnunet_pick.training.variants"],
                     ["FOUND", "nnUNetTrainerPICK_lambda1p2", "nnunet_pick.training.variants"]]


def test_variant_settings():
    from nnunet_pick import nnUNetTrainerPICK, nnUNetTrainerPICK_1epoch, nnUNetTrainerPICK_lambda0p2
    from nnunet_pick.training.variants import TRAINERS

    assert issubclass(nnUNetTrainerPICK_lambda0p2, nnUNetTrainerPICK)
    assert nnUNetTrainerPICK_lambda0p2.pick_settings == {"lambda_mim": 0.2}
    assert nnUNetTrainerPICK_1epoch.pick_settings == {"num_epochs": 1}
    lengths = sorted(c.pick_settings["num_epochs"] for n, c in TRAINERS.items() if n.endswith(("epoch", "epochs")))
    assert lengths == [1, 5, 10, 20, 50, 100, 250, 500]
    # the fine-tuning control is nnU-Net's trainer (no PICK branches) with PICK_finetune's learning rate and length
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    control, pick_ft = TRAINERS["nnUNetTrainer_finetune"], TRAINERS["nnUNetTrainerPICK_finetune"]
    assert issubclass(control, nnUNetTrainer) and not issubclass(control, nnUNetTrainerPICK)
    assert control.pick_settings == {k: pick_ft.pick_settings[k] for k in ("initial_lr", "num_epochs")}
    assert TRAINERS["nnUNetTrainerPICK_startDice0p5Rampup"].pick_settings == {
        **TRAINERS["nnUNetTrainerPICK_startDice0p5"].pick_settings, **TRAINERS["nnUNetTrainerPICK_rampup"].pick_settings}
    import nnunet_pick

    with pytest.raises(AttributeError, match="no attribute 'nnUNetTrainerPICK_unknown'"):
        nnunet_pick.nnUNetTrainerPICK_unknown  # noqa: B018


def test_nnunetv2_installation_is_unmodified():
    """Every file of nnunetv2's wheel still has the hash pip recorded (nothing patched by this plugin)."""
    dist = metadata.distribution("nnunetv2")
    checked = 0
    for f in dist.files:
        if f.hash is None or f.suffix == ".pyc":
            continue
        digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, f.locate().read_bytes()).digest()).rstrip(b"=")
        assert digest.decode() == f.hash.value, f"{f} differs from the installed nnunetv2 wheel"
        checked += 1
    assert checked > 100
