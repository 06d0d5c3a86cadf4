"""Reading unlabeled cases: images and properties only, never a segmentation file.

nnU-Net's ``nnUNetDataLoader`` crops patches, pads and runs the training transforms; it is reused unchanged. It wants
``load_case`` to return a segmentation and ``properties['class_locations']``. This dataset returns instead a
segmentation of zeros that costs no memory (a broadcast view; the loader materialises only the cropped patch) and
``class_locations = None``; with foreground oversampling off the loader then draws uniformly random patches, so
nothing label-derived is used for sampling either (for ``imagesTr`` cases listed as unlabeled, the label-derived
``class_locations`` stored in their ``.pkl`` are dropped on load).
"""

from __future__ import annotations

import os
from os.path import join

import blosc2
import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset


class nnUNetDatasetUnlabeled(nnUNetBaseDataset):  # noqa: N801 (nnU-Net naming)
    """Unlabeled cases from one or more nnU-Net blosc2 preprocessed folders.

    Args:
        case_folders: case id -> folder that holds ``ID.b2nd`` and ``ID.pkl`` (see
            :func:`nnunet_pick.unlabeled.pool.complete_case_folders`).

    ``load_case(id)`` returns ``(data, seg, None, properties)``: ``data`` the memory-mapped float32 (C, X, Y[, Z])
    image, ``seg`` an int8 (1, X, Y[, Z]) read-only view of zeros, ``properties`` the case's ``.pkl`` with
    ``class_locations`` set to None.

    Raises:
        ValueError: if ``case_folders`` is empty.
    """

    def __init__(self, case_folders: dict[str, str]) -> None:
        if not case_folders:
            raise ValueError("nnUNetDatasetUnlabeled needs at least one case.")
        self.case_folders = dict(case_folders)
        super().__init__(folder=next(iter(self.case_folders.values())), identifiers=list(self.case_folders))
        blosc2.set_nthreads(1)
        # memory-mapping does not work on Windows (nnU-Net issue #2723), same rule as nnUNetDatasetBlosc2
        self.mmap_kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}

    def load_case(self, identifier: str) -> tuple:
        folder = self.case_folders[identifier]
        data = blosc2.open(urlpath=join(folder, identifier + ".b2nd"), mode="r", dparams={"nthreads": 1},
                           **self.mmap_kwargs)
        properties = load_pickle(join(folder, identifier + ".pkl"))
        properties["class_locations"] = None
        seg = np.broadcast_to(np.zeros((1,) * len(data.shape), dtype=np.int8), (1, *data.shape[1:]))
        return data, seg, None, properties

    @staticmethod
    def save_case(data, seg, properties, output_filename_truncated):
        raise NotImplementedError("Unlabeled cases are written by nnunet_pick.unlabeled.preprocess.")

    @staticmethod
    def get_identifiers(folder: str) -> list[str]:
        from nnunet_pick.unlabeled.pool import list_preprocessed_cases

        return list_preprocessed_cases(folder)
