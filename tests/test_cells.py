"""Study expansion: cell counts per search mode, stable order-independent hashes, sharing between studies."""

import copy

import pytest

from segsweep.errors import ConfigError
from segsweep.labels import format_value
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.study import study_from_dict, study_to_dict


def plan_of(studies, **kw):
    return build_plan(sc.prepare({"studies": studies, **kw}))


GRID = {
    "axes": {"optimizer": ["adam", "sgd"], "lr": [1e-3, 1e-2, 1e-1], "fraction": [0.5, 1.0]},
    "table": {"rows": ["optimizer", "fraction"], "cols": ["lr"]},
}


def test_grid_count_and_labels():
    plan = plan_of({"g": GRID})
    study = plan.studies["g"]
    assert len(study.cells) == 12 and len(plan.cells) == 12
    assert study.axis_values["lr"] == ("0.001", "0.01", "0.1")
    first = study.cells[0]
    assert dict(first.labels) == {"optimizer": "adam", "lr": "0.001", "fraction": "0.5"}
    assert plan.cells[first.cell_id].params.lr == 1e-3


def test_hash_is_stable_and_order_independent():
    a = plan_of({"g": GRID})
    reordered = copy.deepcopy(GRID)
    reordered["axes"] = dict(reversed(list(GRID["axes"].items())))
    b = plan_of({"g": reordered}, train={"epochs": 10, "optimizer": "adam"})  # same values, other key order
    assert set(a.cells) == set(b.cells)
    assert set(plan_of({"g": GRID}).cells) == set(a.cells)  # same input, same ids, every time
    assert all(len(c) == 12 and int(c, 16) >= 0 for c in a.cells)


def test_one_value_change_touches_only_its_cells():
    a = plan_of({"g": GRID})
    changed = copy.deepcopy(GRID)
    changed["axes"]["lr"] = [1e-3, 1e-2, 3e-1]
    b = plan_of({"g": changed})
    assert len(set(b.cells) - set(a.cells)) == 4  # 2 optimizers × 2 fractions at the new lr
    assert len(set(a.cells) & set(b.cells)) == 8


def test_identical_cells_shared_between_studies():
    other = {"axes": {"lr": [1e-3, 5e-4]}, "table": {"rows": ["lr"], "cols": []}}
    plan = plan_of({"g": GRID, "o": other}, train={"fraction": 1.0})
    # adam, lr 1e-3, fraction 1.0 appears in both studies and is one cell
    assert len(plan.cells) == 12 + 1


def test_repeats_and_cv():
    s = {"axes": {"lr": [1e-3, 1e-2]}, "repeats": 3, "cv": True, "table": {"rows": ["lr"], "cols": []}}
    plan = plan_of({"s": s}, splits={"folds": 4})
    study = plan.studies["s"]
    assert len(study.cells) == 2 * 3 * 4 == len(plan.cells)
    assert {c.fold for c in study.cells} == {0, 1, 2, 3}
    seeds = {plan.cells[c.cell_id].params.seed for c in study.cells}
    assert seeds == {0, 1, 2}
    assert set(plan.split_specs) == {"seed0-cv4"}


def test_oneway_sweeps_around_base():
    s = {
        "mode": "oneway",
        "base": {"lr": 1e-3, "batch_size": 8},
        "axes": {"lr": [1e-4, 1e-3, 1e-2], "batch_size": [4, 8, 16]},
        "table": {"rows": ["lr"], "cols": ["batch_size"]},
    }
    plan = plan_of({"s": s})
    assert len(plan.cells) == 1 + 2 + 2  # base + the other values of each axis


def test_random_mode_is_seeded():
    s = {
        "mode": "random",
        "n": 7,
        "sample_seed": 5,
        "axes": {"lr": {"loguniform": [1e-5, 1e-1]}, "optimizer": ["adam", "sgd"]},
        "table": {"rows": ["optimizer"], "cols": []},
    }
    a, b = plan_of({"s": s}), plan_of({"s": s})
    assert len(a.cells) == 7 and set(a.cells) == set(b.cells)
    assert all(1e-5 <= c.params.lr <= 1e-1 for c in a.cells.values())
    s2 = {**s, "sample_seed": 6}
    assert set(plan_of({"s": s2}).cells) != set(a.cells)


def test_scale_preset_shrinks():
    cfg = {
        "scale": "smoke",
        "scales": {"smoke": {"cell": {"epochs": 1}, "repeats": 1, "axes_limit": 2, "size": [32, 32]}},
    }
    s = {**GRID, "repeats": 5}
    plan = plan_of({"g": s}, **cfg)
    assert len(plan.cells) == 2 * 2 * 2
    assert {c.params.epochs for c in plan.cells.values()} == {1}
    assert plan.preprocess.size == (32, 32)
    assert plan.studies["g"].axis_values["lr"] == ("0.001", "0.1")  # endpoints kept


@pytest.mark.parametrize(
    "study, match",
    [
        ({"axes": {"lrr": [1]}, "table": {"rows": [], "cols": []}}, r"studies\.s\.axes\.lrr.*unknown hyperparameter"),
        ({"axes": {"lr": [-1]}, "table": {"rows": [], "cols": []}}, r"studies\.s\.axes\.lr"),
        ({"axes": {"optimizer": ["adamm"]}, "table": {"rows": [], "cols": []}}, r"studies\.s\.axes\.optimizer"),
        ({"axes": {"lr": [1e-3]}, "table": {"rows": ["optimizer"], "cols": []}}, r"studies\.s\.table"),
        ({"axes": {"loss": ["dice+bcee"]}, "table": {"rows": [], "cols": []}}, r"bcee"),
    ],
)
def test_bad_study_names_the_key(study, match):
    with pytest.raises(ConfigError, match=match):
        plan_of({"s": study})


def test_study_round_trip():
    plan = plan_of({"g": GRID})
    study = plan.studies["g"]
    assert study_from_dict(study_to_dict(study)) == study


def test_labels():
    assert format_value(1e-4) == "0.0001" and format_value(1e-5) == "1e-05"
    assert format_value({"label": "T(0.3,0.7)", "terms": []}) == "T(0.3,0.7)"
    assert format_value({"name": "exponential", "rate": 0.9}) == "exponential(rate=0.9)"
    assert format_value("dice + bce") == "dice + bce"


def test_demo_config_cells():
    plan = build_plan(sc.load_config("config/config.yaml"))
    assert len(plan.studies["lr_optimizer"].cells) == 3 * 2 * 4
    assert len(plan.studies["losses"].cells) == 5 * 2
    # Adam / 1e-3 / fraction 1.0 / dice / seed 0 is shared by the first two studies, Adam / 1e-2 / no schedule
    # by the first and the third
    assert len(plan.cells) == 24 + 10 - 1 + 4 - 1
