"""Export a trained PICK model as a plain nnU-Net model folder that runs where nnunet-pick is not installed.

PICK's inference network is exactly nnU-Net's network of the same plans (encoder + primary decoder), so the exported
checkpoint keeps only the ``encoder.*`` and ``decoder.*`` weights and names ``nnUNetTrainer`` as its trainer:
nnU-Net's predictor then rebuilds the stock network and loads it strictly (nnU-Net's own documented way to share
models of custom trainers with an unmodified architecture). The exported checkpoints hold tensors and plain Python
values only, so ``torch.load(..., weights_only=True)`` reads them; the PICK checkpoints are read the same way (numpy
scalars in nnU-Net's logging are the only non-tensor objects allowed), never by unpickling arbitrary objects.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

#: what nnU-Net's own checkpoints contain besides tensors and Python values (numpy scalars in the logged curves)
_NNUNET_CHECKPOINT_GLOBALS = [np._core.multiarray.scalar, np.dtype,
                              *{type(np.dtype(t)) for t in ("f4", "f8", "i4", "i8", "b1")}]
PRIMARY_PREFIXES = ("encoder.", "decoder.")


def load_checkpoint_weights_only(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)`` that also accepts the numpy scalars nnU-Net puts into checkpoints.

    Raises:
        pickle.UnpicklingError: if the file holds anything else (it is not unpickled).
    """
    with torch.serialization.safe_globals(_NNUNET_CHECKPOINT_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def _plain(value):
    """Numpy scalars -> Python values, recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def export_plain_nnunet(model_folder: str | os.PathLike, output_folder: str | os.PathLike,
                        checkpoints: tuple[str, ...] = ("checkpoint_final.pth",)) -> Path:
    """Write ``<output_folder>/nnUNetTrainer__<plans>__<configuration>/`` from a PICK model folder.

    Args:
        model_folder: ``.../<PICK trainer>__<plans>__<configuration>`` with ``plans.json``, ``dataset.json`` and
            ``fold_X/<checkpoint>``.
        output_folder: where the exported model folder is created.
        checkpoints: checkpoint file names to export from every fold that has them.

    Returns:
        The exported model folder.

    Raises:
        FileNotFoundError: if the plans, dataset.json or any fold checkpoint is missing.
        ValueError: if the folder is not a trainer__plans__configuration folder or a checkpoint lacks the primary
            network's weights.
    """
    model_folder = Path(model_folder)
    parts = model_folder.name.split("__")
    if len(parts) != 3:
        raise ValueError(f"{model_folder} is not an nnU-Net model folder (<trainer>__<plans>__<configuration>)")
    _, plans_name, configuration = parts
    for name in ("plans.json", "dataset.json"):
        if not (model_folder / name).is_file():
            raise FileNotFoundError(f"{model_folder / name} missing: not a trained nnU-Net model folder")
    folds = sorted(p for p in model_folder.glob("fold_*") if any((p / c).is_file() for c in checkpoints))
    if not folds:
        raise FileNotFoundError(f"No fold_*/{' or '.join(checkpoints)} in {model_folder}")
    out = Path(output_folder) / f"nnUNetTrainer__{plans_name}__{configuration}"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (model_folder / name).is_file():
            shutil.copy(model_folder / name, out / name)
    for fold in folds:
        (out / fold.name).mkdir(exist_ok=True)
        for name in checkpoints:
            if not (fold / name).is_file():
                continue
            ckpt = load_checkpoint_weights_only(fold / name)
            weights = {k: v for k, v in ckpt["network_weights"].items() if k.startswith(PRIMARY_PREFIXES)}
            if not any(k.startswith("decoder.") for k in weights):
                raise ValueError(f"{fold / name} has no decoder.* weights; is it a PICK or nnU-Net checkpoint?")
            init_args = ckpt["init_args"]
            exported = {
                "network_weights": weights,
                "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": _plain(init_args["plans"]), "configuration": init_args["configuration"],
                              "fold": _plain(init_args["fold"]), "dataset_json": _plain(init_args["dataset_json"]),
                              "device": "cpu"},
                "inference_allowed_mirroring_axes": _plain(ckpt.get("inference_allowed_mirroring_axes")),
                "current_epoch": int(ckpt["current_epoch"]),
                "exported_from": json.dumps({"trainer_name": ckpt["trainer_name"], "folder": str(model_folder)}),
            }
            tmp = out / fold.name / (name + ".partial")
            torch.save(exported, tmp)
            os.replace(tmp, out / fold.name / name)
    return out
