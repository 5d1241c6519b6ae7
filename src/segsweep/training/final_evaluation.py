"""A trained cell's final evaluation and its files: best.pt's weights scored on the validation patients
(network grid: the monitor's numbers, per_image.csv's first columns, predictions.npz) and on the validation
and test patients at native resolution (`segsweep.training.evaluate`, docs/evaluation.md); per_image.csv,
per_patient.csv, predictions.npz and native_predictions.npz written.

Two phases, so the training device is not held while the CPU works: first everything the network computes
(validation predictions on the network grid, the logits of every validation and test image, in the chunks
`evaluate.evaluate_set` asks for them), then `_Trainer.release` lets the device go (weights, optimizer
state and images moved off it), then the scoring (HD95, NSD, the native-grid mapping) and the writing run
on the CPU from those arrays. The numbers are those of scoring while predicting: the same batches, the same
arrays.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from segsweep.errors import DataError
from segsweep.io import atomic_path, write_text
from segsweep.paths import PER_IMAGE, PREDICTIONS
from segsweep.training import evaluate as ev
from segsweep.training import native_predictions
from segsweep.training.cell_data import CellData
from segsweep.training.metrics import hd95_per_image

PER_IMAGE_COLUMNS = ("patient", "slice", "dice", "iou", "hd95_mm")


def final_evaluation(
    tr, data: CellData, best_state: dict, out_dir: Path, data_dir: Path, evaluation: Mapping | None, log: logging.Logger
) -> dict:
    """Restore best.pt's ``best_state`` into the trainer ``tr`` (`loop._Trainer`), evaluate (module docstring),
    write the files. Returns the quality fields of `CellMetrics` (best_val_*, val_*, test, evaluation)."""
    cfg = ev.EvaluationConfig.from_mapping(evaluation)
    val_images = ev.load_images(data_dir, data.val_patients)
    if val_images.patient != list(data.val_patient) or val_images.slice != [int(x) for x in data.val_slice]:
        raise DataError(f"{data_dir}: the validation images changed while the cell trained; rerun it")
    test_images = ev.load_images(data_dir, data.test_patients) if data.test_patients else None

    # 1. the network's part, on the training device
    tr.model.load_state_dict(best_state["model"])
    _, dice, iou, pred = tr.predict(data.x_val, data.y_val, keep_pred=True)
    dice, iou, pred = dice.cpu().numpy(), iou.cpu().numpy(), pred.cpu().numpy()
    mask = data.y_val[:, 0].to(torch.uint8).cpu().numpy()
    image = data.x_val[:, 0].cpu().numpy()
    val_logits = ev.network_logits(val_images, tr.logits)
    test_logits = ev.network_logits(test_images, tr.logits) if test_images is not None else None
    # 2. the device let go: another cell on this GPU can have it while this one scores on the CPU
    tr.release()

    # 3. scoring and files, on the CPU
    hd = hd95_per_image(pred, mask, data.val_spacing, data.n_classes)
    val = ev.evaluate_set("val", val_images, ev.replay(val_logits), cfg, data.classes)
    test = None
    if test_images is not None:
        test = ev.evaluate_set("test", test_images, ev.replay(test_logits), cfg, data.classes)
    if not val.images.native:
        log.warning(
            "%s: patient files without native-resolution arrays (ingested by an older segsweep): the final "
            "evaluation runs on the network grid; rerun ingest (snakemake -R ingest) for native numbers",
            data_dir,
        )
    rows = [
        [data.val_patient[i], int(data.val_slice[i]), float(dice[i]), float(iou[i]), float(hd[i])]
        + ev.native_image_cells(val, i)
        for i in range(len(pred))
    ]
    if test is not None:
        rows += [
            [test.images.patient[i], test.images.slice[i], *test.net[i], *ev.native_image_cells(test, i)]
            for i in range(len(test.images))
        ]
    write_per_image(out_dir, rows, data.classes)
    ev.write_per_patient(out_dir, [val] + ([test] if test is not None else []), data.classes)
    for res in (val, test):
        if res is not None:
            ev.log_summary(log, res)
    with atomic_path(out_dir / PREDICTIONS) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            pred=pred,
            image=image,
            mask=mask,
            patient=data.val_patient.astype(str),
            slice=data.val_slice,
            # multi-class: the class names of label values 1, 2, ... (overlays draw them in class colours)
            **({"classes": np.asarray(data.classes)} if data.n_outputs > 1 else {}),
        )
    # native-resolution labels and probabilities of both sets: every reported number can be recomputed from
    # files, and the study's post-processing choice and ensembles need no weights (docs/evaluation.md)
    native_predictions.write(
        out_dir / native_predictions.FILE,
        {"val": val, **({"test": test} if test is not None else {})},
        data.classes,
    )
    finite_hd = hd[np.isfinite(hd)]
    return {
        "best_val_dice": float(dice.mean()),
        "best_val_iou": float(iou.mean()),
        # mean over images where both masks are non-empty (HD95 is undefined otherwise); null if none
        "best_val_hd95_mm": float(finite_hd.mean()) if finite_hd.size else None,
        **ev.metrics_fields(val, test, cfg),
    }


def write_per_image(out_dir: Path, rows: list[list], classes: tuple[str, ...] = ("foreground",)) -> None:
    """per_image.csv: the network-grid columns (PER_IMAGE_COLUMNS: HD95 empty where a mask is empty), then
    the set and the native-resolution scores (`evaluate.NATIVE_IMAGE_COLUMNS`; multi-class: means over the
    classes, then each class's, `evaluate.class_image_columns`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PER_IMAGE_COLUMNS + ev.NATIVE_IMAGE_COLUMNS + ev.class_image_columns(classes))
    for r in rows:
        patient, slc, dice, iou, hd = r[:5]
        w.writerow([patient, slc, repr(dice), repr(iou), repr(hd) if math.isfinite(hd) else "", *r[5:]])
    write_text(out_dir / PER_IMAGE, buf.getvalue())


def write_empty_evaluation(out_dir: Path, data: CellData) -> None:
    """A diverged cell has no model worth evaluating: header-only per_image.csv and per_patient.csv, empty
    predictions."""
    write_per_image(out_dir, [], data.classes)
    ev.write_per_patient(out_dir, [], data.classes)
    h, w = data.x_val.shape[-2:]
    with atomic_path(out_dir / PREDICTIONS) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            pred=np.zeros((0, h, w), np.uint8),
            image=np.zeros((0, h, w), np.float32),
            mask=np.zeros((0, h, w), np.uint8),
            patient=np.zeros(0, dtype="<U1"),
            slice=np.zeros(0, np.int32),
        )
