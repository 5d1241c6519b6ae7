"""Per-configuration summaries of a study's runs (aggregated over repeats and folds).

Per configuration, over the runs whose status is ``ok`` (n of them): mean, sample standard deviation
``sd = sqrt(Σ(x − mean)² / (n − 1))`` and a status: ``ok`` (all runs ok), ``partial`` (some
collapsed/diverged/failed: the mean is over the ok runs and the table says "k of n collapsed", "k of n
diverged"), ``collapsed`` / ``diverged`` / ``failed`` (every run ended that way) or a combination such as
``collapsed/diverged`` (no ok run: the table shows the word, never a number), ``missing`` (the layout has no
run for this combination, e.g. one-factor studies), ``pruned`` (a pruner stopped a run: shown greyed, never
ranked or compared). A ``collapsed`` run keeps its numbers in metrics.json; here, as every non-ok run, it has
none, so it never enters a mean, an interval, a comparison or the best configuration. The interval fields come
from `segsweep.analysis.intervals`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from segsweep.analysis.runs import NUMERIC_METRICS
from segsweep.analysis.stats import no_interval
from segsweep.errors import DataError
from segsweep.labels import fmt, label_sort_key
from segsweep.training.record import class_metric

if TYPE_CHECKING:  # only for annotations: aggregation works on any object with the Study fields
    from segsweep.study import Study


def moments(values: Sequence[float]) -> dict:
    """mean, sample sd (n − 1; none below 2 values) and n of the values that are numbers."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if n > 1 else None, "n": n}


def _status(n_total: int, n_ok: int, n_div: int, n_fail: int, n_col: int = 0, n_pruned: int = 0) -> tuple[str, str]:
    """(status, note) of a configuration from its run counts (ok, diverged, failed, collapsed, pruned)."""
    if n_total == 0:
        return "missing", ""
    if n_pruned:  # never a finished result, whatever its other runs did
        done = n_total - n_pruned
        return "pruned", f"{done} of {n_total} runs before pruning" if done else ""
    if n_ok == n_total:
        return "ok", ""
    bad = [(w, n) for w, n in (("collapsed", n_col), ("diverged", n_div), ("failed", n_fail)) if n]
    if n_ok == 0:
        if len(bad) == 1:
            w, _ = bad[0]
            return w, f"all {n_total} {w}" if n_total > 1 else ""
        return "/".join(w for w, _ in bad), ", ".join(f"{n} {w}" for w, n in bad)
    return "partial", ", ".join(f"{n} of {n_total} {w}" for w, n in bad)


