"""Figures of adaptive studies (``mode: optuna``, and any study with a ``pruner``), for
`segsweep.report.plots.STUDY_FIGURES`.

Registered by `segsweep.report.plots` (which imports this module; this module does not import it). They
read ``optuna/trials.json`` beside the study's cells.csv (written by the study's last round,
`segsweep.plan.optuna_rounds.finish_study`): every trial with its round, parameters, value and status, and
the search space's distributions (Optuna's JSON form). A study without that file gets none of them.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segsweep.labels import fmt
from segsweep.study import Budget

# isort: off
from segsweep.report import style  # first: it selects the Agg backend before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator  # noqa: E402
# isort: on

log = logging.getLogger("segsweep.report")

_Ctx = Any  # segsweep.report.plots._Ctx (which registers these figures: FIGURES, in report order)
FIGURES: list[tuple[str, dict, Callable]] = []


def _register(name: str, **meta):
    """Record a figure for `segsweep.report.plots` to register in STUDY_FIGURES (same keywords)."""

    def deco(fn):
        FIGURES.append((name, meta, fn))
        return fn

    return deco


TOP_PARAMS = 4
MAX_TABLE_ROWS = 40


def load_trials(study_dir: Path) -> dict | None:
    p = Path(study_dir) / "optuna" / "trials.json"
    return json.loads(p.read_text()) if p.exists() else None


def _trials(c: _Ctx) -> dict | None:
    if not c.study.adaptive:
        return None
    return load_trials(c.study_dir)


def _complete(t: dict) -> list[dict]:
    return [x for x in t["trials"] if x["value"] is not None]


def optuna_study(t: dict):
    """An in-memory Optuna study of the finished trials of a trials.json (for Optuna's evaluators)."""
    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {a: json_to_distribution(json.dumps(d)) for a, d in t["distributions"].items()}
    study = optuna.create_study(direction=t["direction"])
    for x in _complete(t):
        study.add_trial(
            optuna.trial.create_trial(value=x["value"], params=x["optuna_params"], distributions=dict(dists))
        )
    return study


def importances(t: dict) -> dict[str, float]:
    """Optuna's PED-ANOVA importances (Watanabe et al., "PED-ANOVA: Efficiently Quantifying Hyperparameter
    Importance in Arbitrary Subspaces", IJCAI 2023): for each parameter, how far its distribution among the
    top 10 % of the finished trials departs from its distribution over all of them (Pearson divergence of
    Parzen estimates), normalised to sum 1. Deterministic and needs no scikit-learn (fANOVA's random forest
    does). {} where fewer than two trials finished or nothing varies, or where the evaluator cannot run."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    done = _complete(t)
    if len(done) < 2 or len({x["value"] for x in done}) < 2:
        return {}
    try:
        imp = get_param_importances(optuna_study(t), evaluator=PedAnovaImportanceEvaluator())
    except ImportError as e:
        log.warning("no parameter importances: Optuna's PED-ANOVA evaluator cannot run (%s)", e)
        return {}
    except (RuntimeError, ValueError):
        return {}
    return dict(imp)


def _pruned_study(c: _Ctx) -> bool:
    return "status" in c.df and bool((c.df["status"] == "pruned").any())


@_register(
    "pruning",
    file="pruning.svg",
    title="Pruning",
    caption="How far each configuration got before the study's pruner stopped it. {what} Grey: pruned "
    "configurations ({n_pruned} of {n_configs}); colour: the {n_kept} that finished. {rule}",
    generic={"what": "", "n_pruned": "the", "n_configs": "all", "n_kept": "ones", "rule": ""},
)
def fig_pruning(c: _Ctx, path: Path) -> dict | None:
    if not _pruned_study(c):
        return None
    folds = c.df["fold"].notna().any()
    groups = c.groups
    kept = [g for g in groups if g["status"] != "pruned"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if not folds:  # ASHA: the validation monitor per epoch of every run, cut where its rung stopped it
        for g in groups:
            pruned = g["status"] == "pruned"
            colour = "#9a9a9a" if pruned else style.colour(kept.index(g) % 8)
            for r in g["runs"]:
                h = c.history(r["cell"])
                if h is None or not len(h):
                    continue
                stop = len(h)
                if pruned and g.get("pruned_at"):
                    stop = min(stop, int(g["pruned_at"]))  # the run may have gone on for another study
                ax.plot(
                    h["epoch"][:stop],
                    h["val_dice"][:stop],
                    color=colour,
                    lw=0.8 if pruned else 1.6,
                    alpha=0.7 if pruned else 1.0,
                    zorder=1 if pruned else 2,
                )
                ax.plot(
                    h["epoch"][stop - 1], h["val_dice"][stop - 1], "x" if pruned else "o", color=colour, ms=4, zorder=3
                )
        for d in sorted((c.study_dir / "prune").glob("stage*.json")):  # the rungs the decisions were taken at
            budget = Budget.from_dict(json.loads(d.read_text()).get("budget"))
            if budget is not None and budget.unit == "epoch":
                ax.axvline(budget.value, color="#bbbbbb", lw=0.8, ls=":", zorder=0)
        ax.set_xlabel("epoch (dotted: the rungs)")
        ax.set_ylabel("validation Dice (monitor, per image)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        what = (
            "Lines: the validation monitor (mean per-image Dice on the network grid, the metric rungs "
            "rank on) per epoch of every run."
        )
    else:  # fold pruning: each configuration's value per completed fold; skipped folds marked
        df = c.df
        for i, g in enumerate(groups):
            pruned = g["status"] == "pruned"
            colour = "#9a9a9a" if pruned else style.colour(kept.index(g) % 8)
            rows = df[df["config"] == g["config"]]
            for _, r in rows.iterrows():
                f = int(r["fold"])
                if r["status"] == "pruned":
                    ax.plot(f + 1, i, "x", color="#9a9a9a", ms=5)
                else:
                    v = r.get(c.value)
                    ax.scatter(f + 1, i, s=36, color=colour, zorder=2)
                    if v is not None and not pd.isna(v):
                        ax.annotate(
                            fmt(v, c.value),
                            (f + 1, i),
                            textcoords="offset points",
                            xytext=(0, 5),
                            ha="center",
                            fontsize=6,
                        )
        ax.set_yticks(range(len(groups)), [textwrap.shorten(c.name(g["labels"]), 40) for g in groups], fontsize=6)
        ax.set_xlabel("fold")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        what = f"Dots: each fold's {style.label_for(c.value)} (number above it); ×: a fold the pruner skipped."
    style.save(fig, path)
    reasons = sorted({g.get("pruned_reason", "") for g in groups if g["status"] == "pruned"})
    return {
        "what": what,
        "n_pruned": str(len(groups) - len(kept)),
        "n_configs": str(len(groups)),
        "n_kept": str(len(kept)),
        "rule": (f"First reason given: {reasons[0]}." if reasons else ""),
    }


@_register(
    "optuna_history",
    file="optuna_history.svg",
    title="Optimisation history",
    caption="{value} of each finished trial (dots, in trial order, coloured by round) and the best so far "
    "(line), over {n_trials} trials of the {sampler} search; {n_failed} trials failed, diverged or were invalid "
    "(not drawn).",
    generic={"n_trials": "all", "sampler": "Optuna", "n_failed": "the"},
)
def fig_history(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None or not _complete(t):
        return None
    done = _complete(t)
    maximize = t["direction"] == "maximize"
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rounds = sorted({x["round"] for x in done})
    for i, r in enumerate(rounds):
        xs = [x for x in done if x["round"] == r]
        ax.plot([x["number"] for x in xs], [x["value"] for x in xs], "o", color=style.colour(i), label=f"round {r}")
    best, line = None, []
    for x in sorted(done, key=lambda x: x["number"]):
        if best is None or (x["value"] > best if maximize else x["value"] < best):
            best = x["value"]
        line.append((x["number"], best))
    ax.step(
        [n for n, _ in line], [b for _, b in line], where="post", color="#000000", linewidth=1.5, label="best so far"
    )
    ax.set_xlabel("trial")
    ax.set_ylabel(style.label_for(t["value"]))
    if len(rounds) <= 8:
        ax.legend(fontsize="small")
    style.save(fig, path)
    n_failed = len(t["trials"]) - len(done)
    return {
        "value": style.label_for(t["value"]),
        "n_trials": str(len(t["trials"])),
        "sampler": "Optuna",
        "n_failed": str(n_failed),
    }


@_register(
    "optuna_importance",
    file="optuna_importance.svg",
    title="Parameter importance",
    caption="Importance of each searched parameter for reaching the best {value}: how far its distribution among "
    "the top 10 % of the finished trials departs from its distribution over all of them (Optuna's PED-ANOVA "
    "evaluator, normalised to sum 1); with few trials these are rough.",
)
def fig_importance(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None:
        return None
    imp = importances(t)
    if not imp:
        return None
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.8 + 0.4 * len(names)))
    ax.barh(names, [imp[n] for n in names], color=style.colour(0))
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    style.save(fig, path)
    return {"value": style.label_for(t["value"])}


@_register(
    "optuna_slices",
    file="optuna_slices.svg",
    title="Slice plots of the top parameters",
    caption="{value} of each finished trial against the value of each of the {n_params} most important "
    "parameters (logarithmic axes for log-uniform ones), darker = later trial.",
    generic={"n_params": f"up to {TOP_PARAMS}"},
)
def fig_slices(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None:
        return None
    done = _complete(t)
    if not done:
        return None
    imp = importances(t)
    names = (list(imp) or list(t["distributions"]))[:TOP_PARAMS]
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 0.6, 3.0), squeeze=False, sharey=True)
    order = np.array([x["number"] for x in done], dtype=float)
    shade = (order - order.min()) / max(1.0, order.max() - order.min())
    for ax, a in zip(axes[0], names):
        d = t["distributions"][a]
        vals = [x["optuna_params"][a] for x in done]
        if d["name"] == "CategoricalDistribution":
            choices = [str(v) for v in d["attributes"]["choices"]]
            xs = [choices.index(str(v)) for v in vals]
            ax.set_xticks(range(len(choices)), choices, rotation=30, ha="right")
        else:
            xs = vals
            if d["attributes"].get("log"):
                ax.set_xscale("log")
        ax.scatter(xs, [x["value"] for x in done], c=shade, cmap="Blues", vmin=-0.3, vmax=1, edgecolors="#333333")
        ax.set_xlabel(a)
    axes[0][0].set_ylabel(style.label_for(t["value"]))
    style.save(fig, path)
    return {"value": style.label_for(t["value"]), "n_params": str(len(names))}


# ------------------------------------------------------------------------ contour / parallel coordinates
# Not Optuna's plot_contour / plot_parallel_coordinate (optuna.visualization.matplotlib): they apply the
# ggplot style sheet to the whole process (plt.style.use, so later figures change), order categorical values
# alphabetically and numeric categoricals as numbers (not in the declared order), draw no failed trials,
# order the parallel axes by name (not importance), colour with Blues (the worst lines white on white), and
# warn as experimental. The contour keeps Optuna's interpolation: on a CONTOUR_GRID² grid over the trials'
# range (5 % padding, log10 for log axes), each trial on its nearest node, the rest filled by Plotly's
# harmonic fill (optuna.visualization.matplotlib._contour._interpolate_zmap), re-implemented below.
MIN_VALID_TRIALS = 3
CONTOUR_PARAMS = 3  # pairs among the top 3 parameters: at most three panels
CONTOUR_GRID = 100  # optuna.visualization.matplotlib._contour.CONTOUR_POINT_NUM
CONTOUR_LEVELS = 15
PADDING = 0.05  # optuna.visualization._contour's PADDING_RATIO
FAILED_MARKER = dict(marker="x", color=style.BAD_COLOUR, s=28, linewidths=1.4)
INVALID_MARKER = dict(marker="s", facecolors="none", edgecolors="#777777", s=26, linewidths=1.0)


def _kind(d: dict) -> str | None:
    """The kind of a searched parameter that can take two or more values: "log", "num" or "cat" (else None)."""
    a = d["attributes"]
    if d["name"] == "CategoricalDistribution":
        return "cat" if len(a["choices"]) > 1 else None
    if a["high"] <= a["low"]:
        return None
    return "log" if a.get("log") else "num"


def _coord(d: dict, v) -> float:
    """A parameter value on its plotting axis: log10 for log-uniform, the declared index for categoricals."""
    if d["name"] == "CategoricalDistribution":
        return float([str(c) for c in d["attributes"]["choices"]].index(str(v)))
    return math.log10(v) if d["attributes"].get("log") else float(v)


def _shown(d: dict, u):
    """Back from the plotting coordinate to the axis (10**u on log axes)."""
    return np.power(10.0, u) if d["attributes"].get("log") else u


def _ranked_params(t: dict) -> tuple[list[str], str]:
    """The searched parameters that vary, by importance (`importances`, the importance figure's evaluator)
    or, where none, in the study's order; and the caption's words for that order."""
    dists = t["distributions"]
    imp = importances(t)
    names = [a for a in (list(imp) or list(dists)) if a in dists and _kind(dists[a])]
    if imp:
        return names, "ordered by Optuna's PED-ANOVA importance, as in the importance figure"
    return names, "in the study's order: no importances could be computed"


def _has(x: dict, a: str) -> bool:
    return x.get("optuna_params") is not None and x["optuna_params"].get(a) is not None


BASIS_GENERIC = "over the study's validation patients, one value per trial"


def _basis(c: _Ctx, t: dict) -> str:
    """What a trial's value is computed on: its metric over the validation patients (their number from
    cells.csv, ``val_n_patients`` of the trials' cells), one value per trial."""
    df = getattr(c, "df", None)
    n = ""
    if df is not None and "val_n_patients" in df and "cell" in df:
        cells = {x["cell"] for x in _complete(t) if x.get("cell")}
        vals = pd.to_numeric(df.loc[df["cell"].isin(cells), "val_n_patients"], errors="coerce").dropna()
        n = "/".join(str(int(v)) for v in sorted(set(vals)))
    patients = f"the {n} validation patients" if n else "the study's validation patients"
    if "_patient" in t["value"]:
        return f"the mean over {patients} of each patient's value, one value per trial"
    return f"over {patients}, one value per trial"


def _count(n: int, noun: str) -> str:
    return f"the {n} {noun}{'' if n == 1 else 's'}"


def _range(d: dict, us: list[float]) -> tuple[float, float]:
    if d["name"] == "CategoricalDistribution":
        lo, hi = 0.0, float(len(d["attributes"]["choices"]) - 1)
    else:
        lo, hi = min(us), max(us)
    pad = (hi - lo) * PADDING
    return lo - pad, hi + pad


def harmonic_fill(known: Iterable[tuple[tuple[int, int], float]], n: int) -> np.ndarray:
    """Plotly's interpolation (as Optuna's contour plot uses it): an n×n grid [y, x] equal to the ``known``
    ((x, y), value) there (the mean where a node is given twice), elsewhere the mean of its neighbours inside
    the grid (a discrete Laplace equation with zero-derivative edges), solved as one sparse system."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    idx = np.arange(n * n).reshape(n, n)
    fixed = np.zeros(n * n, dtype=bool)
    b = np.zeros(n * n)
    sums: dict[int, list[float]] = {}
    for (x, y), v in known:
        sums.setdefault(int(idx[y, x]), []).append(v)
    for i, vs in sums.items():
        fixed[i], b[i] = True, float(np.mean(vs))
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:, 1:], idx[:, :-1]), (idx[:-1, :], idx[1:, :]), (idx[1:, :], idx[:-1, :])]
    src = np.concatenate([p.ravel() for p, _ in pairs])
    nbr = np.concatenate([q.ravel() for _, q in pairs])
    keep = ~fixed[src]
    src, nbr = src[keep], nbr[keep]
    fix = np.flatnonzero(fixed)
    rows = np.concatenate([src, src, fix])
    cols = np.concatenate([src, nbr, fix])
    data = np.concatenate([np.ones(len(src)), -np.ones(len(src)), np.ones(len(fix))])
    a = csc_matrix((data, (rows, cols)), shape=(n * n, n * n))  # duplicates add up: the degree on the diagonal
    return np.asarray(spsolve(a, b)).reshape(n, n)


def _contour_pairs(t: dict, names: list[str], done: list[dict]) -> list[tuple[str, str]]:
    """Pairs (x, y) among the top CONTOUR_PARAMS parameters that took two or more values in the finished
    trials, the more important one first, each with a numeric parameter (two categoricals: nothing to
    interpolate between)."""
    dists = t["distributions"]
    varied = [a for a in names if len({str(x["optuna_params"][a]) for x in done if _has(x, a)}) >= 2]
    top = varied[:CONTOUR_PARAMS]
    return [
        (a, b) for i, a in enumerate(top) for b in top[i + 1 :] if not (_kind(dists[a]) == _kind(dists[b]) == "cat")
    ]


def _pair_text(pairs: list[tuple[str, str]]) -> str:
    words = [f"{a} × {b}" for a, b in pairs]  # x × y as drawn
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _set_axis(ax, which: str, d: dict, lim: tuple[float, float]) -> None:
    if d["name"] == "CategoricalDistribution":
        choices = [str(v) for v in d["attributes"]["choices"]]
        getattr(ax, f"set_{which}ticks")(range(len(choices)), choices)
    elif d["attributes"].get("log"):
        getattr(ax, f"set_{which}scale")("log")
    getattr(ax, f"set_{which}lim")(*_shown(d, np.array(lim)))


def _failed_and_invalid(t: dict) -> tuple[list[dict], list[dict]]:
    """Trials without a value: trained but collapsed / diverged / failed, and invalid proposals (never trained)."""
    bad = [x for x in t["trials"] if x["value"] is None]
    return [x for x in bad if x["status"] != "invalid"], [x for x in bad if x["status"] == "invalid"]


def _value_range(values: list[float]) -> tuple[float, float]:
    lo, hi = float(min(values)), float(max(values))
    if hi <= lo:  # one value: a band around it
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


@_register(
    "optuna_contour",
    file="optuna_contour.svg",
    title="Contour plots of the top parameter pairs",
    caption="{value}, {basis}, of {n_valid} (dots; star: the best), interpolated over the plane of {pairs} "
    "({order}) by the harmonic fill of Optuna's contour plot: brighter = better; between the trials the surface "
    "is interpolated, not measured. Logarithmic axes for log-uniform parameters, categorical ones in their "
    "declared order; × marks {n_failed} that collapsed, diverged or failed and □ {n_invalid} (never trained); "
    "without a value, they are not in the surface.",
    generic={
        "basis": BASIS_GENERIC,
        "n_valid": "the finished trials",
        "pairs": f"each pair of the {CONTOUR_PARAMS} most important parameters",
        "order": "by Optuna's PED-ANOVA importance",
        "n_failed": "the trials",
        "n_invalid": "the invalid proposals",
    },
)
def fig_contour(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None:
        return None
    done = _complete(t)
    if len(done) < MIN_VALID_TRIALS:
        return None
    names, order = _ranked_params(t)
    pairs = _contour_pairs(t, names, done)
    if not pairs:
        return None
    dists = t["distributions"]
    maximize = t["direction"] == "maximize"
    levels = MaxNLocator(CONTOUR_LEVELS).tick_values(*_value_range([x["value"] for x in done]))  # round steps
    cmap = style.SEQUENTIAL if maximize else f"{style.SEQUENTIAL}_r"  # brighter = better
    best = (max if maximize else min)(done, key=lambda x: (x["value"], -x["number"] if maximize else x["number"]))
    failed, invalid = _failed_and_invalid(t)
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.4 * len(pairs) + 1.0, 3.3), squeeze=False)
    filled = None
    for ax, (xa, ya) in zip(axes[0], pairs):
        dx, dy = dists[xa], dists[ya]

        def uv(xs, xa=xa, ya=ya, dx=dx, dy=dy):
            xs = [x for x in xs if _has(x, xa) and _has(x, ya)]
            return [_coord(dx, x["optuna_params"][xa]) for x in xs], [_coord(dy, x["optuna_params"][ya]) for x in xs]

        def shown(xs, dx=dx, dy=dy):
            u, v = uv(xs)
            return _shown(dx, np.array(u)), _shown(dy, np.array(v))

        u_all, v_all = uv(t["trials"])
        xlim, ylim = _range(dx, u_all), _range(dy, v_all)
        gx, gy = np.linspace(*xlim, CONTOUR_GRID), np.linspace(*ylim, CONTOUR_GRID)
        ok = [x for x in done if _has(x, xa) and _has(x, ya)]
        u, v = uv(ok)
        known = [
            ((int(np.argmin(np.abs(gx - a))), int(np.argmin(np.abs(gy - b)))), x["value"]) for a, b, x in zip(u, v, ok)
        ]
        zi = harmonic_fill(known, CONTOUR_GRID)
        _set_axis(ax, "x", dx, xlim)
        _set_axis(ax, "y", dy, ylim)
        gxs, gys = _shown(dx, gx), _shown(dy, gy)
        filled = ax.contourf(gxs, gys, zi, levels=levels, cmap=cmap)
        ax.contour(gxs, gys, zi, levels=levels, colors="#333333", linewidths=0.3, alpha=0.6)
        ax.grid(False)
        dot = {"facecolors": "#FFFFFF", "edgecolors": "#000000", "zorder": 4}
        ax.scatter(*shown([x for x in ok if x is not best]), marker="o", s=18, linewidths=0.8, **dot)
        if best in ok:
            ax.scatter(*shown([best]), marker="*", s=110, linewidths=0.9, **dot)
        if uv(failed)[0]:
            ax.scatter(*shown(failed), zorder=4, **FAILED_MARKER)
        if uv(invalid)[0]:
            ax.scatter(*shown(invalid), zorder=4, **INVALID_MARKER)
        ax.set_xlabel(xa)
        ax.set_ylabel(ya)
    bar = fig.colorbar(filled, ax=list(axes[0]), shrink=0.9, pad=0.03)
    bar.set_label(textwrap.fill(style.label_for(t["value"]), 32))
    style.save(fig, path)
    return {
        "value": style.label_for(t["value"]),
        "basis": _basis(c, t),
        "n_valid": f"the {len(done)} finished trials of {len(t['trials'])}",
        "pairs": _pair_text(pairs),
        "order": order,
        "n_failed": _count(len(failed), "trial"),
        "n_invalid": _count(len(invalid), "invalid proposal"),
    }


def _ticks(d: dict) -> tuple[tuple[float, float], list[tuple[float, str]]]:
    """The (plotting-coordinate) range of a parameter's axis, its search space, and its ticks."""
    a = d["attributes"]
    if d["name"] == "CategoricalDistribution":
        choices = [str(v) for v in a["choices"]]
        return (0.0, len(choices) - 1.0), [(float(i), s) for i, s in enumerate(choices)]
    lo, hi = float(a["low"]), float(a["high"])
    if a.get("log"):
        ts = [v for v in LogLocator(base=10).tick_values(lo, hi) if lo <= v <= hi]
        ts = ts if len(ts) >= 2 else [lo, hi]
        return (math.log10(lo), math.log10(hi)), [(math.log10(v), f"{v:g}") for v in ts]
    steps = [1, 2, 5, 10] if d["name"] == "IntDistribution" else None
    ts = [v for v in MaxNLocator(5, steps=steps, integer=d["name"] == "IntDistribution").tick_values(lo, hi)]
    ts = [v for v in ts if lo - 1e-12 <= v <= hi + 1e-12] or [lo, hi]
    return (lo, hi), [(float(v), f"{v:g}") for v in ts]


@_register(
    "optuna_parallel",
    file="optuna_parallel.svg",
    title="Parallel coordinates of the trials",
    caption="One line per finished trial ({n_valid}; {n_bad} that collapsed, diverged, failed or were invalid "
    "have no value and are not drawn) across the searched parameters ({order}) and, last, {value}, {basis}, "
    "which also colours the line: brighter = better, the best trial drawn last, on top. Parameter axes span the "
    "search space, logarithmic for log-uniform parameters, categorical ones in their declared order.",
    generic={
        "n_valid": "all of them",
        "n_bad": "trials",
        "order": "by Optuna's PED-ANOVA importance",
        "basis": BASIS_GENERIC,
    },
)
def fig_parallel(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None:
        return None
    done = _complete(t)
    if len(done) < MIN_VALID_TRIALS:
        return None
    names, order = _ranked_params(t)
    dists = t["distributions"]
    done = [x for x in done if all(_has(x, a) for a in names)]
    if len(names) < 2 or len(done) < MIN_VALID_TRIALS:
        return None
    maximize = t["direction"] == "maximize"
    vlo, vhi = _value_range([x["value"] for x in done])
    axes = []  # per dimension: normalise, ticks
    for a in names:
        (lo, hi), ticks = _ticks(dists[a])
        axes.append((lambda u, lo=lo, hi=hi: (u - lo) / (hi - lo), ticks))
    vticks = [(float(v), f"{v:g}") for v in MaxNLocator(5).tick_values(vlo, vhi) if vlo <= v <= vhi]
    axes.append((lambda u: (u - vlo) / (vhi - vlo), vticks or [(vlo, f"{vlo:g}"), (vhi, f"{vhi:g}")]))
    # worst first: the best lines end on top
    drawn = sorted(done, key=lambda x: (x["value"] if maximize else -x["value"], -x["number"]))
    lines = []
    for x in drawn:
        us = [_coord(dists[a], x["optuna_params"][a]) for a in names] + [x["value"]]
        lines.append([(i, norm(u)) for i, ((norm, _), u) in enumerate(zip(axes, us))])
    fig, ax = plt.subplots(figsize=(max(4.8, 1.35 * len(axes) + 1.2), 3.4))
    cmap = style.SEQUENTIAL if maximize else f"{style.SEQUENTIAL}_r"
    lc = LineCollection(lines, cmap=cmap, linewidths=1.4, alpha=0.9)
    lc.set_array(np.array([x["value"] for x in drawn], dtype=float))
    lc.set_clim(vlo, vhi)
    ax.add_collection(lc)
    for i, (norm, ticks) in enumerate(axes):
        ax.add_line(Line2D([i, i], [0, 1], color="#777777", linewidth=0.8, zorder=0.5))
        side = 1 if i == len(axes) - 1 else -1  # the objective's ticks on the right, the others' on the left
        for u, text in ticks:
            y = norm(u)
            ax.add_line(Line2D([i, i + 0.04 * side], [y, y], color="#777777", linewidth=0.8))
            ax.text(i + 0.06 * side, y, text, ha="left" if side > 0 else "right", va="center", fontsize=6.5)
    ax.set_xlim(-0.45, len(axes) - 0.55)
    ax.set_ylim(-0.04, 1.04)
    labels = [*names, textwrap.fill(style.label_for(t["value"]), 18)]
    ax.set_xticks(range(len(axes)), labels)
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "right", "top", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", length=0)
    style.save(fig, path)
    n_bad = len(t["trials"]) - len(done)
    return {
        "value": style.label_for(t["value"]),
        "n_valid": f"{len(done)} of {len(t['trials'])}",
        "n_bad": _count(n_bad, "trial"),
        "order": order,
        "basis": _basis(c, t),
    }


@_register(
    "optuna_trials",
    file="optuna_trials.svg",
    title="Trials",
    caption="Every trial of the search{cut}: its round, parameters, {value} and status (ok, diverged, failed, "
    "or invalid: a proposal the plan rejects, e.g. a depth too deep for the image size; it is told to Optuna "
    "as failed and never trained).",
    generic={"cut": ""},
)
def fig_trials(c: _Ctx, path: Path) -> dict | None:
    t = _trials(c)
    if t is None or not t["trials"]:
        return None
    axes = list(t["distributions"])
    rows = []
    for x in t["trials"][:MAX_TABLE_ROWS]:
        rows.append(
            [str(x["number"]), str(x["round"]), *(x["labels"][a] for a in axes)]
            + ["" if x["value"] is None else fmt(x["value"], t["value"]), x["status"]]
        )
    head = ["trial", "round", *axes, style.label_for(t["value"]), "status"]
    fig, ax = plt.subplots(figsize=(min(12.0, 1.1 * len(head) + 1), 0.5 + 0.25 * (len(rows) + 1)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=head, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    style.save(fig, path)
    n = len(t["trials"])
    cut = f" (the first {MAX_TABLE_ROWS} of {n})" if n > MAX_TABLE_ROWS else ""
    return {"value": style.label_for(t["value"]), "cut": cut}
