"""Figures of adaptive (mode: optuna) studies from a trials.json fixture: contour and parallel coordinates
render, deterministically, in the importance order; degraded searches give no figure and no error."""

from __future__ import annotations

import json
import string
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from segsweep.report import adaptive, style
from segsweep.report.plots import STUDY_FIGURES

NEW = ("optuna_contour", "optuna_parallel")
DISTS = {
    "lr": {"name": "FloatDistribution", "attributes": {"low": 1e-4, "high": 1e-1, "log": True, "step": None}},
    "optimizer": {"name": "CategoricalDistribution", "attributes": {"choices": ["sgd", "adam"]}},
    "depth": {"name": "IntDistribution", "attributes": {"low": 1, "high": 6, "log": False, "step": 1}},
    "batch_size": {"name": "CategoricalDistribution", "attributes": {"choices": [8, 16, 32]}},
}


def trials_json(n=12, dists=DISTS, direction="maximize", value="val_dice_patient"):
    rng = np.random.default_rng(0)
    trials = []
    for i in range(n):
        p = {
            "lr": float(10 ** rng.uniform(-4, -1)),
            "optimizer": ["sgd", "adam"][i % 2],
            "depth": int(rng.integers(1, 7)),
            "batch_size": [8, 16, 32][i % 3],
        }
        choices = {a: d["attributes"].get("choices") for a, d in dists.items()}
        p = {a: p[a] if not choices[a] or p[a] in choices[a] else choices[a][0] for a in dists}
        status = "invalid" if i == 5 else "diverged" if i == 3 else "ok"
        v = None
        if status == "ok":
            v = round(0.9 - 0.1 * abs(np.log10(p.get("lr", 1e-3)) + 2.5) - 0.02 * p.get("depth", 1), 4)
        trials.append(
            {
                "number": i,
                "round": i // 4,
                "cell": None if status == "invalid" else f"cell{i:08d}",
                "params": p,
                "optuna_params": p,
                "labels": {a: str(x) for a, x in p.items()},
                "state": status if status == "invalid" else "proposed",
                "value": v,
                "status": status,
            }
        )
    return {"study": "opt", "direction": direction, "value": value, "distributions": dists, "trials": trials}


def ctx(tmp_path, t, adaptive=True):
    (tmp_path / "optuna").mkdir(parents=True, exist_ok=True)
    (tmp_path / "optuna" / "trials.json").write_text(json.dumps(t))
    cells = [x["cell"] for x in t["trials"] if x["cell"]]
    df = pd.DataFrame({"cell": cells, "val_n_patients": [7] * len(cells)})
    return SimpleNamespace(study=SimpleNamespace(adaptive=adaptive), study_dir=tmp_path, df=df)


def draw(c, name, path):
    with style.use():
        return STUDY_FIGURES.entry(name).obj(c, path)


@pytest.fixture(autouse=True)
def no_sklearn_noise(monkeypatch):
    """Fixed importances (the order test should not depend on the evaluator's numbers)."""
    monkeypatch.setattr(
        adaptive,
        "importances",
        lambda t: {
            a: w
            for a, w in zip(["depth", "lr", "batch_size", "optimizer"], [0.5, 0.3, 0.1, 0.1])
            if a in t["distributions"]
        },
    )


def test_registered_after_the_slices_before_the_table():
    names = [e.name for e in STUDY_FIGURES]
    assert names.index("optuna_slices") < names.index("optuna_contour") < names.index("optuna_parallel")
    assert names.index("optuna_parallel") < names.index("optuna_trials")


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("name", NEW)
def test_renders_deterministically_with_filled_caption(tmp_path, name, direction):
    c = ctx(tmp_path / "s", trials_json(direction=direction))
    meta = STUDY_FIGURES.entry(name).meta
    a, b = tmp_path / "a.svg", tmp_path / "b.svg"
    fields = draw(c, name, a)
    assert fields is not None and draw(c, name, b) == fields
    assert a.read_bytes() == b.read_bytes()  # same inputs, same bytes (fixed hash salt, no date)
    assert ET.parse(a).getroot().tag.endswith("svg")
    caption = meta["caption"].format(**fields)
    assert {f for _, f, _, _ in string.Formatter().parse(meta["caption"]) if f} == set(fields)
    assert "the mean over the 7 validation patients" in caption and "validation Dice per patient" in caption
    assert "PED-ANOVA" in caption
    if name == "optuna_contour":
        assert "of the 10 finished trials of 12" in caption
        assert "the 1 trial that" in caption and "the 1 invalid proposal " in caption
    else:
        assert "(10 of 12; the 2 trials that" in caption


