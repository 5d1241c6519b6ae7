"""Figures of a study and of the data set.

`make_study_figures` reads what `aggregate.aggregate_study` wrote (cells.csv, table.json) plus the cells'
history.csv / per_image.csv / predictions.npz, and writes into ``out_dir`` the figures that apply to the
study, with fixed names and an index ``figures.json``:
``{"figures": [{"file", "kind", "title", "caption"}, ...]}`` in report order. A figure that does not apply
(e.g. ``fraction.svg`` for a study without a fraction axis) is not written, and a stale one is removed, so a
Snakemake rule declares the folder (``directory()``) and reads the index.

`make_data_figures` does the same for the ingested data (CLAHE before/after, intensity distributions).

Each figure is one function registered in ``STUDY_FIGURES`` or ``DATA_FIGURES`` (report order = file order)
with its file name, title and caption, written once, there. The caption is a ``str.format`` template: the
function returns the values of its fields from the data ({} if it has none; None: the figure does not apply),
which fill the caption in figures.json (the HTML/PDF report). The captions of ``snakemake --report``
(workflow/report/study_figures.rst, data_figures.rst) are generated from the same registrations by
`captions_rst`, with the registration's ``generic`` text (or ``GENERIC_FIELDS``) in the fields:
``python -m segsweep.report.plots --write-captions`` rewrites them (tests/test_figure_registry.py checks).

Where a study has more combinations than a figure can show legibly, the figure shows a slice: the other axes
held at the best configuration's labels (the caption says so).
"""

from __future__ import annotations

import argparse
import math
import string
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

# .style first: it selects the Agg backend before pyplot is imported
# isort: off
from segsweep.report import style
from segsweep.analysis.pivot import layout_axes
from segsweep.analysis.study_results import read_study
from segsweep.analysis.ranking import best_group, ranked
from segsweep.analysis.stats import UNIT_WORDS
from segsweep.report import inspect as inspect_figs
from segsweep.io import write_json, write_text
from segsweep.labels import ConfigNames, fmt, label_number, label_sort_key, metric_range
from segsweep.paths import HISTORY, PER_IMAGE, PREDICTIONS
from segsweep.registry import Registry

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
# isort: on

if TYPE_CHECKING:
    from segsweep.study import Study

# register(name, file=..., title=..., caption=..., generic={field: text for snakemake --report}); the key is
# only quoted in the message for an unknown name (figures are not chosen in the config)
STUDY_FIGURES: Registry[Callable[[_Ctx, Path], dict | None]] = Registry("study figure", "figures")
DATA_FIGURES: Registry[Callable[[list, Path], dict | None]] = Registry("data figure", "figures")
# what a caption field says where the data are not known (snakemake --report); a registration's ``generic``
# adds to or overrides these
GENERIC_FIELDS = {
    "value": "table value",
    "held": "",
    "interval": "95 % percentile-bootstrap intervals over validation patients (and runs where repeated; none "
    "where too few units, docs/statistics.md)",
}


def caption_fields(caption: str) -> set[str]:
    """The ``{field}`` names of a caption template."""
    return {f for _, f, _, _ in string.Formatter().parse(caption) if f is not None}


def _register(reg: Registry, name: str, *, file: str, title: str, caption: str, generic: dict | None = None):
    """``reg.register`` with the metadata every figure has (a typo in a keyword fails at import, and so does a
    caption field with no text for ``snakemake --report``, where the data are not known)."""
    missing = sorted(caption_fields(caption) - set(GENERIC_FIELDS) - set(generic or {}))
    if missing:
        raise ValueError(
            f"figure '{name}': caption field(s) {', '.join(missing)} need generic= text, e.g. "
            f"generic={{{', '.join(f'{f!r}: ...' for f in missing)}}} (what snakemake --report shows in their place)"
        )
    return reg.register(name, file=file, title=title, caption=caption, generic=dict(generic or {}))


INDEX = "figures.json"
MAX_HEATMAP_ROWS, MAX_HEATMAP_COLS = 30, 16
MAX_PANELS = 12
MAX_LINES = 8
TOP_PATIENT_CONFIGS = 5


class _Ctx:
    """Everything a study figure needs, loaded once."""

    def __init__(self, study: Study, study_dir: Path, cells_dir: Path):
        self.study = study
        self.study_dir = Path(study_dir)
        self.cells_dir = Path(cells_dir)
        # the groups carry the intervals aggregate computed from the cells' per-patient values (bootstrap)
        res = read_study(study, study_dir)
        self.df, self.table, self.groups = res.cells, res.table, res.groups
        self.value = study.table.value
        self.higher = study.table.higher_is_better
        self.best = best_group(self.groups, self.higher)
        self.names = ConfigNames.of_table(self.table)  # e.g. fraction "0.2" → "17 % (2 of 12 patients)"
        self._hist: dict[str, pd.DataFrame | None] = {}

    def show(self, axis: str, label: str) -> str:
        """The label as tables and figures show it (a fraction by its real size)."""
        return self.names.value(axis, label)

    def name(self, items) -> str:
        """A configuration's name as every table shows it (`ConfigNames.name`)."""
        return self.names.name(items)

    def history(self, cell: str) -> pd.DataFrame | None:
        if cell not in self._hist:
            p = self.cells_dir / cell / HISTORY
            self._hist[cell] = pd.read_csv(p) if p.exists() else None
        return self._hist[cell]

    def ordered(self, axis: str) -> list[str]:
        vals = list(self.study.axis_values.get(axis, ()))
        vals += [g["labels"][axis] for g in self.groups if g["labels"][axis] not in vals]
        vals = [v for v in dict.fromkeys(vals) if any(g["labels"][axis] == v for g in self.groups)]
        return sorted(vals, key=label_sort_key) if not self.study.ordered else vals

    def slice_for(self, free: Sequence[str]) -> tuple[list[dict], dict]:
        """Configurations to draw when ``free`` axes vary: all of them if the other axes have ≤ MAX_LINES
        combinations, else those matching the best configuration on every other axis. Returns (groups, held)."""
        others = [a for a in self.study.axes if a not in free]
        combos = {tuple(g["labels"][a] for a in others) for g in self.groups}
        if len(combos) <= MAX_LINES or self.best is None:
            return list(self.groups), {}
        held = {a: self.best["labels"][a] for a in others}
        return [g for g in self.groups if all(g["labels"][a] == v for a, v in held.items())], held


