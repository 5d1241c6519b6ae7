"""Search modes: one registry, its names equal the schema's enum, and each mode's points on a small case."""

import pytest

from segsweep.errors import ConfigError
from segsweep.plan.config import schema
from segsweep.plan.search import SEARCH_MODES


def test_schema_enum_equals_registry():
    enum = schema()["definitions"]["study"]["properties"]["mode"]["enum"]
    assert set(enum) == set(SEARCH_MODES.names())


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