def test_contour_pairs_follow_the_importance_order(tmp_path):
    fields = draw(ctx(tmp_path, trials_json()), "optuna_contour", tmp_path / "c.svg")
    # the top three by importance: depth, lr, batch_size (two numeric, one categorical)
    assert fields["pairs"] == "depth × lr, depth × batch_size and lr × batch_size"
    svg = (tmp_path / "c.svg").read_text()
    assert ">16<" in svg and ">32<" in svg  # categorical ticks, as declared


def test_parallel_axes_follow_the_importance_order(tmp_path):
    draw(ctx(tmp_path, trials_json()), "optuna_parallel", tmp_path / "p.svg")
    svg = (tmp_path / "p.svg").read_text()
    pos = [svg.index(f">{a}<") for a in ("depth", "lr", "batch_size", "optimizer")]
    assert pos == sorted(pos)


def test_without_importances_the_study_order_and_the_caption_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(adaptive, "importances", lambda t: {})
    fields = draw(ctx(tmp_path, trials_json()), "optuna_contour", tmp_path / "c.svg")
    assert fields["pairs"].startswith("lr × optimizer") and "no importances" in fields["order"]


def test_real_importances_need_no_scikit_learn_and_are_deterministic():
    imp = adaptive.importances(trials_json())
    assert imp and set(imp) <= set(DISTS) and abs(sum(imp.values()) - 1) < 1e-9
    assert adaptive.importances(trials_json()) == imp


def one_numeric():
    return {"lr": DISTS["lr"], "optimizer": {"name": "CategoricalDistribution", "attributes": {"choices": ["adam"]}}}


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("two valid trials", {"optuna_contour": False, "optuna_parallel": False}),
        ("one numeric parameter", {"optuna_contour": False, "optuna_parallel": False}),
        ("only categorical parameters", {"optuna_contour": False, "optuna_parallel": True}),
        ("not an optuna study", {"optuna_contour": False, "optuna_parallel": False}),
        ("no trials.json", {"optuna_contour": False, "optuna_parallel": False}),
    ],
)
def test_degraded_searches_give_no_figure_and_no_error(tmp_path, case, expect):
    t = trials_json()
    if case == "two valid trials":
        t = trials_json(n=4)  # trials 0, 1, 2 ok, 3 diverged
        t["trials"][2].update(value=None, status="failed")
    elif case == "one numeric parameter":
        t = trials_json(dists=one_numeric())
    elif case == "only categorical parameters":
        t = trials_json(dists={a: DISTS[a] for a in ("optimizer", "batch_size")})
    c = ctx(tmp_path, t, adaptive=case != "not an optuna study")
    if case == "no trials.json":
        (tmp_path / "optuna" / "trials.json").unlink()
    for name, drawn in expect.items():
        path = tmp_path / STUDY_FIGURES.entry(name).meta["file"]
        assert (draw(c, name, path) is not None) == drawn, name
        assert path.exists() == drawn, name


def test_harmonic_fill_keeps_the_trials_and_stays_within_them():
    z = adaptive.harmonic_fill([((0, 0), 0.2), ((9, 9), 0.8), ((9, 9), 0.6), ((4, 0), 0.5)], 10)
    assert z.shape == (10, 10)
    assert z[0, 0] == pytest.approx(0.2) and z[9, 9] == pytest.approx(0.7) and z[0, 4] == pytest.approx(0.5)
    assert z.min() >= 0.2 - 1e-9 and z.max() <= 0.7 + 1e-9  # a harmonic fill has no new extremes
    assert np.allclose(adaptive.harmonic_fill([((3, 2), 0.4)], 6), 0.4)
