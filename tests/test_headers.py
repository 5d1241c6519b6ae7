"""A training job's header names its cell's studies and their axis values (segsweep.plan.headers)."""

from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.plan.headers import MAX_CHARS, params_header, study_headers
from segsweep.study import Study, StudyCell, TableLayout
from segsweep.training.params import CellParams

TABLE = TableLayout(rows=(), cols=())


def _study(name, cells):
    return Study(name=name, title=name, description="", mode="grid", axes=(), table=TABLE, cells=tuple(cells))


def test_a_cell_names_each_study_that_holds_it():
    a = _study("a", [StudyCell("c1", (("optimizer", "adam"), ("lr", "0.001")), 0, None), StudyCell("c2", (), 1, 0)])
    b = _study("b", [StudyCell("c1", (("loss", "dice"),), 0, None)])
    h = study_headers({"a": a, "b": b})
    assert h == {"c1": "a: optimizer=adam lr=0.001 | b: loss=dice", "c2": "a: repeat=1 fold=0"}


def test_a_cell_in_many_studies_stays_short():
    studies = {f"s{k:02d}": _study(f"s{k:02d}", [StudyCell("c", (("lr", "0.001"),), 0, None)]) for k in range(40)}
    h = study_headers(studies)["c"]
    assert len(h) <= MAX_CHARS + len(" | +40 more") and h.startswith("s00: lr=0.001 | s01: lr=0.001")
    shown = h.count("lr=")
    assert h.endswith(f" | +{40 - shown} more")


def test_the_demo_shares_its_dice_cell_across_two_studies():
    plan = build_plan(sc.load_config("config/config.yaml"))
    h = study_headers(plan.studies)
    shared = [v for v in h.values() if "|" in v]
    assert "lr_optimizer: optimizer=adam fraction=1 lr=0.001 | losses: loss=dice" in shared
    assert len(h) == len(plan.cells)


def test_an_adaptive_trial_says_what_differs_from_the_train_block():
    base = CellParams.from_config(sc.cell_defaults()).to_dict(identity=True)
    trial = CellParams.from_config({**sc.cell_defaults(), "lr": 0.02, "loss": "bce"}).to_dict(identity=True)
    assert params_header(trial, base) == "lr=0.02 loss=bce"
    assert params_header(base, base) == "the config's train settings"
