"""`CellMetrics`: the one definition of a cell's ``metrics.json`` (no torch here: analysis and report import it).

Written by training (`loop.train_cell` for ``ok``/``collapsed``/``diverged``, `job.run_train_job` for ``failed``), read back
by aggregation (`analysis.runs.read_cell`) and hence the report. On disk it is `segsweep.io.write_json`
of `CellMetrics.to_json` (keys sorted, two-space indent). `CellMetrics.read` is tolerant: a key missing from
an older file reads as None. The table in docs/architecture.md is `markdown_table()`; after changing a field
run ``python -m segsweep.training.record docs/architecture.md`` (tests/test_record.py checks it).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segsweep.data.config import LABELS
from segsweep.errors import DataError
from segsweep.io import write_json, write_text
from segsweep.paths import METRICS

STATUSES = ("ok", "collapsed", "diverged", "failed")
"""Every value of ``status``, in the order tables count them."""
# The `collapsed` rule (`segsweep.training.evaluate.collapse_way`; docs/evaluation.md says why these values).
COLLAPSE_EMPTY_RATIO = 0.05
"""Collapsed to empty: predicted area below this share of the reference area (validation slices with a reference)."""
COLLAPSE_FULL_COVERAGE = 0.95
"""Collapsed to full: prediction on at least this share of the pixels of those slices."""


def _doc(json_type: str, doc: str, default: Any = None) -> Any:
    return field(default=default, metadata={"json": json_type, "doc": doc})


@dataclass(frozen=True)
class CellMetrics:
    """One cell's outcome, as in its ``metrics.json``. Field order is the column order of cells.csv."""

    cell: str = field(metadata={"json": "string", "doc": "the cell id (its folder name under `results/cells/`)"})
    status: str = field(
        metadata={
            "json": "string",
            "doc": "`ok`, `collapsed` (finite loss, but the chosen model predicts (almost) nothing or (almost) "
            "everything on the validation slices that contain the structure: `val_collapse`, docs/evaluation.md; "
            "its numbers are kept here, tables show the word), `diverged` (non-finite loss: no quality numbers) or "
            "`failed` (crashed on the last attempt)",
        }
    )
    reason: str | None = _doc(
        "string or null",
        "why training stopped early, collapsed (to empty or full, with the measured fractions), diverged (epoch "
        "and value) or failed (exception, at most 500 characters); null for a full, ok run",
    )
    best_val_dice: float | None = _doc(
        "number or null",
        "mean per-image validation Dice of the best epoch's weights (`best.pt`) on the network grid: the "
        "per-epoch monitor (both-empty images score 1; docs/evaluation.md); null if `diverged` or `failed`",
    )
    best_epoch: int | None = _doc(
        "integer or null", "epoch (from 1) with the best validation Dice; null if `diverged` or `failed`"
    )
    final_val_dice: float | None = _doc(
        "number or null", "validation Dice of the last epoch run; null if `diverged` or `failed`"
    )
    best_val_iou: float | None = _doc(
        "number or null", "mean per-image validation IoU of the best epoch's weights; null if `diverged` or `failed`"
    )
    best_val_hd95_mm: float | None = _doc(
        "number or null",
        "mean HD95 (mm) of the best epoch's weights over "
        "the images where both masks are non-empty; null if none, or if `diverged` or `failed`",
    )
    epochs_run: int | None = _doc("integer or null", "epochs trained, the diverging one included; null if `failed`")
    wall_s: float | None = _doc(
        "number or null",
        "wall-clock seconds of training (resumed attempts included); for `failed`, of the last attempt",
    )
    n_train: int | None = _doc("integer or null", "training images; null if `failed`")
    n_val: int | None = _doc("integer or null", "validation images; null if `failed`")
    device: str | None = _doc(
        "string or null",
        "device type trained on (`cpu`, `cuda`, `mps`); for `failed`, the configured `resources.device`",
    )
    hardware: str | None = _doc("string or null", "one-line CPU/GPU description; null if `failed`")
    params: dict | None = _doc("object", "the cell's parameters (`CellParams.to_dict()`)")
    execution: dict | None = _doc(
        "object or null",
        "how the run executed: `amp` (bf16 autocast; part of the cell id when `resources.amp` is true, not when "
        "`auto` turned it on), `channels_last` (both as decided on the training device), `threads` (CPU "
        "threads torch used) and `device_requested` (`resources.device`); added after 0.1.0, null in older files",
    )
    # Final evaluation (docs/evaluation.md): best.pt on the validation patients at native resolution, under
    # the empty-mask policy. Added after 0.1.0: older files read them as null.
    val_dice_patient: float | None = _doc(
        "number or null",
        "mean over validation patients of the per-patient Dice (all of a patient's slices pooled) at native "
        "resolution, best checkpoint; null if `diverged` or `failed`",
    )
    val_dice: float | None = _doc(
        "number or null",
        "mean per-slice Dice at native resolution over the `val_n_slices` validation slices (both-empty "
        "slices excluded, one-empty slices 0); null if `diverged` or `failed`",
    )
    val_iou_patient: float | None = _doc("number or null", "as `val_dice_patient`, for IoU")
    val_iou: float | None = _doc("number or null", "as `val_dice`, for IoU")
    val_hd95_mm_patient: float | None = _doc(
        "number or null",
        "mean over validation patients of the HD95 (mm) of the patient's pooled boundary pixels; null if `diverged` or `failed`",
    )
    val_hd95_mm: float | None = _doc(
        "number or null",
        "mean per-slice HD95 (mm) at native resolution; a one-empty slice counts at the cap "
        "(`evaluation.hd95_cap_mm`, default the image diagonal); null if `diverged` or `failed`",
    )
    val_nsd_patient: float | None = _doc(
        "number or null", "as `val_hd95_mm_patient`, for the NSD at `evaluation.nsd_tolerance_mm`"
    )
    val_nsd: float | None = _doc(
        "number or null",
        "mean per-slice normalised surface Dice at `evaluation.nsd_tolerance_mm` (one-empty slices 0); null if `diverged` or `failed`",
    )
    val_n_slices: int | None = _doc(
        "integer or null", "validation slices the per-slice means cover (both-empty slices excluded)"
    )
    val_n_patients: int | None = _doc("integer or null", "validation patients the per-patient means cover")
    val_n_excluded_both_empty: int | None = _doc(
        "integer or null", "validation slices excluded because both masks are empty"
    )
    val_n_one_empty: int | None = _doc(
        "integer or null", "validation slices with exactly one empty mask (scored at the worst case)"
    )
    test: dict | None = _doc(
        "object or null",
        "the same numbers on the split's test patients, keys without `val_` (`dice`, `dice_patient`, `iou`, "
        "`iou_patient`, `hd95_mm`, `hd95_mm_patient`, `nsd`, `nsd_patient`, `n_slices`, `n_patients`, "
        "`n_excluded_both_empty`, `n_one_empty`; multi-class targets also `per_class`, as `val_per_class`); "
        "recorded, never used to choose; null without a test set or "
        "if `diverged` or `failed`",
    )
    evaluation: dict | None = _doc(
        "object or null",
        "settings of the final evaluation: `nsd_tolerance_mm`, `hd95_cap_mm` (null = image diagonal) and "
        "`grid` (`native`, or `network` for data ingested before native arrays existed); null if `diverged` or `failed`",
    )
    val_collapse: dict | None = _doc(
        "object or null",
        "the check behind `collapsed`, per class (`foreground` for a binary target): `area_ratio` (predicted / "
        "reference area) and `coverage` (predicted share of the pixels) over the `n_slices` validation slices "
        "whose reference is non-empty, best checkpoint, scored grid; collapsed to empty if `area_ratio` < "
        f"{COLLAPSE_EMPTY_RATIO}, to full if `coverage` ≥ {COLLAPSE_FULL_COVERAGE}; null if `diverged` or `failed`",
    )
    val_per_class: dict | None = _doc(
        "object or null",
        "multi-class targets (`data.target: multiclass`): per foreground class (`lv`, `myo`) the same numbers "
        "as the `val_*` fields (`dice`, `dice_patient`, `iou`, `iou_patient`, `hd95_mm`, `hd95_mm_patient`, "
        "`nsd`, `nsd_patient` and the four counts), each class scored on its own; the `val_*` fields are then "
        "their means over the classes and `test` has `per_class` alike; tables read a class as "
        "`val_<metric>_<class>` (e.g. `val_dice_patient_myo`); null for binary targets",
    )

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")

    # ------------------------------------------------------------------------------------- file format
    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json`` (every field, nulls included)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def write(self, path: str | Path) -> None:
        """Write ``metrics.json`` atomically."""
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str | Path = METRICS) -> CellMetrics:
        """From a parsed ``metrics.json``: missing keys are None, unknown keys are ignored."""
        if not isinstance(obj, Mapping) or obj.get("status") not in STATUSES:
            raise DataError(f"{source}: 'status' must be one of {', '.join(STATUSES)}")
        return cls(**{name: obj.get(name) for name in FIELDS})

    @classmethod
    def read(cls, path: str | Path) -> CellMetrics:
        """Read ``metrics.json``. FileNotFoundError and json.JSONDecodeError propagate (the caller decides what
        a missing or torn file means); a file without a valid ``status`` raises DataError."""
        return cls.from_json(json.loads(Path(path).read_text()), source=path)


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CellMetrics))
CLASS_KEYS = ("dice", "dice_patient", "iou", "iou_patient", "hd95_mm", "hd95_mm_patient", "nsd", "nsd_patient")
"""The keys of ``val_per_class`` that become table values ``val_<key>_<class>`` (cells.csv columns)."""


