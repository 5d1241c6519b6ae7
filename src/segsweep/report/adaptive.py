"""Figures of adaptive (``mode: optuna``) studies, for `segsweep.report.plots.STUDY_FIGURES`.

Registered by `segsweep.report.plots` (which imports this module; this module does not import it). They
read ``optuna/trials.json`` beside the study's cells.csv (written by the study's last round,
`segsweep.plan.optuna_rounds.finish_study`): every trial with its round, parameters, value and status, and
the search space's distributions (Optuna's JSON form). A study without that file gets none of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segsweep.labels import fmt

# isort: off
from segsweep.report import style  # first: it selects the Agg backend before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
# isort: on

_Ctx = Any  # segsweep.report.plots._Ctx (which registers these figures: FIGURES, in report order)
FIGURES: list[tuple[str, dict, Callable]] = []


def _register(name: str, **meta):
    """Record a figure for `segsweep.report.plots` to register in STUDY_FIGURES (same keywords)."""

    def deco(fn):
        FIGURES.append((name, meta, fn))
        return fn

    return deco


TOP_PARAMS = 4
IMPORTANCE_SEED = 0
MAX_TABLE_ROWS = 40


def load_trials(study_dir: Path) -> dict | None:
    p = Path(study_dir) / "optuna" / "trials.json"
    return json.loads(p.read_text()) if p.exists() else None


def _trials(c: _Ctx) -> dict | None:
    if c.study.mode != "optuna":
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
    """Optuna's fANOVA importances (seeded), {} where fewer than two trials finished or nothing varies."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    done = _complete(t)
    if len(done) < 2 or len({x["value"] for x in done}) < 2:
        return {}
    try:
        imp = get_param_importances(optuna_study(t), evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED))
    except (RuntimeError, ValueError):
        return {}
    return dict(imp)


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
    caption="Share of the variance of {value} over the finished trials explained by each searched parameter "
    "(Optuna's fANOVA evaluator, seed {seed}); with few trials these are rough.",
    generic={"seed": str(IMPORTANCE_SEED)},
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
    ax.set_xlabel("importance (share of variance)")
    ax.set_xlim(0, 1)
    style.save(fig, path)
    return {"value": style.label_for(t["value"]), "seed": str(IMPORTANCE_SEED)}


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
