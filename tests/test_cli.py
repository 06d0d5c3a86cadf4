"""Every console script of nnunet-pick is importable and answers --help; the demo's dataset builder."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from nnunet_pick import demo

SCRIPTS = sorted(ep.name for ep in metadata.distribution("nnunet-pick").entry_points if ep.group == "console_scripts")


def test_expected_commands_are_installed():
    assert {"nnUNetv2_pick_preprocess_unlabeled", "nnUNetv2_pick_demo"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    proc = subprocess.run([str(Path(sys.executable).parent / script), "--help"], capture_output=True,
                          encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert script in proc.stdout


def test_preprocess_unlabeled_reports_missing_plans(tmp_path, monkeypatch):
    from nnunet_pick.cli.preprocess_unlabeled import main

    (tmp_path / "raw" / "Dataset993_X").mkdir(parents=True)
    (tmp_path / "pre" / "Dataset993_X").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    assert main(["-d", "993", "-c", "3d_fullres"]) == 1


def test_demo_dataset_roles_and_split(tmp_path):
    roles = demo.build_dataset(tmp_path)
    folder = tmp_path / demo.DATASET_NAME
    assert len(roles["labeled"]) == 12
    assert len(roles["unlabeled"]) == 22
    assert len(roles["test"]) == 6
    assert sorted(p.name for p in (folder / "imagesUnlabeled").iterdir()) == \
        sorted(f"{c}_0000.nii.gz" for c in roles["unlabeled"])
    assert len(list((folder / "labelsTr").iterdir())) == 12  # no label of an unlabeled or test case
    split = json.loads((folder / "splits_final.json").read_text(encoding="utf-8"))
    assert split == [{"train": roles["labeled"][:8], "val": roles["labeled"][8:]}]
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert "CC-BY-SA" in dataset_json["licence"]  # nnU-Net's spelling


def test_demo_refuses_a_foreign_workdir(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not made by nnUNetv2_pick_demo"):
        demo.prepare_workdir(tmp_path)
    assert (tmp_path / "precious.txt").read_text(encoding="utf-8") == "keep me"


class _ParsedError(Exception):
    """Raised instead of parsing, carrying the parser a command built."""


def _parser_of(script: str, monkeypatch) -> argparse.ArgumentParser:
    """The ArgumentParser that ``script``'s entry point builds (caught at parse_args, before any work)."""
    (entry,) = [ep for ep in metadata.distribution("nnunet-pick").entry_points
                if ep.group == "console_scripts" and ep.name == script]

    def catch(self, args=None, namespace=None):
        raise _ParsedError(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_ParsedError) as caught:
        entry.load()([])
    return caught.value.args[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_states_every_default(script, monkeypatch):
    """An option that has a default says it in its --help text (nnU-Net users look for -device, -p, -chk there)."""
    parser = _parser_of(script, monkeypatch)
    missing = [action.option_strings[0] for action in parser._actions
               if action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
               and "default" not in (action.help or "")]
    assert missing == [], f"{script}: --help of {missing} does not name the default"


def test_list_trainers_fits_120_columns_and_names_every_trainer(capsys):
    from nnunet_pick.cli.list_trainers import main
    from nnunet_pick.training.variants import TRAINERS

    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 120
    listed = [line.split()[0] for line in lines[1:] if not line.startswith(" ")]
    assert listed == list(TRAINERS)
    assert any("lambda_mim=0.2 -- " in line for line in lines)