def class_columns(classes: Sequence[str]) -> tuple[str, ...]:
    """cells.csv columns of the per-class values: ``val_<key>_<class>`` for each class, then each key."""
    return tuple(f"val_{k}_{c}" for c in classes for k in CLASS_KEYS)


CLASS_COLUMNS = class_columns(LABELS)
"""Every per-class column a multi-class target can have (the structures of `segsweep.data.config.LABELS`)."""


def class_metric(name: str) -> tuple[str, str] | None:
    """``"val_dice_patient_myo"`` → ``("dice_patient", "myo")``; None for anything else."""
    for c in LABELS:
        if name.startswith("val_") and name.endswith(f"_{c}") and name[4 : -len(c) - 1] in CLASS_KEYS:
            return name[4 : -len(c) - 1], c
    return None


def class_values(m: CellMetrics) -> dict[str, float | None]:
    """The per-class columns of one run (`class_columns`), from its ``val_per_class``; {} for binary targets."""
    return {f"val_{k}_{c}": v.get(k) for c, v in (m.val_per_class or {}).items() if c in LABELS for k in CLASS_KEYS}


OBJECT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(CellMetrics) if f.metadata["json"].startswith("object")
)
"""Fields holding a JSON object (``params``, ``test``, ``evaluation``): not a column of cells.csv."""
NUMERIC_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(CellMetrics) if f.metadata["json"].startswith(("number", "integer"))
)
QUALITY_FIELDS = ("best_val_dice", "final_val_dice", "best_val_iou", "best_val_hd95_mm") + tuple(
    f.name for f in dataclasses.fields(CellMetrics) if f.name.startswith("val_") and f.name not in OBJECT_FIELDS
)
"""Model-quality numbers: aggregation uses them only for an ``ok`` run (a ``collapsed`` run keeps them in
metrics.json, but no table, interval or comparison reads them)."""


