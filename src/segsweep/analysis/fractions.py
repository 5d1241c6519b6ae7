"""The real size of each label of a study's ``fraction`` axis, from its split files.

"17 % (2 of 12 patients)" (`segsweep.labels.fraction_label`): the number of training patients
(`segsweep.data.splits.n_train`) of the pool of each run's split and fold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segsweep.data.splits import n_train
from segsweep.errors import DataError
from segsweep.labels import fraction_label, label_number
from segsweep.paths import METRICS
from segsweep.training.record import CellMetrics

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study


def fraction_sizes(study: Study, cells_dir: Path, splits: Sequence[Path]) -> dict[str, dict]:
    """Per label of the study's ``fraction`` axis: the (training patients, pool patients) pairs its runs
    train on (`segsweep.data.splits.n_train` on the pool of the run's split and fold), the shown label and
    the real share. The split seed of a run comes from its metrics.json (a run without one: every split
    file of its kind)."""
    if "fraction" not in study.axes or not splits:
        return {}
    parts: dict[tuple[int, bool], list[dict]] = {}  # (split seed, with folds) → split files
    for p in sorted(Path(x) for x in splits):
        sp = json.loads(p.read_text())
        parts.setdefault((int(sp["seed"]), bool(sp.get("folds"))), []).append(sp)
    sizes: dict[str, set[tuple[int, int]]] = {}
    seeds: dict[str, int | None] = {}
    for sc in study.cells:
        label = sc.label("fraction")
        f = label_number(label)
        if f is None:
            continue
        if sc.cell_id not in seeds:
            try:
                seeds[sc.cell_id] = int(CellMetrics.read(Path(cells_dir) / sc.cell_id / METRICS).params["split_seed"])
            except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError, DataError):
                seeds[sc.cell_id] = None
        cv = sc.fold is not None
        # a holdout run trains on the holdout pool, the same in every file of its split seed (make_split)
        files = [
            sp
            for (split_seed, with_folds), found in parts.items()
            if (with_folds or not cv) and seeds[sc.cell_id] in (None, split_seed)
            for sp in found
        ]
        for sp in files:
            if cv and sc.fold >= len(sp["folds"]):
                continue
            pool = len((sp["folds"][sc.fold] if cv else sp)["pool"])
            sizes.setdefault(label, set()).add((n_train(pool, f), pool))
    return {
        lab: {
            "label": fraction_label(pairs),
            "share": float(np.mean([n / p for n, p in sorted(pairs)])),
            "n_train": sorted({n for n, _ in pairs}),
            "pool": sorted({p for _, p in pairs}),
        }
        for lab, pairs in sizes.items()
    }
