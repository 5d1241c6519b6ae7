"""The study's table: its configurations laid out as rows × columns (the study's ``table:`` layout).

A ``fraction`` axis is labelled with its real size (`segsweep.analysis.fractions`): ``table.json`` keeps the
config's labels under ``labels`` and adds the shown ones (``display``, ``axis_labels``); ``table.csv`` shows
them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from segsweep.analysis.ranking import best_group, rank_key
from segsweep.analysis.stats import INTERVAL_KEYS
from segsweep.labels import label_sort_key
from segsweep.study import config_label

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study


def layout_axes(study: Study) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(row axes, col axes). Axes the layout does not name are added to the rows, so a table cell never
    pools different configurations."""
    rows = tuple(study.table.rows)
    cols = tuple(study.table.cols)
    extra = tuple(a for a in study.axes if a not in rows and a not in cols)
    return rows + extra, cols


def _combos(axes: Sequence[str], study: Study, groups: Sequence[dict]) -> list[tuple[str, ...]]:
    """Label combinations of ``axes`` in declared order, keeping only those some configuration has."""
    present = {tuple(g["labels"][a] for a in axes) for g in groups}
    values = []
    for a in axes:
        declared = list(study.axis_values.get(a, ()))
        seen = [g["labels"][a] for g in groups if g["labels"][a] not in declared]
        vals = declared + list(dict.fromkeys(seen))
        if not study.ordered:  # sampling order means nothing to a reader; numbers read best sorted
            vals = sorted(vals, key=label_sort_key)
        values.append(vals)
    return [c for c in itertools.product(*values) if c in present]


def _public(g: dict | None) -> dict:
    if g is None:
        return {
            "status": "missing",
            "text": "–",
            "mean": None,
            "sd": None,
            "n": 0,
            "n_total": 0,
            "ci_low": None,
            "ci_high": None,
            "note": "",
            "config": None,
        }
    return {
        k: g[k]
        for k in (
            "config",
            "status",
            "note",
            "text",
            "mean",
            "sd",
            "n",
            "n_total",
            "n_ok",
            "n_diverged",
            "n_failed",
            "n_collapsed",
            "n_pruned",
            *INTERVAL_KEYS,
        )
        if k in g
    }


def pivot(study: Study, groups: Sequence[dict], axis_labels: Mapping[str, Mapping[str, str]] | None = None) -> dict:
    """The study's table: rows × cols of configuration summaries, best per row/column/overall flagged.

    ``axis_labels`` (axis → label → shown label, e.g. `fraction_labels`) name rows and columns in ``label``
    and ``display``; ``labels`` keep the config's labels.
    """
    t = study.table
    shown = {a: dict(m) for a, m in (axis_labels or {}).items()}

    def display(axes: Sequence[str], combo: Sequence[str]) -> dict:
        return {a: shown.get(a, {}).get(v, v) for a, v in zip(axes, combo)}

    row_axes, col_axes = layout_axes(study)
    by_key = {tuple(g["labels"][a] for a in study.axes): g for g in groups}
    rows = _combos(row_axes, study, groups)
    cols = _combos(col_axes, study, groups)
    grid: list[list[dict]] = []
    for r in rows:
        line = []
        for c in cols:
            labels = dict(zip(row_axes, r)) | dict(zip(col_axes, c))
            line.append(_public(by_key.get(tuple(labels[a] for a in study.axes))))
        grid.append(line)

    def flag(cells: list[dict], name: str) -> None:
        scored = [x for x in cells if x["mean"] is not None]
        if not scored:
            return
        top = max(rank_key(x, t.higher_is_better) for x in scored)
        for x in scored:
            x[name] = rank_key(x, t.higher_is_better) == top

    for line in grid:
        for x in line:
            x.update(best_in_row=False, best_in_col=False, best_overall=False)
    if len(cols) > 1:  # "best in its row" says nothing in a one-column table
        for line in grid:
            flag(line, "best_in_row")
    if len(rows) > 1:
        for j in range(len(cols)):
            flag([line[j] for line in grid], "best_in_col")
    flag([x for line in grid for x in line], "best_overall")
    best = best_group(groups, t.higher_is_better)
    return {
        "study": study.name,
        "title": study.title,
        "value": t.value,
        "higher_is_better": t.higher_is_better,
        "row_axes": list(row_axes),
        "col_axes": list(col_axes),
        "rows": [
            {
                "labels": dict(zip(row_axes, r)),
                "display": display(row_axes, r),
                "label": config_label(display(row_axes, r).items()) if r else "",
            }
            for r in rows
        ],
        "cols": [
            {
                "labels": dict(zip(col_axes, c)),
                "display": display(col_axes, c),
                "label": config_label(display(col_axes, c).items()) if c else t.value,
            }
            for c in cols
        ],
        "axis_labels": shown,
        "cells": grid,
        "best": None if best is None else {"config": best["config"], "labels": best["labels"], **_public(best)},
        "n_configs": len(groups),
        "n_runs": int(sum(g["n_total"] for g in groups)),
        "n_ok": int(sum(g["n_ok"] for g in groups)),
        "n_diverged": int(sum(g["n_diverged"] for g in groups)),
        "n_failed": int(sum(g["n_failed"] for g in groups)),
        "n_collapsed": int(sum(g["n_collapsed"] for g in groups)),
        "n_pruned": int(sum(g.get("n_pruned", 0) for g in groups)),
    }


def table_frame(table: dict) -> pd.DataFrame:
    """The layout as a flat table (row axis columns + one column per column combination), text cells.

    Partial configurations carry their note after a semicolon ("0.80 ± 0.01 (2); 1 of 3 diverged").
    """
    records = []
    for row, line in zip(table["rows"], table["cells"]):
        rec = dict(row.get("display") or row["labels"])
        for col, x in zip(table["cols"], line):
            rec[col["label"]] = x["text"] + (f"; {x['note']}" if x["note"] and x["n"] else "")
        records.append(rec)
    return pd.DataFrame(records, columns=[*table["row_axes"], *[c["label"] for c in table["cols"]]])
