"""A study as every stage after planning sees it: its cells with their axis labels, and its table layout.

Built by ``segsweep.plan`` and passed to rules as plain JSON (``study_to_dict``), so aggregation and the report
need no planning code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from segsweep.errors import ConfigError


@dataclass(frozen=True)
class TableLayout:
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    value: str = "val_dice_patient"
    higher_is_better: bool = True


@dataclass(frozen=True)
class StudyCell:
    """One row of a study: a cell plus the study's labels for it."""

    cell_id: str
    labels: tuple[tuple[str, str], ...]
    repeat: int
    fold: int | None

    def label(self, axis: str) -> str:
        return dict(self.labels)[axis]


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    description: str
    mode: str
    axes: tuple[str, ...]
    table: TableLayout
    cells: tuple[StudyCell, ...]
    axis_values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dataset: str | None = None  # the `datasets` entry it trains on (`data: <name>`); None: the default (`data`)
    # what its search mode declares (segsweep.plan.search, SEARCH_MODES): tables, figures and rules ask these,
    # never the mode's name
    adaptive: bool = False  # its points are proposed in rounds from earlier results, not known at plan time
    ordered: bool = True  # its axis values' declared order is the reading order (False: a sampling order)

    @property
    def cell_ids(self) -> list[str]:
        return sorted({c.cell_id for c in self.cells})


# ------------------------------------------------------------------ (de)serialising a study for a rule
def config_label(labels: Iterable[tuple[str, str]]) -> str:
    """'optimizer=adam, lr=1e-3': a configuration's name, from the config's axis labels.

    It is a key, not only a caption: cells.csv's ``config`` column, the bootstrap stream of the configuration's
    interval (`segsweep.analysis.intervals.config_interval`) and a pruner's decisions name configurations by
    it, so it must stay stable; shown labels (e.g. a fraction's real size) go through it only for captions."""
    parts = [f"{a}={v}" for a, v in labels]
    return ", ".join(parts) if parts else "base"


def study_to_dict(study: Study) -> dict:
    """JSON-able form, passed as a rule param (so a layout change reruns only aggregation)."""
    return {
        "name": study.name,
        "title": study.title,
        "description": study.description,
        "mode": study.mode,
        "axes": list(study.axes),
        "table": {
            "rows": list(study.table.rows),
            "cols": list(study.table.cols),
            "value": study.table.value,
            "higher_is_better": study.table.higher_is_better,
        },
        "cells": [[c.cell_id, [list(x) for x in c.labels], c.repeat, c.fold] for c in study.cells],
        "axis_values": {a: list(v) for a, v in study.axis_values.items()},
    } | (  # absent when default: the params of existing studies, and so their aggregation, stay as they were
        ({"dataset": study.dataset} if study.dataset is not None else {})
        | ({"adaptive": True} if study.adaptive else {})
        | ({"ordered": False} if not study.ordered else {})
    )


def study_from_dict(d: Mapping) -> Study:
    t = d["table"]
    return Study(
        name=d["name"],
        title=d["title"],
        description=d["description"],
        mode=d["mode"],
        axes=tuple(d["axes"]),
        table=TableLayout(tuple(t["rows"]), tuple(t["cols"]), t["value"], t["higher_is_better"]),
        cells=tuple(StudyCell(c[0], tuple(tuple(x) for x in c[1]), c[2], c[3]) for c in d["cells"]),
        axis_values={a: tuple(v) for a, v in d["axis_values"].items()},
        dataset=d.get("dataset"),
        adaptive=d.get("adaptive", False),
        ordered=d.get("ordered", True),
    )


# ------------------------------------------------------------------ studies compared with each other
def check_one_dataset(studies: Sequence[Study]) -> None:
    """``predict.model: best`` compares validation values, so its studies must share one data set (one set of
    validation patients, one target); studies on several data sets raise a ConfigError naming them."""
    by_ds: dict[str, list[str]] = {}
    for s in studies:
        by_ds.setdefault(s.dataset or "the default data set", []).append(s.name)
    if len(by_ds) > 1:
        where = "; ".join(f"{', '.join(names)} on {ds}" for ds, names in by_ds.items())
        raise ConfigError(
            f"config key 'predict.model': 'best' would compare studies trained and validated on different data "
            f"sets ({where}); name a study or a cell id"
        )


# ------------------------------------------------------------------ a pruned study's decisions
@dataclass(frozen=True)
class Budget:
    """What a pruner's stage k has spent when its decision is taken: ``value`` of ``unit`` (``epoch`` 3, or
    ``fold`` 2 of ``total`` 6). Written into the decision file as a mapping (``to_dict``), so figures and tables
    read the number instead of parsing text."""

    unit: str
    value: int
    total: int | None = None

    def __str__(self) -> str:
        return f"{self.unit} {self.value}" + (f" of {self.total}" if self.total is not None else "")

    def to_dict(self) -> dict:
        return {"unit": self.unit, "value": self.value, "total": self.total, "text": str(self)}

    @classmethod
    def from_dict(cls, d: Mapping | str | None) -> Budget | None:
        """None for a missing budget or one written as text by an older decision job."""
        if not isinstance(d, Mapping):
            return None
        return cls(d["unit"], int(d["value"]), None if d.get("total") is None else int(d["total"]))


def pruned_cells(decisions: Sequence[Mapping]) -> dict[str, dict]:
    """Cell id → how a pruner stopped it (``reason``, ``epochs_run``, the last ``value`` and its key), from
    a pruned study's decision files (`segsweep.plan.pruning`, results/studies/<s>/prune/stage<k>.json)."""
    out = {}
    for d in decisions:
        for p in d.get("pruned", ()):
            for c in p["cells"]:
                out[c] = {
                    "reason": p["reason"],
                    "epochs_run": p.get("epochs_run"),
                    "value": p.get("value"),
                    "value_key": p.get("value_key"),
                    "budget": d.get("budget"),
                }
    return out
