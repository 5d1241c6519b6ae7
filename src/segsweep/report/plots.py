"""Figures of a study and of the data set.

`make_study_figures` reads what `aggregate.aggregate_study` wrote (cells.csv, table.json) plus the cells'
history.csv / per_image.csv / predictions.npz, and writes into ``out_dir`` the figures that apply to the
study, with fixed names (FIGURE_FILES) and an index ``figures.json``:
``{"figures": [{"file", "kind", "title", "caption"}, ...]}`` in report order. A figure that does not apply
(e.g. ``fraction.svg`` for a study without a fraction axis) is not written, and a stale one is removed, so a
Snakemake rule declares the folder (``directory()``) and reads the index.

`make_data_figures` does the same for the ingested data (CLAHE before/after, intensity distributions).

Where a study has more combinations than a figure can show legibly, the figure shows a slice: the other axes
held at the best configuration's labels (the caption says so).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from segsweep.report import style
from segsweep.analysis.aggregate import (
    best_group,
    config_groups,
    config_label,
    fmt,
    label_number,
    label_sort_key,
    layout_axes,
    ranked,
    read_cells_csv,
)
from segsweep.io import write_json

import matplotlib.pyplot as plt  # noqa: E402  (after .style, which selects the Agg backend)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

if TYPE_CHECKING:
    from segsweep.study import Study

FIGURE_FILES = {
    "heatmap": "heatmap.svg",
    "curves": "curves.svg",
    "fraction": "fraction.svg",
    "lr": "lr.svg",
    "schedule": "schedule_lr.svg",
    "loss": "loss.svg",
    "per_patient": "per_patient.svg",
    "overlays": "overlays.png",
}
DATA_FIGURE_FILES = {"clahe": "clahe.png", "intensity": "intensity.svg"}
INDEX = "figures.json"
MAX_HEATMAP_ROWS, MAX_HEATMAP_COLS = 30, 16
MAX_PANELS = 12
MAX_LINES = 8
TOP_PATIENT_CONFIGS = 5


class _Ctx:
    """Everything a study figure needs, loaded once."""

    def __init__(self, study: "Study", study_dir: Path, cells_dir: Path):
        self.study = study
        self.cells_dir = Path(cells_dir)
        self.df = read_cells_csv(Path(study_dir) / "cells.csv", study.axes)
        self.table = json.loads((Path(study_dir) / "table.json").read_text())
        self.value = study.table.value
        self.higher = study.table.higher_is_better
        self.groups = config_groups(study, self.df, self.value)
        self.best = best_group(self.groups, self.higher)
        self._hist: dict[str, pd.DataFrame | None] = {}

    def history(self, cell: str) -> pd.DataFrame | None:
        if cell not in self._hist:
            p = self.cells_dir / cell / "history.csv"
            self._hist[cell] = pd.read_csv(p) if p.exists() else None
        return self._hist[cell]

    def ordered(self, axis: str) -> list[str]:
        vals = list(self.study.axis_values.get(axis, ()))
        vals += [g["labels"][axis] for g in self.groups if g["labels"][axis] not in vals]
        vals = [v for v in dict.fromkeys(vals) if any(g["labels"][axis] == v for g in self.groups)]
        return sorted(vals, key=label_sort_key) if self.study.mode == "random" else vals

    def slice_for(self, free: Sequence[str]) -> tuple[list[dict], dict]:
        """Configurations to draw when ``free`` axes vary: all of them if the other axes have ≤ MAX_LINES
        combinations, else those matching the best configuration on every other axis. Returns (groups, held)."""
        others = [a for a in self.study.axes if a not in free]
        combos = {tuple(g["labels"][a] for a in others) for g in self.groups}
        if len(combos) <= MAX_LINES or self.best is None:
            return list(self.groups), {}
        held = {a: self.best["labels"][a] for a in others}
        return [g for g in self.groups if all(g["labels"][a] == v for a, v in held.items())], held


def _held_text(held: dict) -> str:
    return f" Other axes held at the best configuration: {config_label(held.items())}." if held else ""


def _ci_err(g: dict) -> tuple[float, float]:
    if g["ci_low"] is None:
        return 0.0, 0.0
    return g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]


def _label_width(labels: Sequence[str]) -> float:
    return 0.065 * max((len(s) for s in labels), default=0)


# ------------------------------------------------------------------------------------------ heatmap
def fig_heatmap(c: _Ctx, path: Path) -> dict | None:
    t = c.table
    nr, nc = len(t["rows"]), len(t["cols"])
    if nr == 0 or nc == 0 or nr > MAX_HEATMAP_ROWS or nc > MAX_HEATMAP_COLS:
        return None
    vals = np.array([[x["mean"] if x["mean"] is not None else np.nan for x in line] for line in t["cells"]])
    if np.all(np.isnan(vals)):
        return None
    # tick labels carry the values only; the axis names are the axis titles
    row_labels = [", ".join(r["labels"].values()) or "all" for r in t["rows"]]
    col_labels = [", ".join(cl["labels"].values()) for cl in t["cols"]]
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
    masked = np.ma.masked_invalid(vals)
    cmap = cmap if t["higher_is_better"] else cmap.reversed()
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.grid(False)
    partial = False
    for i, line in enumerate(t["cells"]):
        for j, x in enumerate(line):
            if x["mean"] is None:
                bad = x["status"] != "missing"
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="white" if bad else style.MISSING_FACE,
                                       hatch="///" if bad else None, edgecolor="#999999", linewidth=0.5))
                ax.text(j, i, x["status"] if bad else "–", ha="center", va="center", fontsize=8,
                        color=style.BAD_COLOUR if bad else "#666666", fontweight="bold" if bad else "normal",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0} if bad else None)
                continue
            rgba = cmap((x["mean"] - vmin) / (vmax - vmin))
            lum = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
            star = "*" if x["status"] == "partial" else ""
            partial |= bool(star)
            ax.text(j, i, f"{fmt(x['mean'], t['value'])}{star}\nn={x['n']}", ha="center", va="center", fontsize=8,
                    color="black" if lum > 0.5 else "white", fontweight="bold" if x["best_overall"] else "normal")
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
    cap = (f"Mean {style.label_for(t['value'])} per configuration over repeats/folds (n = runs that finished). "
           f"The boxed cell is the best configuration. Hatched cells name the status of configurations "
           f"whose runs all diverged or failed; they carry no number.")
    if partial:
        cap += " * some runs of this configuration diverged or failed; the mean is over the rest."
    return {"title": "Mean per configuration (heatmap)", "caption": cap}


# ------------------------------------------------------------------------------------------- curves
def fig_curves(c: _Ctx, path: Path) -> dict | None:
    row_axes, col_axes = layout_axes(c.study)
    panel_axes = list(row_axes)
    if panel_axes and len({tuple(g["labels"][a] for a in panel_axes) for g in c.groups}) > MAX_PANELS:
        panel_axes = panel_axes[:1]
        if len(c.ordered(panel_axes[0])) > MAX_PANELS:
            panel_axes = []
    if panel_axes:
        keys = [k for k in _product([c.ordered(a) for a in panel_axes])
                if any(tuple(g["labels"][a] for a in panel_axes) == k for g in c.groups)]
        panels = [(config_label(zip(panel_axes, k)),
                   [g for g in c.groups if tuple(g["labels"][a] for a in panel_axes) == k]) for k in keys]
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
    fig, axes = plt.subplots(nrow, ncol, figsize=(pw * ncol, 2.4 * nrow + 0.4), sharex=True, sharey=True,
                             squeeze=False)
    handles: dict[str, Line2D] = {}
    colour_of: dict[str, int] = {}
    any_bad = False
    for ax, (title, gs) in zip(axes.flat, panels):
        for g in gs:
            sub = {a: g["labels"][a] for a in c.study.axes if a not in panel_axes}
            name = config_label(sub.items()) if sub else g["config"]
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
                ax.plot(mean.index, mean.values, color=col, linewidth=1.8, marker=style.marker(k),
                        markevery=max(1, len(mean) // 6), markersize=4)
            handles.setdefault(name, Line2D([], [], color=col, marker=style.marker(k), linewidth=1.8, label=name))
        ax.set_title(title, fontsize=9)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("validation Dice")
    hs = list(handles.values())[:12]
    if any_bad:
        hs.append(Line2D([], [], color=style.BAD_COLOUR, marker="x", linestyle="", mew=2, label="diverged / failed"))
    longest = max(len(h.get_label()) for h in hs)
    ncol = max(1, min(4, len(hs), int(18 * ncol_fig_width(axes) / max(longest, 1))))
    fig.legend(handles=hs, loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    style.save(fig, path)
    return {"title": "Validation Dice per epoch",
            "caption": f"Validation Dice per epoch: thin lines are single runs (seeds/folds), thick lines their "
                       f"mean. {note} × marks the last epoch of a run that diverged or failed."}


def ncol_fig_width(axes) -> float:
    return float(axes[0, 0].figure.get_figwidth())


def _outside_legend(ax, *args, **kw) -> None:
    """Legend to the right of the axes: never on top of data points or error bars."""
    ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _product(lists: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    import itertools

    return list(itertools.product(*lists))


# ----------------------------------------------------------------------------- value vs numeric axis
def _value_vs_axis(c: _Ctx, path: Path, axis: str, *, log: bool, group_axes: Sequence[str] | None = None,
                   xlabels: dict[str, str] | None = None) -> tuple[dict | None, dict]:
    gs, held = c.slice_for([axis, *(group_axes or [])])
    gs = [g for g in gs if label_number(g["labels"][axis]) is not None]
    if len({g["labels"][axis] for g in gs}) < 2 or all(g["mean"] is None for g in gs):
        return None, held
    lines_by = [a for a in c.study.axes if a != axis and a not in held]
    series: dict[str, list[dict]] = {}
    for g in gs:
        series.setdefault(config_label((a, g["labels"][a]) for a in lines_by) if lines_by else "all", []).append(g)
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bad_drawn = False
    random = c.study.mode == "random"
    for k, (name, members) in enumerate(series.items()):
        members = sorted(members, key=lambda g: label_number(g["labels"][axis]))
        ok = [g for g in members if g["mean"] is not None]
        xs = [label_number(g["labels"][axis]) for g in ok]
        ys = [g["mean"] for g in ok]
        err = np.array([_ci_err(g) for g in ok]).T if ok else None
        if ok:
            ax.errorbar(xs, ys, yerr=err, color=style.colour(k), marker=style.marker(k),
                        linestyle="none" if random else "-", label=name if len(series) > 1 else None,
                        markersize=5, alpha=0.9)
        for g in members:
            if g["mean"] is None:
                ax.plot(label_number(g["labels"][axis]), 0.03, marker="x", color=style.colour(k), markersize=8,
                        mew=2, transform=ax.get_xaxis_transform(), clip_on=False)
                bad_drawn = True
    if log:
        ax.set_xscale("log")
    ticks = sorted({label_number(g["labels"][axis]) for g in gs})
    if not random and len(ticks) <= 10:
        ax.set_xticks(ticks, [xlabels.get(f"{t:g}", f"{t:g}") if xlabels else f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(style.label_for(axis))
    ax.set_ylabel(f"mean {style.label_for(c.value)}")
    hs, ls = ax.get_legend_handles_labels()
    if bad_drawn:
        hs.append(Line2D([], [], marker="x", color="#555555", linestyle="", mew=2))
        ls.append("all runs diverged/failed")
    if hs:
        _outside_legend(ax, hs, ls)
    style.save(fig, path)
    return {}, held


def fig_fraction(c: _Ctx, path: Path) -> dict | None:
    if "fraction" not in c.study.axes:
        return None
    # tick labels give the number of training patients where the runs agree on it
    xl = {}
    for f, sub in c.df.groupby("fraction"):
        n = sub["n_train"].dropna().unique()
        if len(n) == 1 and label_number(f) is not None:
            xl[f"{label_number(f):g}"] = f"{label_number(f):g}\n({int(n[0])} pt)"
    res, held = _value_vs_axis(c, path, "fraction", log=False, xlabels=xl)
    if res is None:
        return None
    return {"title": "Effect of the training fraction",
            "caption": f"Mean {style.label_for(c.value)} against the share of the training pool used (number of "
                       f"training patients in brackets); error bars are 95 % t-intervals over repeats/folds. "
                       f"Smaller fractions are subsets of larger ones and the validation set is fixed."
                       + _held_text(held)}


def fig_lr(c: _Ctx, path: Path) -> dict | None:
    if "lr" not in c.study.axes:
        return None
    res, held = _value_vs_axis(c, path, "lr", log=True,
                               group_axes=["optimizer"] if "optimizer" in c.study.axes else [])
    if res is None:
        return None
    return {"title": "Effect of the learning rate",
            "caption": f"Mean {style.label_for(c.value)} against the initial learning rate (log scale)"
                       + (", one line per optimizer" if "optimizer" in c.study.axes else "")
                       + "; error bars are 95 % t-intervals over repeats/folds, × marks configurations whose "
                         "runs all diverged or failed." + _held_text(held)}


# ----------------------------------------------------------------------------------------- schedules
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
                name = lab + (f" ({config_label(other.items())})" if other and len(members) > 1 else "")
                ax.plot(h["epoch"], h["lr"], color=style.colour(k), marker=style.marker(k),
                        markevery=max(1, len(h) // 8), label=name, drawstyle="steps-post")
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
    return {"title": "Learning rate applied per epoch",
            "caption": "The learning rate the optimizer actually used in each epoch (from history.csv), one "
                       "representative run per schedule." + _held_text(held)}


# --------------------------------------------------------------------------------------------- losses
def fig_loss(c: _Ctx, path: Path) -> dict | None:
    if "loss" not in c.study.axes:
        return None
    gs, held = c.slice_for(["loss"])
    losses = c.ordered("loss")
    others = [a for a in c.study.axes if a != "loss" and a not in held]
    series: dict[str, list[dict]] = {}
    for g in gs:
        series.setdefault(config_label((a, g["labels"][a]) for a in others) if others else "all", []).append(g)
    ns = len(series)
    fig, ax = plt.subplots(figsize=(5.2, max(2.2, 0.9 + 0.42 * len(losses) * max(1, ns / 2.5))))
    width = 0.7
    for k, (name, members) in enumerate(series.items()):
        off = (k - (ns - 1) / 2) * (width / max(ns, 1))
        for g in members:
            y = losses.index(g["labels"]["loss"]) + off
            vals = [r["value"] for r in g["runs"] if r["value"] is not None]
            if g["mean"] is None:
                ax.text(0.02, y, g["status"], transform=ax.get_yaxis_transform(), va="center", fontsize=8,
                        color=style.BAD_COLOUR, fontweight="bold")
                continue
            lo, hi = _ci_err(g)
            ax.errorbar(g["mean"], y, xerr=[[lo], [hi]], color=style.colour(k), marker=style.marker(k),
                        markersize=6, linewidth=2, label=name if g is members[0] and ns > 1 else None)
            ax.plot(vals, [y] * len(vals), linestyle="none", marker="|", color=style.colour(k), markersize=8,
                    alpha=0.6)
    ax.set_yticks(range(len(losses)), losses)
    ax.invert_yaxis()
    ax.set_xlabel(f"{style.label_for(c.value)} (mean, 95 % CI; ticks = single runs)")
    ax.set_ylabel("loss")
    ax.grid(axis="y", visible=False)
    if ns > 1:
        _outside_legend(ax)
    style.save(fig, path)
    return {"title": "Loss functions compared",
            "caption": f"Mean {style.label_for(c.value)} per loss with its 95 % t-interval; short ticks are "
                       f"single runs." + _held_text(held)}


# ---------------------------------------------------------------------------------------- per patient
def _patient_dice(c: _Ctx, g: dict) -> pd.Series | None:
    """Per-patient Dice of a configuration: mean over slices within a run, then over its ok runs."""
    parts = []
    for r in g["runs"]:
        p = c.cells_dir / r["cell"] / "per_image.csv"
        if r["status"] == "ok" and p.exists():
            pi = pd.read_csv(p, dtype={"patient": str})
            parts.append(pi.groupby("patient")["dice"].mean())
    if not parts:
        return None
    return pd.concat(parts, axis=1).mean(axis=1).dropna()


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
    labels = [g["config"] for g, _ in top]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.5 * len(top) + 0.0 * _label_width(labels)))
    data = [s.values for _, s in top]
    ax.boxplot(data, orientation="horizontal", widths=0.55, showfliers=False, patch_artist=True,
               boxprops={"facecolor": "#E8EEF6", "edgecolor": "#555555"},
               medianprops={"color": style.OKABE_ITO[0], "linewidth": 2},
               whiskerprops={"color": "#555555"}, capprops={"color": "#555555"})
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for i, d in enumerate(data, start=1):
        ax.plot(d, i + rng.uniform(-0.15, 0.15, len(d)), linestyle="none", marker="o", markersize=3.5,
                color=style.OKABE_ITO[1], alpha=0.8)
    ax.set_yticks(range(1, len(top) + 1), labels)
    ax.invert_yaxis()
    ax.set_xlabel("per-patient validation Dice (mean over slices and runs)")
    ax.grid(axis="y", visible=False)
    style.save(fig, path)
    n_pat = sorted({len(s) for _, s in top})
    return {"title": "Per-patient Dice of the top configurations",
            "caption": f"Distribution over validation patients ({'/'.join(map(str, n_pat))} per configuration; "
                       f"dots are patients, boxes show quartiles and median) for the {len(top)} best "
                       f"configurations, best first."}


# ------------------------------------------------------------------------------------------- overlays
def _contour(ax, m: np.ndarray, colour: str, ls: str) -> None:
    levels = [k - 0.5 for k in np.unique(m) if k > 0]
    if levels:
        ax.contour(m, levels=levels, colors=[colour], linewidths=1.6, linestyles=ls)


def fig_overlays(c: _Ctx, path: Path) -> dict | None:
    if c.best is None:
        return None
    runs = sorted((r for r in c.best["runs"] if r["value"] is not None), key=lambda r: r["value"],
                  reverse=c.higher)
    for r in runs:
        d = c.cells_dir / r["cell"]
        if (d / "per_image.csv").exists() and (d / "predictions.npz").exists():
            break
    else:
        return None
    pi = pd.read_csv(d / "per_image.csv", dtype={"patient": str}).dropna(subset=["dice"])
    if pi.empty:
        return None
    pi = pi.sort_values("dice", kind="stable").reset_index(drop=True)
    picks = [("best", pi.iloc[-1]), ("median", pi.iloc[(len(pi) - 1) // 2]), ("worst", pi.iloc[0])]
    with np.load(d / "predictions.npz", allow_pickle=False) as z:
        pred, img, mask = z["pred"], z["image"], z["mask"]
        pat, sl = z["patient"].astype(str), z["slice"].astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(7.2, 3.0))
    for ax, (name, row) in zip(axes, picks):
        idx = np.flatnonzero((pat == str(row["patient"])) & (sl == int(row["slice"])))
        ax.axis("off")
        if not idx.size:
            continue
        i = int(idx[0])
        ax.imshow(img[i], cmap="gray", interpolation="nearest")
        _contour(ax, mask[i], style.GT_COLOUR, "solid")
        _contour(ax, pred[i], style.PRED_COLOUR, "dashed")
        ax.set_title(f"{name}: Dice {row['dice']:.3f}\n{row['patient']}, slice {int(row['slice'])}", fontsize=8.5)
    fig.legend(handles=[Line2D([], [], color=style.GT_COLOUR, linewidth=1.6, label="ground truth"),
                        Line2D([], [], color=style.PRED_COLOUR, linewidth=1.6, linestyle="dashed",
                               label="prediction")], loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    style.save(fig, path)
    rep = f"seed {r['repeat']}" + (f", fold {r['fold']}" if r["fold"] is not None else "")
    return {"title": "Best, median and worst validation images",
            "caption": f"Validation images of the best configuration ({c.best['config']}; run {r['cell']}, {rep}) "
                       f"with the best, median and worst Dice: ground truth solid, prediction dashed. Patients "
                       f"are named by pseudonym."}


STUDY_FIGURES: dict[str, Callable[[_Ctx, Path], dict | None]] = {
    "heatmap": fig_heatmap,
    "curves": fig_curves,
    "fraction": fig_fraction,
    "lr": fig_lr,
    "schedule": fig_schedule,
    "loss": fig_loss,
    "per_patient": fig_per_patient,
    "overlays": fig_overlays,
}


def _run(figs: dict, files: dict, ctx, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made, index = [], []
    with style.use():
        for kind, fn in figs.items():
            path = out_dir / files[kind]
            meta = fn(ctx, path)
            if meta is None:
                path.unlink(missing_ok=True)  # a figure that no longer applies must not linger
                continue
            made.append(path)
            index.append({"file": files[kind], "kind": kind, **meta})
    write_json(out_dir / INDEX, {"figures": index})
    return made


def make_study_figures(study: "Study", study_dir: Path, cells_dir: Path, out_dir: Path) -> list[Path]:
    """Write the figures that apply to ``study`` (names in FIGURE_FILES) + ``figures.json``; return their paths.

    ``study_dir`` holds the aggregate outputs (cells.csv, table.json); ``cells_dir`` the cells' folders.
    """
    return _run(STUDY_FIGURES, FIGURE_FILES, _Ctx(study, Path(study_dir), Path(cells_dir)), out_dir)


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
            out.append((files[i].stem, {"raw": z["raw"][s], "image": z["image"][s], "mask": z["mask"][s],
                                        "slice": int(z["slice"][s]) if "slice" in z else s}))
    return out


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
    return {"title": "Preprocessing: before and after CLAHE",
            "caption": "Example slices (the one with the largest mask per patient) after intensity windowing "
                       "(top) and after contrast-limited adaptive histogram equalisation (bottom); the "
                       "ground-truth contour is drawn in green. Patients are named by pseudonym."}


def fig_intensity(examples: list, path: Path) -> dict | None:
    if not examples:
        return None
    raw = np.concatenate([e["raw"].ravel() / 255.0 for _, e in examples])
    img = np.concatenate([e["image"].ravel() for _, e in examples])
    fig, ax = plt.subplots(figsize=(5.6, 2.8))
    bins = np.linspace(0, 1, 51)
    ax.hist(raw, bins=bins, histtype="step", linewidth=1.6, color=style.colour(0), label="before CLAHE",
            density=True)
    ax.hist(img, bins=bins, histtype="step", linewidth=1.6, color=style.colour(1), label="after CLAHE",
            density=True, linestyle="--")
    ax.set_xlabel("normalised intensity (0–1)")
    ax.set_ylabel("density")
    ax.legend()
    style.save(fig, path)
    return {"title": "Intensity distribution before and after CLAHE",
            "caption": f"Pixel intensity histograms of the {len(examples)} example slices above, before and after "
                       f"CLAHE (normalised to 0–1)."}


def make_data_figures(data_dir: Path, out_dir: Path) -> list[Path]:
    """CLAHE before/after examples and intensity histograms from ``results/data/*.npz`` (+ figures.json)."""
    ex = _examples(Path(data_dir))
    return _run({"clahe": fig_clahe, "intensity": fig_intensity}, DATA_FIGURE_FILES, ex, out_dir)