def _held_text(held: dict, c: _Ctx | None = None) -> str:
    name = (c.names if c is not None else ConfigNames()).name(held.items())
    return f" Other axes held at the best configuration: {name}." if held else ""


def _ci_err(g: dict) -> tuple[float, float]:
    """Error-bar lengths below and above the mean from the bootstrap interval (0 where there is none)."""
    if g["ci_low"] is None:
        return 0.0, 0.0
    return max(0.0, g["mean"] - g["ci_low"]), max(0.0, g["ci_high"] - g["mean"])


def _interval_phrase(groups: Sequence[dict]) -> str:
    """What the error bars of these configurations are, for a caption."""
    units = sorted({g["ci_unit"] for g in groups if g["mean"] is not None and g.get("ci_unit")})
    if not units:
        return "not drawn: no configuration has enough validation patients or runs for an interval"
    missing = any(g["mean"] is not None and not g.get("ci_unit") for g in groups)
    return f"95 % percentile-bootstrap intervals over {' or '.join(UNIT_WORDS[u] for u in units)}" + (
        "; none where a configuration has too few units" if missing else ""
    )


def _metric_axis(ax, which: str, value: str) -> None:
    """Keep an axis of a bounded metric (Dice, IoU, NSD: [0, 1]) within its range, margins included."""
    lo, hi = metric_range(value)
    get, set_ = (ax.get_xlim, ax.set_xlim) if which == "x" else (ax.get_ylim, ax.set_ylim)
    a, b = get()
    set_(max(lo, a), min(hi, b))


def _label_width(labels: Sequence[str]) -> float:
    return 0.065 * max((len(s) for s in labels), default=0)


# ------------------------------------------------------------------------------------------ heatmap
@_register(
    STUDY_FIGURES,
    "heatmap",
    file="heatmap.svg",
    title="Mean per configuration (heatmap)",
    caption="Mean {value} per configuration over repeats/folds (n = runs that finished). The boxed cell is "
    "the best configuration. Hatched cells name the status of configurations whose runs all "
    "collapsed, diverged or failed; they carry no number.{partial}",
    generic={"partial": " An asterisk marks configurations where only some runs finished; the mean is over those."},
)
def fig_heatmap(c: _Ctx, path: Path) -> dict | None:
    t = c.table
    nr, nc = len(t["rows"]), len(t["cols"])
    if nr == 0 or nc == 0 or nr > MAX_HEATMAP_ROWS or nc > MAX_HEATMAP_COLS:
        return None
    vals = np.array([[x["mean"] if x["mean"] is not None else np.nan for x in line] for line in t["cells"]])
    if np.all(np.isnan(vals)):
        return None
    # tick labels carry the values only, in the axis order of the titles (JSON objects come back key-sorted)
    row_labels = [", ".join(c.show(a, r["labels"][a]) for a in t["row_axes"]) or "all" for r in t["rows"]]
    col_labels = [", ".join(c.show(a, cl["labels"][a]) for a in t["col_axes"]) for cl in t["cols"]]
    w = max(4.0, 1.6 + _label_width(row_labels) + 1.0 * nc)
    h = max(2.2, 1.1 + 0.45 * nr)
    fig, ax = plt.subplots(figsize=(w, h))
    cmap = plt.get_cmap(style.SEQUENTIAL)
    vmin, vmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    # a minimum colour span keeps differences of a few thousandths from looking like black vs. yellow
    span = 0.05 if any(k in t["value"] for k in ("dice", "iou")) else 0.05 * max(abs(vmax), 1e-9)
    if vmax - vmin < span:
        mid = (vmax + vmin) / 2
        vmin, vmax = mid - span / 2, mid + span / 2
        lo, hi = metric_range(t["value"])  # the widened span stays within the metric's range (Dice ≤ 1)
        shift = max(0.0, lo - vmin) - max(0.0, vmax - hi)
        vmin, vmax = vmin + shift, vmax + shift
    masked = np.ma.masked_invalid(vals)
    cmap = cmap if t["higher_is_better"] else cmap.reversed()
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)
    partial = False
    for i, line in enumerate(t["cells"]):
        for j, x in enumerate(line):
            if x["mean"] is None:
                bad = x["status"] != "missing"
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        facecolor="white" if bad else style.MISSING_FACE,
                        hatch="///" if bad else None,
                        edgecolor="#999999",
                        linewidth=0.5,
                    )
                )
                ax.text(
                    j,
                    i,
                    x["status"] if bad else "–",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color=style.BAD_COLOUR if bad else "#666666",
                    fontweight="bold" if bad else "normal",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0} if bad else None,
                )
                continue
            rgba = cmap((x["mean"] - vmin) / (vmax - vmin))
            lum = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
            star = "*" if x["status"] == "partial" else ""
            partial |= bool(star)
            ax.text(
                j,
                i,
                f"{fmt(x['mean'], t['value'])}{star}\nn={x['n']}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if lum > 0.5 else "white",
                fontweight="bold" if x["best_overall"] else "normal",
            )
            if x["best_overall"]:
                ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="black", linewidth=2))
    long = max(map(len, col_labels)) > 10
    ax.set_xticks(range(nc), col_labels, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(nr), row_labels)
    ax.set_xlabel(", ".join(t["col_axes"]) or "")
    ax.set_ylabel(", ".join(t["row_axes"]) or "")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    cb.set_label(f"mean {style.label_for(t['value'])}")
    style.save(fig, path)
    return {
        "value": style.label_for(t["value"]),
        "partial": " * some runs of this configuration collapsed, diverged or failed; the mean is over the rest."
        if partial
        else "",
    }