# ------------------------------------------------------------------------------------------------ docs
DOC_BEGIN = "<!-- metrics.json fields: generated by `python -m segsweep.training.record docs/architecture.md` -->"
DOC_END = "<!-- end of generated metrics.json fields -->"


def markdown_table(indent: str = "  ") -> str:
    """The metrics.json table of docs/architecture.md (between its markers, markers included)."""
    lines = [DOC_BEGIN, "| key | JSON type | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(CellMetrics):
        lines.append(f"| `{f.name}` | {f.metadata['json']} | {f.metadata['doc']} |")
    lines.append(DOC_END)
    return "".join(f"{indent}{ln}\n" for ln in lines)


def update_doc(path: str | Path) -> bool:
    """Replace the generated block in ``path`` with `markdown_table()`; True if the file changed."""
    path = Path(path)
    text = path.read_text()
    start = text.index(DOC_BEGIN)
    start = text.rindex("\n", 0, start) + 1
    end = text.index("\n", text.index(DOC_END)) + 1
    new = text[:start] + markdown_table() + text[end:]
    if new != text:
        write_text(path, new)
    return new != text


if __name__ == "__main__":  # pragma: no cover - maintenance helper
    for p in sys.argv[1:]:
        print(f"{p}: {'updated' if update_doc(p) else 'up to date'}")
