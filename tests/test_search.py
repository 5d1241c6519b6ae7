"""Search modes: one registry (no schema enum to keep), what each mode declares, each mode's points on a small
case, and a toy mode written as one function carried from the config to the table's order."""

import json

import pytest

from segsweep.analysis.aggregate import aggregate_study
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.plan.config import schema
from segsweep.plan.search import SEARCH_MODES, ModeTraits, check_axis_values, mode_traits
from segsweep.study import study_from_dict, study_to_dict


def test_modes_declare_what_they_are():
    assert "enum" not in schema()["definitions"]["study"]["properties"]["mode"]  # the registry's names
    assert mode_traits("grid") == mode_traits("oneway") == ModeTraits(adaptive=False, ordered=True)
    assert mode_traits("random") == ModeTraits(adaptive=False, ordered=False)
    assert mode_traits("optuna") == ModeTraits(adaptive=True, ordered=True)


def reversed_grid(study, spec, base, limit):
    """The grid's points, each axis declared in reverse: a sampled-like order that tables must sort."""
    for a, vals in spec["axes"].items():
        check_axis_values(study, a, vals)
    axes = {a: list(reversed(v)) for a, v in spec["axes"].items()}
    pts = [{a: v} for a, vals in axes.items() for v in vals]
    return pts, axes


def test_a_toy_mode_goes_from_config_to_table(tmp_path):
    spec = {"mode": "toy", "axes": {"lr": [0.001, 0.01, 0.1]}, "table": {"rows": ["lr"], "cols": []}}
    with SEARCH_MODES.registered("toy", reversed_grid, ordered=False):
        plan = build_plan(sc.prepare({"studies": {"s": spec}}))
    study = study_from_dict(json.loads(json.dumps(study_to_dict(plan.studies["s"]))))  # as the rules pass it
    assert (study.mode, study.adaptive, study.ordered) == ("toy", False, False)
    assert study.axis_values["lr"] == ("0.1", "0.01", "0.001")
    for c in study.cells:
        (tmp_path / "cells" / c.cell_id).mkdir(parents=True)
        (tmp_path / "cells" / c.cell_id / "metrics.json").write_text(
            json.dumps({"cell": c.cell_id, "status": "ok", "val_dice_patient": 0.5})
        )
    aggregate_study(study, tmp_path / "cells", tmp_path / "agg")
    rows = json.loads((tmp_path / "agg" / "table.json").read_text())["rows"]
    assert [r["labels"]["lr"] for r in rows] == ["0.001", "0.01", "0.1"]  # not ordered: sorted by value


def test_grid_is_the_product_in_declared_order():
    pts, order = SEARCH_MODES["grid"]("s", {"axes": {"lr": [0.1, 0.01], "optimizer": ["adam", "sgd"]}}, {}, None)
    assert pts == [
        {"lr": 0.1, "optimizer": "adam"},
        {"lr": 0.1, "optimizer": "sgd"},
        {"lr": 0.01, "optimizer": "adam"},
        {"lr": 0.01, "optimizer": "sgd"},
    ]
    assert order == {"lr": [0.1, 0.01], "optimizer": ["adam", "sgd"]}


def test_grid_limit_keeps_the_ends():
    pts, order = SEARCH_MODES["grid"]("s", {"axes": {"lr": [1, 2, 3, 4, 5]}}, {}, 3)
    assert order["lr"] == [1, 3, 5] and len(pts) == 3


def test_oneway_varies_each_axis_around_the_base():
    base = {"lr": 0.001, "optimizer": "adam"}
    pts, order = SEARCH_MODES["oneway"]("s", {"axes": {"lr": [0.1, 0.001], "optimizer": ["sgd"]}}, base, None)
    assert pts == [
        {"lr": 0.1, "optimizer": "adam"},
        {"lr": 0.001, "optimizer": "adam"},
        {"lr": 0.001, "optimizer": "sgd"},
    ]
    assert order["optimizer"] == ["adam", "sgd"]  # the base value is added to the declared order


def test_random_is_seeded_and_distinct():
    spec = {"axes": {"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"]}, "n": 5, "sample_seed": 3}
    a, _ = SEARCH_MODES["random"]("s", spec, {}, None)
    b, _ = SEARCH_MODES["random"]("s", spec, {}, None)
    assert a == b and len(a) == 5 and len({(p["lr"], p["optimizer"]) for p in a}) == 5
    assert all(1e-4 <= p["lr"] <= 1e-1 for p in a)


def test_unknown_mode_names_the_key():
    with pytest.raises(ConfigError, match=r"studies\.s\.mode.*unknown search mode 'bayes'"):
        SEARCH_MODES.entry("bayes", key="studies.s.mode")


def test_bad_axis_value_names_the_key():
    with pytest.raises(ConfigError, match=r"studies\.s\.axes\.optimizer"):
        SEARCH_MODES["grid"]("s", {"axes": {"optimizer": ["adamm"]}}, {}, None)


def test_contributing_add_a_search_mode_recipe_works():
    """CONTRIBUTING's "Add a search mode", as written: one function, then usable as `mode:` with no other edit."""
    from test_figure_registry import contributing_block

    from segsweep.plan import search

    exec(compile(contributing_block("Add a search mode"), "CONTRIBUTING.md", "exec"), dict(vars(search)))
    try:
        lrs = [0.0001, 0.001, 0.01, 0.1]
        axes = {"lr": lrs, "batch_size": [4, 8]}
        spec = {
            "mode": "latin_hypercube",
            "n": 4,
            "sample_seed": 2,
            "axes": axes,
            "table": {"rows": ["lr"], "cols": []},
        }
        plan = build_plan(sc.prepare({"studies": {"s": spec}}))
        study = plan.studies["s"]
        assert not study.ordered and not study.adaptive and len(study.cells) == 4
        params = [plan.cells[c.cell_id].params for c in study.cells]
        assert sorted(p.lr for p in params) == lrs  # one point per stratum of each axis
        assert sorted(p.batch_size for p in params) == [4, 4, 8, 8]
        with pytest.raises(ConfigError, match=r"studies\.s\.n': required"):
            build_plan(sc.prepare({"studies": {"s": {k: v for k, v in spec.items() if k != "n"}}}))
    finally:
        SEARCH_MODES.unregister("latin_hypercube")
