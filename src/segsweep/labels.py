"""Labels: how values are written in tables, figures and the report (one formatter for each kind of value).

* `format_value`: a config value (an axis value: number, name, loss terms, schedule dict) → its label,
  e.g. ``1e-4`` → ``"0.0001"``. Labels are what cells.csv, tables and figures show and group by.
* `fmt` (with `value_decimals`): a metric number → text with the metric's decimals, ``"–"`` for none.
* `label_number` / `label_sort_key`: reading a label back as a number, and sorting labels numerically.
* `metric_range`: the range a metric's values (and so its intervals and figure axes) live in.
* `fraction_label`: a training fraction by its real size, "17 % (2 of 12 patients)".
* `ConfigNames`: a configuration's name, "optimizer=adam, fraction=17 % (2 of 12 patients)" — the one source of
  every configuration name in tables, figures, sentences and model cards.

Display *names* of metrics and axes ("best validation Dice") are another job: `segsweep.report.style.label_for`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def format_value(v: Any) -> str:
    """Short, stable label of an axis value for tables and figures."""
    if isinstance(v, Mapping):
        if "label" in v:
            return str(v["label"])
        if "terms" in v:
            return format_value(v["terms"])
        if set(v) == {"name"} or len(v) == 1 and "name" in v:
            return str(v["name"])
        inner = ",".join(f"{k}={format_value(x)}" for k, x in v.items() if k != "name")
        return f"{v.get('name', '')}({inner})"
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def value_decimals(value: str) -> int:
    """Decimals for the metric named ``value``: Dice and IoU are fractions (3); distances and counts read
    better with 2."""
    return 3 if any(k in value for k in ("dice", "iou")) else 2


def metric_range(value: str) -> tuple[float, float]:
    """[0, 1] for the overlap metrics (Dice, IoU, NSD: fractions), [0, ∞) for distances and counts."""
    return (0.0, 1.0) if any(k in value for k in ("dice", "iou", "nsd")) else (0.0, math.inf)


def _pct(share: float) -> str:
    pct = 100 * share
    return f"{pct:.0f}" if pct >= 1 or pct == 0 else f"{pct:.1g}"


def _span(xs: list) -> str:
    return f"{xs[0]}" if xs[0] == xs[-1] else f"{xs[0]}–{xs[-1]}"


def fraction_label(sizes: Iterable[tuple[int, int]]) -> str:
    """A training fraction by the patients it really trains on: ``(n_train, pool)`` pairs → "17 % (2 of 12
    patients)" for [(2, 12)] — the percentage is the real share n_train / pool (the requested 0.2 rounds to 2
    patients), not the requested fraction. Several pairs (folds with pools of different sizes) give ranges:
    "33–40 % (2 of 5–6 patients)"."""
    pairs = sorted(set(sizes))
    if not pairs:
        return ""
    shares = sorted({n / p for n, p in pairs})
    lo, hi = _pct(shares[0]), _pct(shares[-1])
    n = _span(sorted({n for n, _ in pairs}))
    pool = _span(sorted({p for _, p in pairs}))
    return f"{lo if lo == hi else f'{lo}–{hi}'} % ({n} of {pool} patients)"


def fmt(x: float | None, value: str) -> str:
    """A number of the metric named ``value`` as text (``"–"`` for None/NaN)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{value_decimals(value)}f}"


def label_number(label: str) -> float | None:
    """The number a label names ("0.001" → 0.001), or None for a name ("adam")."""
    try:
        return float(label)
    except (TypeError, ValueError):
        return None


def label_sort_key(label: str) -> tuple:
    """Sort key: numeric labels first, in numeric order, then names alphabetically."""
    x = label_number(label)
    return (0, x, "") if x is not None else (1, 0.0, str(label))


@dataclass(frozen=True)
class ConfigNames:
    """How a study names its configurations, everywhere the report shows one (tables, figures, sentences,
    model cards): ``axis=shown label`` pairs joined by ", ", "base" for a study without axes.

    ``shown`` maps axis → config label → shown label (a training fraction by its real size, `fraction_label`;
    table.json ``axis_labels``); a label not in it is shown as the config wrote it.
    """

    shown: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def of_table(cls, table: Mapping) -> ConfigNames:
        """The names a study's table.json gives (its ``axis_labels``; none in an older file)."""
        return cls({a: dict(m) for a, m in (table.get("axis_labels") or {}).items()})

    def value(self, axis: str, label: str) -> str:
        """One axis label as shown ("0.2" → "17 % (2 of 12 patients)" for a fraction)."""
        return self.shown.get(axis, {}).get(label, label)

    def values(self, labels: Mapping[str, str]) -> dict[str, str]:
        return {a: self.value(a, v) for a, v in labels.items()}

    def name(self, labels: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
        """'optimizer=adam, fraction=17 % (2 of 12 patients)'; 'base' when there is no axis."""
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        parts = [f"{a}={self.value(a, v)}" for a, v in pairs]
        return ", ".join(parts) if parts else "base"
