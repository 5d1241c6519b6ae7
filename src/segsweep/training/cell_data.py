"""A cell's images for training: the data set manifest, the split and the patients' npz files, read once
and checked, as tensors on the training device (`load_cell_data`; `segsweep.training.loop` trains on them).

A study's data set is a few hundred 2D slices (tens of MB), so all training and validation images are held
on the device for the whole run; test patients are only listed here (the final evaluation reads them,
`segsweep.training.final_evaluation`). User errors (a missing file, a split that does not fit the data) raise
`DataError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segsweep.data.config import class_names
from segsweep.data.splits import select_patients, test_patients
from segsweep.errors import DataError
from segsweep.training.params import CellParams


@dataclass
class CellData:
    """The cell's images as device tensors ([N,1,H,W] float32; masks 0/1, or label values 0..C) + validation metadata."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    val_patient: np.ndarray  # str [M]
    val_slice: np.ndarray  # int32 [M]
    val_spacing: np.ndarray  # float32 [M, 2] (row, col) mm
    train_patients: list[str]
    val_patients: list[str]
    test_patients: list[str] = field(default_factory=list)  # the split's test set: final evaluation only
    n_classes: int = 2  # label values, background included (dataset.json): 2 = binary, one sigmoid channel
    classes: tuple[str, ...] = ("foreground",)  # foreground class names, label value k+1 = classes[k]

    @property
    def n_outputs(self) -> int:
        """Output channels of the model: 1 (sigmoid) for a binary target, else background + classes (softmax)."""
        return 1 if self.n_classes <= 2 else self.n_classes

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.x_val.shape[0])


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path} is not valid JSON: {exc}") from None


def _load_patients(data_dir: Path, pids: list[str], n_classes: int = 2) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {"image": [], "mask": [], "spacing": [], "slice": [], "patient": []}
    for pid in pids:
        path = data_dir / f"{pid}.npz"
        try:
            with np.load(path) as z:
                image, mask = z["image"].astype(np.float32), z["mask"]
                spacing, slices = z["spacing"].astype(np.float32), z["slice"].astype(np.int32)
        except FileNotFoundError:
            raise DataError(f"patient file not found: {path} (listed in the split, missing from the data)") from None
        except KeyError as exc:
            raise DataError(f"patient file {path} lacks the array {exc}") from None
        if image.ndim != 3 or image.shape != mask.shape or len(spacing) != len(image) or len(slices) != len(image):
            raise DataError(
                f"patient file {path}: image {image.shape}, mask {mask.shape}, spacing {spacing.shape} and "
                f"slice {slices.shape} do not describe the same [N,H,W] images"
            )
        parts["image"].append(image)
        parts["mask"].append(mask)
        parts["spacing"].append(spacing)
        parts["slice"].append(slices)
        parts["patient"].append(np.full(len(image), pid))
    sizes = {a.shape[1:] for a in parts["image"]}
    if len(sizes) > 1:
        raise DataError(f"images in {data_dir} differ in size {sorted(sizes)}; ingest resizes them to one size")
    out = {k: np.concatenate(v) for k, v in parts.items()}
    top = max(1, n_classes - 1)
    if out["mask"].size and out["mask"].max() > top:
        raise DataError(
            f"masks in {data_dir} hold label values > {top}, but dataset.json says n_classes {n_classes}; rerun ingest"
        )
    return out


def load_cell_data(params: CellParams, data_dir: Path, split_path: Path, device: torch.device) -> CellData:
    """Read ``dataset.json``, the split and the patients' npz files; return device tensors."""
    data_dir, split_path = Path(data_dir), Path(split_path)
    dataset = _read_json(data_dir / "dataset.json", "data set manifest")
    n_classes = max(2, int(dataset.get("n_classes", 2)))  # binary: 2 label values (older files say 1)
    split = _read_json(split_path, "split file")
    if "seed" in split and int(split["seed"]) != params.split_seed:
        raise DataError(
            f"split file {split_path} was made with seed {split['seed']}, the cell asks for split_seed {params.split_seed}"
        )
    try:
        train_ids, val_ids = select_patients(split, params.fraction, params.fold)
    except KeyError as exc:
        raise DataError(f"split file {split_path} lacks the key {exc}") from None
    except DataError as exc:
        raise DataError(f"split file {split_path}: {exc}") from None
    test_ids = test_patients(split)
    known = {p["id"] for p in dataset.get("patients", [])}
    unknown = sorted(set(train_ids + val_ids + test_ids) - known)
    if unknown:
        raise DataError(f"split file {split_path} names patients not in {data_dir / 'dataset.json'}: {unknown[:5]}")
    if not train_ids or not val_ids:
        raise DataError(f"split file {split_path}: no training or no validation patients")
    leak = sorted(set(test_ids) & set(train_ids + val_ids))
    if leak:
        raise DataError(f"split file {split_path}: test patients also used for training or validation: {leak[:5]}")
    tr, va = _load_patients(data_dir, train_ids, n_classes), _load_patients(data_dir, val_ids, n_classes)
    if len(tr["image"]) == 0 or len(va["image"]) == 0:
        raise DataError(f"split file {split_path}: the selected patients have no training or no validation images")

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(1).to(device)

    return CellData(
        x_train=t(tr["image"]),
        y_train=t(tr["mask"]),
        x_val=t(va["image"]),
        y_val=t(va["mask"]),
        val_patient=va["patient"],
        val_slice=va["slice"],
        val_spacing=va["spacing"],
        train_patients=train_ids,
        val_patients=val_ids,
        test_patients=test_ids,
        n_classes=n_classes,
        classes=class_names(dataset.get("target"), n_classes),
    )