# ------------------------------------------------------------------------------------------- curves
@_register(
    STUDY_FIGURES,
    "curves",
    file="curves.svg",
    title="Validation Dice per epoch",
    caption="Validation Dice per epoch: thin lines are single runs (seeds/folds), thick lines their mean. "
    "{panels} × marks the last epoch of a run that collapsed, diverged or failed.",
    generic={"panels": "One panel per row of the study table (if there are too many, the six best configurations)."},
)
def fig_curves(c: _Ctx, path: Path) -> dict | None:
    row_axes, col_axes = layout_axes(c.study)
    panel_axes = list(row_axes)
    if panel_axes and len({tuple(g["labels"][a] for a in panel_axes) for g in c.groups}) > MAX_PANELS:
        panel_axes = panel_axes[:1]
        if len(c.ordered(panel_axes[0])) > MAX_PANELS:
            panel_axes = []
    if panel_axes:
        keys = [
            k
            for k in _product([c.ordered(a) for a in panel_axes])
            if any(tuple(g["labels"][a] for a in panel_axes) == k for g in c.groups)
        ]
        panels = [
            (c.name(zip(panel_axes, k)), [g for g in c.groups if tuple(g["labels"][a] for a in panel_axes) == k])
            for k in keys
        ]
        note = f"One panel per {', '.join(panel_axes)}."
    else:
        top = ranked(c.groups, c.higher)[:6]
        panels = [("top configurations", top)] if top else []
        note = "The six best configurations." if len(c.groups) > 6 else ""
    panels = [(t, gs) for t, gs in panels if any(c.history(r["cell"]) is not None for g in gs for r in g["runs"])]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    pw = 5.5 if len(panels) == 1 else 2.9
    fig, axes = plt.subplots(nrow, ncol, figsize=(pw * ncol, 2.4 * nrow + 0.4), sharex=True, sharey=True, squeeze=False)
    handles: dict[str, Line2D] = {}
    colour_of: dict[str, int] = {}
    any_bad = False
    for ax, (title, gs) in zip(axes.flat, panels):
        for g in gs:
            sub = {a: g["labels"][a] for a in c.study.axes if a not in panel_axes}
            name = c.name(sub.items()) if sub else c.name(g["labels"].items())
            k = colour_of.setdefault(name, len(colour_of))
            col = style.colour(k)
            curves = []
            for r in g["runs"]:
                h = c.history(r["cell"])
                if h is None or h.empty:
                    continue
                ax.plot(h["epoch"], h["val_dice"], color=col, alpha=0.35, linewidth=0.9)
                if r["status"] != "ok":
                    last = h["val_dice"].ffill().iloc[-1] if h["val_dice"].notna().any() else 0.0
                    ax.plot(h["epoch"].iloc[-1], last, marker="x", color=style.BAD_COLOUR, markersize=7, mew=2)
                    any_bad = True
                else:
                    curves.append(h.set_index("epoch")["val_dice"])
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)
                ax.plot(
                    mean.index,
                    mean.values,
                    color=col,
                    linewidth=1.8,
                    marker=style.marker(k),
                    markevery=max(1, len(mean) // 6),
                    markersize=4,
                )
            handles.setdefault(name, Line2D([], [], color=col, marker=style.marker(k), linewidth=1.8, label=name))
        # one axis per line once titles grow long (a fraction's label names its patients)
        ax.set_title(title.replace(", ", "\n") if len(title) > 30 else title, fontsize=9)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation Dice")
        _metric_axis(ax, "y", "val_dice")
    hs = list(handles.values())[:12]
    if any_bad:
        hs.append(
            Line2D(
                [], [], color=style.BAD_COLOUR, marker="x", linestyle="", mew=2, label="collapsed / diverged / failed"
            )
        )
    longest = max(len(h.get_label()) for h in hs)
    ncol = max(1, min(4, len(hs), int(18 * ncol_fig_width(axes) / max(longest, 1))))
    fig.legend(handles=hs, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    style.save(fig, path)
    return {"panels": note}


def ncol_fig_width(axes) -> float:
    return float(axes[0, 0].figure.get_figwidth())


def _outside_legend(ax, *args, **kw) -> None:
    """Legend to the right of the axes: never on top of data points or error bars."""
    ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _product(lists: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*lists))


# ----------------------------------------------------------------------------- value vs numeric axis
def _value_vs_axis(
    c: _Ctx,
    path: Path,
    axis: str,
    *,
    log: bool,
    group_axes: Sequence[str] | None = None,
    xlabels: dict[str, str] | None = None,
    xpos: dict[str, float] | None = None,
) -> tuple[dict | None, dict]:
    """Mean ± bootstrap interval against a numeric ``axis``, placed at ``xpos[label]`` where given (a
    fraction at its real share) and ticked ``xlabels[f"{x:g}"]``."""

    def x_of(g: dict) -> float:
        lab = g["labels"][axis]
        return (xpos or {}).get(lab, label_number(lab))

    gs, held = c.slice_for([axis, *(group_axes or [])])
    gs = [g for g in gs if label_number(g["labels"][axis]) is not None]
    if len({g["labels"][axis] for g in gs}) < 2 or all(g["mean"] is None for g in gs):
        return None, held
    lines_by = [a for a in c.study.axes if a != axis and a not in held]
    series: dict[str, list[dict]] = {}
    for g in gs:
        series.setdefault(c.name((a, g["labels"][a]) for a in lines_by) if lines_by else "all", []).append(g)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bad_drawn = False
    sampled = not c.study.ordered
    for k, (name, members) in enumerate(series.items()):
        members = sorted(members, key=x_of)
        ok = [g for g in members if g["mean"] is not None]
        xs = [x_of(g) for g in ok]
        ys = [g["mean"] for g in ok]
        err = np.array([_ci_err(g) for g in ok]).T if ok else None
        if ok:
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                color=style.colour(k),
                marker=style.marker(k),
                linestyle="none" if sampled else "-",
                label=name if len(series) > 1 else None,
                markersize=5,
                alpha=0.9,
            )
        for g in members:
            if g["mean"] is None:
                ax.plot(
                    x_of(g),
                    0.03,
                    marker="x",
                    color=style.colour(k),
                    markersize=8,
                    mew=2,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
                bad_drawn = True
    if log:
        ax.set_xscale("log")
    ticks = sorted({x_of(g) for g in gs})
    if not sampled and len(ticks) <= 10:
        ax.set_xticks(ticks, [xlabels.get(f"{t:g}", f"{t:g}") if xlabels else f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(style.label_for(axis))
    ax.set_ylabel(f"mean {style.label_for(c.value)}")
    _metric_axis(ax, "y", c.value)
    hs, ls = ax.get_legend_handles_labels()
    if bad_drawn:
        hs.append(Line2D([], [], marker="x", color="#555555", linestyle="", mew=2))
        ls.append("all runs collapsed/diverged/failed")
    if hs:
        _outside_legend(ax, hs, ls)
    style.save(fig, path)
    return {"interval": _interval_phrase([g for g in gs if g["mean"] is not None])}, held


@_register(
    STUDY_FIGURES,
    "fraction",
    file="fraction.svg",
    title="Effect of the training fraction",
    caption="Mean {value} against the share of the training pool really used (training patients of the "
    "pool's patients, from the split); error bars are {interval}. Smaller fractions are subsets "
    "of larger ones and the validation set is fixed.{held}",
)
def fig_fraction(c: _Ctx, path: Path) -> dict | None:
    if "fraction" not in c.study.axes:
        return None
    # each fraction sits at its real share and is ticked with its real size (table.json, from the split)
    xpos, xl = {}, {}
    for lab, f in (c.table.get("fractions") or {}).items():
        xpos[lab] = f["share"]
        xl[f"{f['share']:g}"] = c.show("fraction", lab).replace(" (", "\n(").replace(" patients)", ")")
    res, held = _value_vs_axis(c, path, "fraction", log=False, xlabels=xl, xpos=xpos)
    if res is None:
        return None
    return {"value": style.label_for(c.value), "held": _held_text(held, c), **res}


@_register(
    STUDY_FIGURES,
    "lr",
    file="lr.svg",
    title="Effect of the learning rate",
    caption="Mean {value} against the initial learning rate (log scale){per_optimizer}; error bars are "
    "{interval}, × marks configurations whose runs all collapsed, diverged or failed.{held}",
    generic={"per_optimizer": ", one line per optimizer where the study varies it"},
)
def fig_lr(c: _Ctx, path: Path) -> dict | None:
    if "lr" not in c.study.axes:
        return None
    res, held = _value_vs_axis(c, path, "lr", log=True, group_axes=["optimizer"] if "optimizer" in c.study.axes else [])
    if res is None:
        return None
    return {
        "value": style.label_for(c.value),
        "per_optimizer": ", one line per optimizer" if "optimizer" in c.study.axes else "",
        "held": _held_text(held, c),
        **res,
    }


# ----------------------------------------------------------------------------------------- schedules
@_register(
    STUDY_FIGURES,
    "schedule",
    file="schedule_lr.svg",
    title="Learning rate applied per epoch",
    caption="The learning rate the optimizer actually used in each epoch (from history.csv), one "
    "representative run per schedule.{held}",
)
def fig_schedule(c: _Ctx, path: Path) -> dict | None:
    if "schedule" not in c.study.axes:
        return None
    gs, held = c.slice_for(["schedule"])
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ratios = []
    drawn = 0
    for k, lab in enumerate(c.ordered("schedule")):
        members = [g for g in gs if g["labels"]["schedule"] == lab]
        for g in members[:1]:
            runs = sorted(g["runs"], key=lambda r: (r["status"] != "ok", r["repeat"] or 0, r["fold"] or 0))
            for r in runs:
                h = c.history(r["cell"])
                if h is None or h.empty or "lr" not in h:
                    continue
                other = {a: v for a, v in g["labels"].items() if a != "schedule" and a not in held}
                name = lab + (f" ({c.name(other.items())})" if other and len(members) > 1 else "")
                ax.plot(
                    h["epoch"],
                    h["lr"],
                    color=style.colour(k),
                    marker=style.marker(k),
                    markevery=max(1, len(h) // 8),
                    label=name,
                    drawstyle="steps-post",
                )
                lr = h["lr"][h["lr"] > 0]
                if len(lr):
                    ratios.append(lr.max() / lr.min())
                drawn += 1
                break
    if not drawn:
        plt.close(fig)
        return None
    if ratios and max(ratios) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate applied")
    _outside_legend(ax, title="schedule")
    style.save(fig, path)
    return {"held": _held_text(held, c)}


# --------------------------------------------------------------------------------------------- losses
@_register(
    STUDY_FIGURES,
    "loss",
    file="loss.svg",
    title="Loss functions compared",
    caption="Mean {value} per loss; error bars are {interval}; short ticks are single runs.{held}",
)
def fig_loss(c: _Ctx, path: Path) -> dict | None:
    if "loss" not in c.study.axes:
        return None
    gs, held = c.slice_for(["loss"])
    losses = c.ordered("loss")
    others = [a for a in c.study.axes if a != "loss" and a not in held]
    series: dict[str, list[dict]] = {}
    for g in gs:
        series.setdefault(c.name((a, g["labels"][a]) for a in others) if others else "all", []).append(g)
    ns = len(series)
    fig, ax = plt.subplots(figsize=(5.2, max(2.2, 0.9 + 0.42 * len(losses) * max(1, ns / 2.5))))
    width = 0.7
    for k, (name, members) in enumerate(series.items()):
        off = (k - (ns - 1) / 2) * (width / max(ns, 1))
        for g in members:
            y = losses.index(g["labels"]["loss"]) + off
            vals = [r["value"] for r in g["runs"] if r["value"] is not None]
            if g["mean"] is None:
                ax.text(
                    0.02,
                    y,
                    g["status"],
                    transform=ax.get_yaxis_transform(),
                    va="center",
                    fontsize=8,
                    color=style.BAD_COLOUR,
                    fontweight="bold",
                )
                continue
            lo, hi = _ci_err(g)
            ax.errorbar(
                g["mean"],
                y,
                xerr=[[lo], [hi]],
                color=style.colour(k),
                marker=style.marker(k),
                markersize=6,
                linewidth=2,
                label=name if g is members[0] and ns > 1 else None,
            )
            ax.plot(vals, [y] * len(vals), linestyle="none", marker="|", color=style.colour(k), markersize=8, alpha=0.6)
    ax.set_yticks(range(len(losses)), losses)
    ax.invert_yaxis()
    ax.set_xlabel(f"{style.label_for(c.value)} (mean, bootstrap 95 % CI; ticks = single runs)")
    ax.set_ylabel("loss")
    ax.grid(axis="y", visible=False)
    _metric_axis(ax, "x", c.value)
    if ns > 1:
        _outside_legend(ax)
    style.save(fig, path)
    return {
        "value": style.label_for(c.value),
        "held": _held_text(held, c),
        "interval": _interval_phrase([g for g in gs if g["mean"] is not None]),
    }


# ---------------------------------------------------------------------------------------- per patient
def _patient_dice(c: _Ctx, g: dict) -> pd.Series | None:
    """Per-patient Dice of a configuration: mean over slices within a run, then over its ok runs."""
    parts = []
    for r in g["runs"]:
        p = c.cells_dir / r["cell"] / PER_IMAGE
        if r["status"] == "ok" and p.exists():
            pi = pd.read_csv(p, dtype={"patient": str, "set": str})
            if "set" in pi:  # validation rows only: test rows are for the Test set section
                pi = pi[pi["set"] == "val"]
            parts.append(pi.groupby("patient")["dice"].mean())
    if not parts:
        return None
    return pd.concat(parts, axis=1).mean(axis=1).dropna()


@_register(
    STUDY_FIGURES,
    "per_patient",
    file="per_patient.svg",
    title="Per-patient Dice of the top configurations",
    caption="Distribution over validation patients ({n_patients} per configuration; dots are patients, "
    "boxes show quartiles and median) for the {n_configs} best configurations, best first.",
    generic={"n_patients": "all", "n_configs": f"{TOP_PATIENT_CONFIGS}"},
)
def fig_per_patient(c: _Ctx, path: Path) -> dict | None:
    top = []
    for g in ranked(c.groups, c.higher):
        s = _patient_dice(c, g)
        if s is not None and len(s):
            top.append((g, s))
        if len(top) == TOP_PATIENT_CONFIGS:
            break
    if not top:
        return None
    labels = [c.name(g["labels"].items()) for g, _ in top]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.5 * len(top)))
    data = [s.values for _, s in top]
    ax.boxplot(
        data,
        orientation="horizontal",
        widths=0.55,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": "#E8EEF6", "edgecolor": "#555555"},
        medianprops={"color": style.OKABE_ITO[0], "linewidth": 2},
        whiskerprops={"color": "#555555"},
        capprops={"color": "#555555"},
    )
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for i, d in enumerate(data, start=1):
        ax.plot(
            d,
            i + rng.uniform(-0.15, 0.15, len(d)),
            linestyle="none",
            marker="o",
            markersize=3.5,
            color=style.OKABE_ITO[1],
            alpha=0.8,
        )
    ax.set_yticks(range(1, len(top) + 1), labels)
    ax.invert_yaxis()
    ax.set_xlabel("per-patient validation Dice (mean over slices and runs)")
    ax.grid(axis="y", visible=False)
    _metric_axis(ax, "x", "dice")
    style.save(fig, path)
    n_pat = sorted({len(s) for _, s in top})
    return {"n_patients": "/".join(map(str, n_pat)), "n_configs": str(len(top))}


# ------------------------------------------------------------------------------------------- overlays
def _contour(ax, m: np.ndarray, colour: str, ls: str) -> None:
    levels = [k - 0.5 for k in np.unique(m) if k > 0]
    if levels:
        ax.contour(m, levels=levels, colors=[colour], linewidths=1.6, linestyles=ls)


@_register(
    STUDY_FIGURES,
    "overlays",
    file="overlays.png",
    title="Best, median and worst validation images",
    caption="Validation images of the best configuration{run} with the best, median and worst Dice{classes}: "
    "ground truth solid, prediction dashed. Patients are named by pseudonym.",
    generic={"run": "", "classes": ""},
)
def fig_overlays(c: _Ctx, path: Path) -> dict | None:
    if c.best is None:
        return None
    runs = sorted((r for r in c.best["runs"] if r["value"] is not None), key=lambda r: r["value"], reverse=c.higher)
    for r in runs:
        d = c.cells_dir / r["cell"]
        if (d / PER_IMAGE).exists() and (d / PREDICTIONS).exists():
            break
    else:
        return None
    pi = pd.read_csv(d / PER_IMAGE, dtype={"patient": str, "set": str}).dropna(subset=["dice"])
    if "set" in pi:  # predictions.npz holds the validation images only
        pi = pi[pi["set"] == "val"]
    if pi.empty:
        return None
    pi = pi.sort_values("dice", kind="stable").reset_index(drop=True)
    picks = [("best", pi.iloc[-1]), ("median", pi.iloc[(len(pi) - 1) // 2]), ("worst", pi.iloc[0])]
    with np.load(d / PREDICTIONS, allow_pickle=False) as z:
        pred, img, mask = z["pred"], z["image"], z["mask"]
        pat, sl = z["patient"].astype(str), z["slice"].astype(int)
        classes = [str(c) for c in z["classes"]] if "classes" in z.files else []  # multi-class: label k+1
    fig, axes = plt.subplots(1, 3, figsize=(7.2, 3.0))
    for ax, (name, row) in zip(axes, picks):
        idx = np.flatnonzero((pat == str(row["patient"])) & (sl == int(row["slice"])))
        ax.axis("off")
        if not idx.size:
            continue
        i = int(idx[0])
        ax.imshow(img[i], cmap="gray", interpolation="nearest")
        if classes:  # one colour per class: its reference solid, its prediction dashed; the inner (LV) last,
            for k, cname in reversed(list(enumerate(classes))):  # as its edge is also the myocardium's
                col = style.class_colour(cname, k)
                _contour(ax, (mask[i] == k + 1).astype(np.uint8), col, "solid")
                _contour(ax, (pred[i] == k + 1).astype(np.uint8), col, "dashed")
        else:
            _contour(ax, mask[i], style.GT_COLOUR, "solid")
            _contour(ax, pred[i], style.PRED_COLOUR, "dashed")
        ax.set_title(f"{name}: Dice {row['dice']:.3f}\n{row['patient']}, slice {int(row['slice'])}", fontsize=8.5)
    if classes:
        handles = [
            Line2D([], [], color=style.class_colour(c, k), linewidth=3, label=style.CLASS_TITLES.get(c, c))
            for k, c in enumerate(classes)
        ]
        handles += [
            Line2D([], [], color="#555555", linewidth=1.6, label="ground truth"),
            Line2D([], [], color="#555555", linewidth=1.6, linestyle="dashed", label="prediction"),
        ]
    else:
        handles = [
            Line2D([], [], color=style.GT_COLOUR, linewidth=1.6, label="ground truth"),
            Line2D([], [], color=style.PRED_COLOUR, linewidth=1.6, linestyle="dashed", label="prediction"),
        ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    style.save(fig, path)
    rep = f"seed {r['repeat']}" + (f", fold {r['fold']}" if r["fold"] is not None else "")
    names = ", ".join(style.CLASS_TITLES.get(x, x) for x in classes)
    return {
        "run": f" ({c.name(c.best['labels'].items())}; run {r['cell']}, {rep})",
        "classes": f" (mean over the classes; {names} in their own colours)" if classes else "",
    }


# ------------------------------------------------------------------------------------- validation vs test
TOP_TEST_CONFIGS = 8


@_register(
    STUDY_FIGURES,
    "val_vs_test",
    file="val_vs_test.svg",
    title="Validation and test Dice of the top configurations",
    caption="Per-patient Dice at native resolution (mean over patients, each patient's slices pooled; mean over "
    "ok runs) on the validation patients (circles: they chose the epoch, the checkpoint and the ranking) and on "
    "the held-out test patients (diamonds: never used to choose) for the {n_configs} best configurations by "
    "{value}, best first; the selected configuration is on top. A test value left of its validation value is "
    "the optimism of selecting on validation.",
    generic={"n_configs": f"up to {TOP_TEST_CONFIGS}"},
)
def fig_val_vs_test(c: _Ctx, path: Path) -> dict | None:
    from segsweep.analysis.testset import val_vs_test

    top = val_vs_test(c.groups, c.higher, c.cells_dir, TOP_TEST_CONFIGS)
    if not top:
        return None  # no test set (splits.test_fraction 0) or no finished run
    labels = [c.name(t["labels"].items()) for t in top]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.42 * len(top)))
    for y, t in enumerate(top):
        ax.plot([t["val"], t["test"]], [y, y], color="#999999", linewidth=1.5, zorder=1)
        ax.plot(
            t["val"], y, "o", color=style.OKABE_ITO[0], markersize=7, zorder=2, label="validation" if y == 0 else None
        )
        ax.plot(t["test"], y, "D", color=style.OKABE_ITO[1], markersize=6, zorder=3, label="test" if y == 0 else None)
    ax.set_yticks(range(len(top)), [f"{lab} (selected)" if i == 0 else lab for i, lab in enumerate(labels)])
    ax.invert_yaxis()
    vals = [v for t in top for v in (t["val"], t["test"])]
    pad = max(0.02, 0.1 * (max(vals) - min(vals)))
    ax.set_xlim(max(0.0, min(vals) - pad), min(1.0, max(vals) + pad))  # Dice: within [0, 1]
    ax.set_xlabel("per-patient Dice at native resolution (mean over patients)")
    ax.grid(axis="y", visible=False)
    _outside_legend(ax)
    style.save(fig, path)
    return {"n_configs": str(len(top)), "value": style.label_for(c.value)}


# ------------------------------------------------------------- inside the network (segsweep.report.inspect)
_INSIDE = "of the validation-selected cell ({cell}; the best configuration's best run)"


@_register(
    STUDY_FIGURES,
    "activations",
    file="activations.png",
    title="Activation maps per level",
    caption="Activations " + _INSIDE + " on {n_images} validation images (network grid), after the ReLU of each "
    "encoder and decoder level, input to output: the mean over a level's channels for each image, then the {k} "
    "channels with the largest mean activation over the validation set, for the first image. Colours are scaled "
    "per panel.",
    generic={"cell": "", "n_images": "two or three", "k": "strongest"},
)
def fig_activations(c: _Ctx, path: Path) -> dict | None:
    return inspect_figs.activations(inspect_figs.load(c.study_dir / inspect_figs.INSPECT_FILE), path)


@_register(
    STUDY_FIGURES,
    "dead_channels",
    file="dead_channels.svg",
    title="Dead channels per level",
    caption="Share of each level's channels that are exactly zero after the ReLU on every pixel of every validation "
    "image, " + _INSIDE + "; {n_dead} of {n_total} channels in all. Many dead channels can mean a too high "
    "learning rate.",
    generic={"cell": "", "n_dead": "the dead", "n_total": "all"},
)
def fig_dead_channels(c: _Ctx, path: Path) -> dict | None:
    return inspect_figs.dead_channels(inspect_figs.load(c.study_dir / inspect_figs.INSPECT_FILE), path)


@_register(
    STUDY_FIGURES,
    "weight_hist",
    file="weight_hist.svg",
    title="Weight histograms per layer",
    caption="Histogram of the weights of each convolution " + _INSIDE + ", in network order ({n_shown} of "
    "{n_layers} layers; σ = standard deviation, n = weights), each on its own range.",
    generic={"cell": "", "n_shown": "up to 48", "n_layers": "all"},
)
def fig_weight_hist(c: _Ctx, path: Path) -> dict | None:
    return inspect_figs.weight_histograms(inspect_figs.load(c.study_dir / inspect_figs.INSPECT_FILE), path)


def _run(figs: Registry, ctx, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made, index = [], []
    with style.use():
        for e in figs:
            path = out_dir / e.meta["file"]
            fields = e.obj(ctx, path)
            if fields is None:
                path.unlink(missing_ok=True)  # a figure that no longer applies must not linger
                continue
            made.append(path)
            index.append(
                {
                    "file": e.meta["file"],
                    "kind": e.name,
                    "title": e.meta["title"],
                    "caption": e.meta["caption"].format(**fields),
                }
            )
    write_json(out_dir / INDEX, {"figures": index})
    return made


def make_study_figures(study: Study, study_dir: Path, cells_dir: Path, out_dir: Path) -> list[Path]:
    """Write the figures that apply to ``study`` (STUDY_FIGURES) + ``figures.json``; return their paths.

    ``study_dir`` holds the aggregate outputs (cells.csv, table.json); ``cells_dir`` the cells' folders.
    """
    return _run(STUDY_FIGURES, _Ctx(study, Path(study_dir), Path(cells_dir)), out_dir)


# ----------------------------------------------------------------------------------------------- data
def _examples(data_dir: Path, k: int = 4) -> list[tuple[str, dict]]:
    files = sorted(Path(data_dir).glob("p*.npz"))
    if not files:
        return []
    pick = sorted({round(i * (len(files) - 1) / max(1, k - 1)) for i in range(min(k, len(files)))})
    out = []
    for i in pick:
        with np.load(files[i], allow_pickle=False) as z:
            if "raw" not in z or "image" not in z or "mask" not in z or len(z["mask"]) == 0:
                continue
            area = z["mask"].reshape(len(z["mask"]), -1).astype(bool).sum(1)
            s = int(np.argmax(area)) if area.max() > 0 else len(area) // 2
            out.append(
                (
                    files[i].stem,
                    {
                        "raw": z["raw"][s],
                        "image": z["image"][s],
                        "mask": z["mask"][s],
                        "slice": int(z["slice"][s]) if "slice" in z else s,
                    },
                )
            )
    return out


@_register(
    DATA_FIGURES,
    "clahe",
    file="clahe.png",
    title="Preprocessing: before and after CLAHE",
    caption="Example slices (the one with the largest mask per patient) after intensity windowing (top) "
    "and after contrast-limited adaptive histogram equalisation (bottom); the ground-truth contour "
    "is drawn in green. Patients are named by pseudonym.",
)
def fig_clahe(examples: list, path: Path) -> dict | None:
    if not examples:
        return None
    k = len(examples)
    fig, axes = plt.subplots(2, k, figsize=(1.9 * k + 0.6, 4.4), squeeze=False)
    for j, (pid, e) in enumerate(examples):
        for i, (arr, vmax) in enumerate(((e["raw"], 255), (e["image"], 1.0))):
            ax = axes[i, j]
            ax.imshow(arr, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            _contour(ax, e["mask"], style.GT_COLOUR, "solid")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(f"{pid}\nslice {e['slice']}", fontsize=8)
        axes[0, 0].set_ylabel("windowed (before CLAHE)")
        axes[1, 0].set_ylabel("after CLAHE")
    fig.tight_layout()
    style.save(fig, path)
    return {}


@_register(
    DATA_FIGURES,
    "intensity",
    file="intensity.svg",
    title="Intensity distribution before and after CLAHE",
    caption="Pixel intensity histograms of the {n} example slices above, before and after CLAHE (normalised to 0–1).",
    generic={"n": "selected"},
)
def fig_intensity(examples: list, path: Path) -> dict | None:
    if not examples:
        return None
    raw = np.concatenate([e["raw"].ravel() / 255.0 for _, e in examples])
    img = np.concatenate([e["image"].ravel() for _, e in examples])
    fig, ax = plt.subplots(figsize=(5.6, 2.8))
    bins = np.linspace(0, 1, 51)
    ax.hist(raw, bins=bins, histtype="step", linewidth=1.6, color=style.colour(0), label="before CLAHE", density=True)
    ax.hist(
        img,
        bins=bins,
        histtype="step",
        linewidth=1.6,
        color=style.colour(1),
        label="after CLAHE",
        density=True,
        linestyle="--",
    )
    ax.set_xlabel("normalised intensity (0–1)")
    ax.set_ylabel("density")
    ax.legend()
    style.save(fig, path)
    return {"n": str(len(examples))}


def make_data_figures(data_dir: Path, out_dir: Path) -> list[Path]:
    """CLAHE before/after examples and intensity histograms from ``results/data/*.npz`` (+ figures.json)."""
    ex = _examples(Path(data_dir))
    return _run(DATA_FIGURES, ex, out_dir)


from segsweep.report import adaptive  # noqa: E402  (the figures of adaptive studies, after these)

for _name, _meta, _fn in adaptive.FIGURES:
    _register(STUDY_FIGURES, _name, **_meta)(_fn)

# kind -> file name (callers that only need the names)
FIGURE_FILES = {e.name: e.meta["file"] for e in STUDY_FIGURES}
DATA_FIGURE_FILES = {e.name: e.meta["file"] for e in DATA_FIGURES}


# ------------------------------------------------------------------------- captions of snakemake --report
CAPTION_FILES = {"study": "workflow/report/study_figures.rst", "data": "workflow/report/data_figures.rst"}
_RST = {  # kind: (registry, what the rule declares, heading prefix, fallback heading, closing text)
    "study": (
        STUDY_FIGURES,
        'report(directory("results/studies/{study}/figures"), patterns=["{name}.svg", "{name}.png"]).\n'
        "    Snakemake gives this template the pattern wildcard `name` beside the rule's `study`.",
        "Study {{ study }}: ",
        "**Study {{ study }}: {{ name }}.**",
        "Figures that do not apply to a study (for example the learning-rate plot when the learning rate is "
        "not an axis) are not produced.",
    ),
    "data": (
        DATA_FIGURES,
        'report(directory("results/figures/data"), patterns=["{name}.svg", "{name}.png"]).',
        "",
        "**Data figure {{ name }}.**",
        "",
    ),
}
REGENERATE = "python -m segsweep.report.plots --write-captions"


def captions_rst(kind: str) -> str:
    """The ``snakemake --report`` caption of the figures folder of ``kind`` ("study" or "data"): one Jinja
    branch per registered figure, keyed on the file name's stem (the rule's ``{name}`` pattern wildcard)."""
    reg, declared, prefix, fallback, closing = _RST[kind]
    lines = [
        "{#- GENERATED from the figure registry in src/segsweep/report/plots.py: edit the captions there,",
        f"    then run `{REGENERATE}` (tests/test_figure_registry.py checks it).",
        f"    Caption for {declared} -#}}",
    ]
    if kind == "study":
        lines.append("{% set study = snakemake.wildcards.study %}")
    lines.append("{% set name = snakemake.wildcards.name %}")
    for i, e in enumerate(reg):
        lines.append(f'{{% {"if" if i == 0 else "elif"} name == "{Path(e.meta["file"]).stem}" %}}')
        lines.append(f"**{prefix}{e.meta['title']}.**")
        text = e.meta["caption"].format(**{**GENERIC_FIELDS, **e.meta["generic"]})
        lines += textwrap.wrap(text, 112, break_long_words=False, break_on_hyphens=False)
    lines += ["{% else %}", fallback, "{% endif %}"]
    lines += textwrap.wrap(closing, 112, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def write_captions(root: str | Path = ".") -> list[Path]:
    """(Re)write the ``snakemake --report`` captions (CAPTION_FILES) under the project root ``root``."""
    out = []
    for kind, rel in CAPTION_FILES.items():
        path = Path(root) / rel
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: no such folder (run this from the project root or pass --root)")
        write_text(path, captions_rst(kind))
        out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m segsweep.report.plots",
        description="Generate the snakemake --report figure captions from the registry.",
    )
    ap.add_argument("--write-captions", action="store_true", help=f"rewrite {', '.join(CAPTION_FILES.values())}")
    ap.add_argument("--check", action="store_true", help="exit 1 if a caption file is not current")
    ap.add_argument("--root", default=".", help="project root (default: the current folder)")
    args = ap.parse_args(argv)
    if args.write_captions:
        for path in write_captions(args.root):
            print(path)
        return 0
    if args.check:
        stale = [
            rel
            for kind, rel in CAPTION_FILES.items()
            if not (Path(args.root) / rel).is_file() or (Path(args.root) / rel).read_text() != captions_rst(kind)
        ]
        for rel in stale:
            print(f"{rel}: not current; run `{REGENERATE}`")
        return 1 if stale else 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