def config_groups(
    study: Study, df: pd.DataFrame, value: str | None = None, *, intervals: Mapping[str, Mapping] | None = None
) -> list[dict]:
    """One dict per configuration (in the config's declared label order), aggregated over repeats/folds.

    Keys: labels (dict), config, runs (list of {repeat, fold, cell, status, value}), n_total, n_ok,
    n_diverged, n_failed, n_collapsed, status, note, mean, sd, n, text and the interval fields (`stats.INTERVAL_KEYS`):
    from ``intervals`` (configuration name → fields, e.g. `table_intervals` of the study's table.json),
    else none (`aggregate_study` computes them: they need the cells' per-patient files).
    """
    value = value or study.table.value
    if value not in df.columns or (value not in NUMERIC_METRICS and class_metric(value) is None):
        raise DataError(
            f"study '{study.name}': table value '{value}' is not a metric of its runs "
            f"(config key 'studies.{study.name}.table.value'; known: {', '.join(NUMERIC_METRICS)}; for a multiclass "
            "target also val_<metric>_<class>, e.g. val_dice_patient_myo)"
        )
    order = {a: {v: i for i, v in enumerate(study.axis_values.get(a, ()))} for a in study.axes}
    groups: dict[tuple, dict] = {}
    df_by_cell: dict[tuple, list[dict]] = {}
    for rec in df.to_dict("records"):
        key = tuple(str(rec[a]) for a in study.axes)
        df_by_cell.setdefault(key, []).append(rec)
        g = groups.setdefault(key, {"labels": dict(zip(study.axes, key)), "config": rec["config"], "runs": []})
        ok = rec["status"] == "ok" and not pd.isna(rec[value])
        g["runs"].append(
            {
                "repeat": None if pd.isna(rec["repeat"]) else int(rec["repeat"]),
                "fold": None if pd.isna(rec["fold"]) else int(rec["fold"]),
                "cell": rec["cell"],
                "status": rec["status"],
                # an ok run can still lack this value (e.g. HD95 of an empty prediction): it is left out
                "value": float(rec[value]) if ok else None,
            }
        )
    out = []
    for key, g in groups.items():
        runs = g["runs"]
        n_ok = sum(r["status"] == "ok" for r in runs)
        n_div = sum(r["status"] == "diverged" for r in runs)
        n_col = sum(r["status"] == "collapsed" for r in runs)
        n_pruned = sum(r["status"] == "pruned" for r in runs)
        n_fail = len(runs) - n_ok - n_div - n_col - n_pruned
        status, note = _status(len(runs), n_ok, n_div, n_fail, n_col, n_pruned)
        pruned_info = {}
        if n_pruned:  # shown greyed, ranked and compared never: its runs' values leave the statistics
            recs = [r for r in df_by_cell.get(key, []) if r["status"] == "pruned"]
            # (read back from cells.csv the column may be text, and empty cells NaN)
            vals = [float(v) for r in recs if (v := r.get("pruned_value")) not in (None, "") and not pd.isna(v)]
            done = [r["value"] for r in runs if r["value"] is not None]
            pruned_info = {
                "pruned_value": (sum(done) / len(done)) if done else (sum(vals) / len(vals) if vals else None),
                "pruned_at": min((int(r["epochs_run"]) for r in recs if r.get("epochs_run")), default=None),
                "pruned_reason": recs[0]["reason"] if recs else "",
                "pruned_folds_done": len(
                    {r["fold"] for r in runs if r["status"] != "pruned" and r["fold"] is not None}
                ),
            }
            for r in runs:
                r["value"] = None
        s = moments([r["value"] for r in runs if r["value"] is not None])
        ci = dict((intervals or {}).get(g["config"]) or no_interval(runs=s["n"]))
        g.update(
            n_total=len(runs),
            n_ok=n_ok,
            n_diverged=n_div,
            n_failed=n_fail,
            n_collapsed=n_col,
            n_pruned=n_pruned,
            status=status,
            note=note,
            **s,
            **ci,
            **pruned_info,
        )
        g["text"] = cell_text(g, value)
        if not study.ordered:  # sampled values: numeric order reads better than sampling order
            g["_order"] = tuple(label_sort_key(v) for v in key)
        else:
            g["_order"] = tuple(order[a].get(v, len(order[a])) for a, v in zip(study.axes, key))
        out.append(g)
    out.sort(key=lambda g: g["_order"])
    for g in out:
        del g["_order"]
    return out


def cell_text(g: dict, value: str) -> str:
    """'0.812 ± 0.010 (3)', '0.812 (1)', or the status word — never a number for a run-less config."""
    if g["status"] == "missing":
        return "–"
    if g["status"] == "pruned":  # the last value it reached, as a note in the status word: never a result
        v = g.get("pruned_value")
        k = g.get("pruned_folds_done", 0)
        where = f"at epoch {g['pruned_at']}" if g.get("pruned_at") else f"after {k} fold{'' if k == 1 else 's'}"
        return f"pruned {where}" + (f" ({fmt(v, value)})" if v is not None and not pd.isna(v) else "")
    if g["n"] == 0:
        return "n/a" if g["status"] in ("ok", "partial") else g["status"]
    txt = fmt(g["mean"], value)
    if g["sd"] is not None:
        txt += f" ± {fmt(g['sd'], value)}"
    return f"{txt} ({g['n']})"
