"""Inference time and predictions of an exported model (``nnUNetv2_pick_export``) against its PICK model folder.

Used by ``nnUNetv2_pick_benchmark_export``. Both folders are loaded by nnU-Net's own ``nnUNetPredictor``
(``initialize_from_trained_model_folder``) in this process, the images are read once with the plans' reader
(``image_reader_writer``), and every case is predicted with ``predict_single_npy_array`` (nnU-Net's preprocessing,
sliding window with its Gaussian weighting and mirroring, resampling back to the image): the whole of what
``nnUNetv2_predict`` does per case except the file writes. The two models take turns, in alternating order from one
repeat to the next, so that drift of the machine affects both alike; the first repeat is untimed (lazy
initialisation, cudnn autotuning). The exported model holds the PICK model's encoder and primary decoder, which is
all ``forward`` runs at inference, so the expected time ratio is 1 and the segmentations must be voxel-identical.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from os.path import isdir, isfile, join

import numpy as np
import torch

MODELS = ("PICK", "exported")


def make_predictor(model_folder: str, folds: tuple, checkpoint: str, device: str):
    """nnU-Net's predictor for ``model_folder`` with nnU-Net's default settings (step 0.5, Gaussian, mirroring).

    Raises:
        FileNotFoundError: if the folder or a fold's checkpoint is missing.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    for fold in folds:
        path = join(model_folder, f"fold_{fold}", checkpoint)
        if not isfile(path):
            raise FileNotFoundError(f"{path} does not exist; give the folds (-f) and checkpoint (-chk) that "
                                    f"{model_folder} holds")
    predictor = nnUNetPredictor(device=torch.device(device), verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint)
    return predictor


def read_cases(predictor, input_folder: str, max_cases: int | None) -> dict[str, tuple[np.ndarray, dict]]:
    """``{case id: (image (C, X, Y[, Z]) float, properties)}`` read with the plans' image reader.

    Raises:
        FileNotFoundError: if ``input_folder`` holds no image with the dataset's file ending.
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    ending = predictor.dataset_json["file_ending"]
    files = create_lists_from_splitted_dataset_folder(input_folder, ending) if isdir(input_folder) else []
    if not files:
        raise FileNotFoundError(f"no images ending in {ending} in {input_folder}; give a folder of "
                                f"CASE_XXXX{ending} files as for nnUNetv2_predict -i")
    files = files[:max_cases] if max_cases else files
    reader = predictor.plans_manager.image_reader_writer_class()
    cases = {}
    for channel_files in files:
        case = os.path.basename(channel_files[0])[: -len(ending) - len("_0000")]
        cases[case] = reader.read_images(channel_files)
    return cases


@dataclass
class InferenceBenchmark:
    """What ``nnUNetv2_pick_benchmark_export`` prints; :meth:`as_json` gives the keys of ``--json``."""

    folders: dict[str, str]
    device: str
    repeats: int
    case_seconds: dict[str, list[float]] = field(default_factory=dict)  # per model: every timed case prediction
    differing_voxels: dict[str, int] = field(default_factory=dict)  # per case, exported vs PICK

    @property
    def median_case_s(self) -> dict[str, float]:
        return {m: statistics.median(s) for m, s in self.case_seconds.items()}

    @property
    def time_ratio(self) -> float:
        """Median seconds per case of the exported model over the PICK model's."""
        return self.median_case_s["exported"] / self.median_case_s["PICK"]

    @property
    def identical(self) -> bool:
        return not any(self.differing_voxels.values())

    def as_json(self) -> dict:
        return {"time_ratio": self.time_ratio, "median_case_s": self.median_case_s,
                "identical_cases": sum(v == 0 for v in self.differing_voxels.values()),
                "cases": len(self.differing_voxels), "differing_voxels": self.differing_voxels,
                "repeats": self.repeats, "device": self.device, "folders": self.folders}

    def table(self) -> str:
        rows = ["| model | folder | median s per case | timed predictions |", "|---|---|---|---|"]
        for m in MODELS:
            rows.append(f"| {m} | {self.folders[m]} | {self.median_case_s[m]:.3f} | {len(self.case_seconds[m])} |")
        n, same = len(self.differing_voxels), sum(v == 0 for v in self.differing_voxels.values())
        rows += ["", f"time ratio exported / PICK {self.time_ratio:.3f} (expected 1: the same networks run)",
                 f"voxel-identical segmentations: {same} of {n} cases"
                 + ("" if self.identical else f" (differing voxels: {self.differing_voxels})"),
                 f"{self.repeats} timed repeats after one untimed, on {self.device}, models alternating"]
        return "\n".join(rows)


def run_inference_benchmark(pick_folder: str, exported_folder: str, input_folder: str, folds: tuple = (0,),
                            checkpoint: str = "checkpoint_final.pth", repeats: int = 3, device: str = "cpu",
                            max_cases: int | None = None) -> InferenceBenchmark:
    """Predict ``input_folder`` with both models ``repeats`` + 1 times (see the module docstring).

    Args:
        pick_folder: the PICK model folder (``nnUNetTrainerPICK__PLANS__CONFIG``).
        exported_folder: its export (``nnUNetTrainer__PLANS__CONFIG`` written by ``nnUNetv2_pick_export``).
        input_folder: images as for ``nnUNetv2_predict -i``.
        folds, checkpoint: which checkpoints both predictors load (an ensemble when several folds).
        repeats: timed predictions of every case per model.
        max_cases: predict only the first this many cases.

    Raises:
        FileNotFoundError: missing checkpoints or images.
        ValueError: if ``repeats`` < 1.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    predictors = {"PICK": make_predictor(pick_folder, folds, checkpoint, device),
                  "exported": make_predictor(exported_folder, folds, checkpoint, device)}
    cases = read_cases(predictors["PICK"], input_folder, max_cases)
    result = InferenceBenchmark(folders={"PICK": pick_folder, "exported": exported_folder}, device=device,
                                repeats=repeats, case_seconds={m: [] for m in MODELS})
    segmentations: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODELS}
    for repeat in range(repeats + 1):
        order = MODELS if repeat % 2 == 0 else MODELS[::-1]
        for case, (image, properties) in cases.items():
            for m in order:
                start = time.perf_counter()
                seg = predictors[m].predict_single_npy_array(image, properties)
                if device == "cuda":
                    torch.cuda.synchronize()
                if repeat > 0:
                    result.case_seconds[m].append(time.perf_counter() - start)
                segmentations[m][case] = seg
    pick, exported = segmentations["PICK"], segmentations["exported"]
    result.differing_voxels = {case: int(np.count_nonzero(pick[case] != exported[case])) for case in cases}
    return result
