"""The Pruner interface (segsweep.plan.pruner): planning asks it only, budgets are structured, state round-trips
(or planning stops naming the pruner), and a toy pruner written as one class goes from the config to a
decision file with no other edit."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from segsweep import paths
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan import pruning
from segsweep.plan.cells import build_plan
from segsweep.plan.pruner import Pruner
from segsweep.study import Budget, pruned_cells

TINY = Path(__file__).resolve().parent / "e2e" / "tiny_config.yaml"


def plan_with(pruner: dict, epochs=4, **study):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=epochs)
    spec = {"axes": {"lr": [0.01, 0.1, 0.2]}, "table": {"rows": ["lr"], "cols": []}, "pruner": pruner, **study}
    cfg["studies"] = {"s": spec}
    cfg = sc.prepare(cfg)
    plan = build_plan(cfg)
    return pruning.study_pruners(cfg, plan.studies, plan.cells), plan


# ------------------------------------------------------------------------------------ a toy pruner
@dataclass(frozen=True)
class FloorPruner(Pruner):
    """Two stages: every configuration to epoch ``at``; those whose mean monitor there is below ``floor`` stop."""

    floor: float
    at: int

    def __init__(self, *, floor: float = 0.5, at: int = 1):
        object.__setattr__(self, "floor", float(floor))
        object.__setattr__(self, "at", int(at))

    n_stages = 2

    def stage_files(self, k, cells):
        if k == 0:
            return [paths.rung_path(c.cell_id, self.at) for c in cells]
        return [paths.cell_file(c.cell_id) for c in cells]

    def budget(self, k):
        return Budget("epoch", self.at)

    def cell_rungs(self):
        return (self.at,)

    def decide(self, study, k, alive):
        scores = {}
        for name, cells in alive.items():
            vals = [json.loads(Path(paths.rung_path(c.cell_id, self.at)).read_text())["best_val_dice"] for c in cells]
            scores[name] = sum(vals) / len(vals)
        keep = [n for n, v in scores.items() if v >= self.floor]
        pruned = [
            {"config": n, "cells": [c.cell_id for c in alive[n]], "epochs_run": self.at, "value": v,
             "value_key": "best_val_dice", "reason": f"below {self.floor}"}
            for n, v in scores.items() if n not in keep
        ]  # fmt: skip
        return {"scores": scores, "keep": keep, "pruned": pruned, "rule": f"monitor ≥ {self.floor} at epoch {self.at}"}


def test_a_toy_pruner_goes_from_config_to_decision(tmp_path, monkeypatch):
    with pruning.PRUNERS.registered("floor", FloorPruner):
        pruners, plan = plan_with({"name": "floor", "floor": 0.6, "at": 2})
        p = pruners["s"]
        assert p == FloorPruner(floor=0.6, at=2)
        study = plan.studies["s"]
        assert set(pruning.cell_rungs(pruners, plan.studies).values()) == {(2,)}
        d = pruning.pruner_dict(p)
        assert d == {"name": "floor", "floor": 0.6, "at": 2}  # the decision rule's params
        monkeypatch.chdir(tmp_path)
        files = pruning.stage_inputs(p, study, 0, [])
        assert len(files) == 3 and all(f.endswith("/rungs/2.json") for f in files)
        for f, dice in zip(files, [0.7, 0.4, 0.65]):  # lr 0.01, 0.1, 0.2 in plan order
            Path(f).parent.mkdir(parents=True)
            Path(f).write_text(json.dumps({"best_val_dice": dice}))
        dec = pruning.decide_stage(json.loads(json.dumps(d)), study, 0, [], tmp_path / "stage0.json")
        assert dec["keep"] == ["lr=0.01", "lr=0.2"] and dec["budget"]["value"] == 2
        (stopped,) = pruned_cells([json.loads((tmp_path / "stage0.json").read_text())]).values()
        assert stopped["reason"] == "below 0.6" and Budget.from_dict(stopped["budget"]) == Budget("epoch", 2)
    assert "floor" not in pruning.PRUNERS


# ------------------------------------------------------------------------------------ the interface
def test_budgets_are_structured_values_in_the_decision_file():
    assert pruning.Asha(rungs=[3, 9]).budget(1) == Budget("epoch", 9)
    fold = pruning.FoldPruner(n_folds=6).budget(0)
    assert fold == Budget("fold", 1, 6) and str(fold) == "fold 1 of 6"
    d = fold.to_dict()
    assert d == {"unit": "fold", "value": 1, "total": 6, "text": "fold 1 of 6"}
    assert Budget.from_dict(json.loads(json.dumps(d))) == fold
    assert Budget.from_dict("epoch 3") is None  # an older decision's text is not parsed back


def test_state_round_trips_and_the_rule_params_stay_as_they_were():
    asha = pruning.Asha(rungs=[1, 2, 4], eta=2)
    assert pruning.pruner_dict(asha) == {"name": "asha", "rungs": [1, 2, 4], "eta": 2.0}  # unchanged params
    assert pruning.pruner_from_dict(json.loads(json.dumps(pruning.pruner_dict(asha)))) == asha
    folds = pruning.FoldPruner(threshold=0.5, n_folds=3)
    assert pruning.pruner_from_dict(pruning.pruner_dict(folds)) == folds


class Doubling(FloorPruner):
    """State that does not come back: the constructor doubles what ``state()`` reports."""

    def __init__(self, *, floor: float = 0.25, at: int = 1):
        super().__init__(floor=2 * floor, at=at)


class NoJson(FloorPruner):
    def state(self):
        return {"floor": {self.floor}, "at": self.at}  # a set: not JSON


@pytest.mark.parametrize("cls,why", [(Doubling, "from_state"), (NoJson, "not JSON serializable")])
def test_a_pruner_whose_state_does_not_round_trip_stops_planning_naming_it(cls, why):
    named = rf"studies\.s\.pruner': pruner 'shaky' cannot round-trip.*{why}"
    with pruning.PRUNERS.registered("shaky", cls), pytest.raises(ConfigError, match=named):
        plan_with({"name": "shaky"})


def test_what_a_pruner_can_prune_is_declared_by_the_class():
    with pytest.raises(ConfigError, match=r"studies\.s\.pruner\.name': a cv study takes 'folds' only"):
        plan_with({"name": "asha", "rungs": [2, 4]}, cv=True)
    with pruning.PRUNERS.registered("floor", FloorPruner):  # not adaptive: an optuna study refuses it
        opt = {"mode": "optuna", "n_trials": 2, "table": {"rows": ["trial"], "cols": []}}
        with pytest.raises(ConfigError, match="mode 'optuna' takes 'asha' only"):
            plan_with({"name": "floor"}, **opt)


def test_contributing_add_a_pruner_recipe_works(tmp_path, monkeypatch):
    """CONTRIBUTING's "Add a pruner", as written: one class, then usable as `pruner: {name: median}`."""
    from test_figure_registry import contributing_block

    exec(compile(contributing_block("Add a pruner"), "CONTRIBUTING.md", "exec"), dict(vars(pruning)))
    try:
        pruners, plan = plan_with({"name": "median", "rungs": [1, 2, 4]})
        p, study = pruners["s"], plan.studies["s"]
        assert pruning.pruner_dict(p) == {"name": "median", "rungs": [1, 2, 4]}
        assert set(pruning.cell_rungs(pruners, plan.studies).values()) == {(1, 2)}
        monkeypatch.chdir(tmp_path)
        for c, dice in zip(study.cells, [0.7, 0.4, 0.65]):  # lr 0.01, 0.1, 0.2
            path = Path(paths.rung_path(c.cell_id, 1))
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"status": "ok", "epochs_run": 1, "best_val_dice": dice}))
        dec = pruning.decide_stage(pruning.pruner_dict(p), study, 0, [], tmp_path / "stage0.json")
        assert dec["keep"] == ["lr=0.01", "lr=0.2"] and [d["config"] for d in dec["pruned"]] == ["lr=0.1"]
        assert dec["budget"] == {"unit": "epoch", "value": 1, "total": None, "text": "epoch 1"}
        stage1 = [f for f in pruning.stage_inputs(p, study, 1, [tmp_path / "stage0.json"]) if "/rungs/2." in f]
        assert len(stage1) == 2  # the two configurations kept go on to epoch 2
        last = p.stage_files(p.n_stages - 1, study.cells)  # the last stage asks the train jobs' metrics.json
        assert last == [paths.cell_file(c.cell_id) for c in study.cells]
    finally:
        pruning.PRUNERS.unregister("median")
