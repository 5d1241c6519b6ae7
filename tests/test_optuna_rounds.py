"""mode: optuna: round proposals are a pure function of (config, earlier rounds' metrics); values are told as
recorded; invalid proposals are recorded, never cells; the shipped optuna study plans; e2e: real Snakefile."""

import json
import shutil
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
import yaml

from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan import optuna_rounds as orr
from segsweep.plan.cells import build_plan
from segsweep.plan.search import SEARCH_MODES

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"
AXES = {"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"], "depth": {"int": [1, 6]}}


def tiny_cfg(**study):
    cfg = yaml.safe_load(TINY.read_text())
    spec = {"mode": "optuna", "n_trials": 4, "parallel": 2, "axes": AXES, "table": {"rows": ["trial"], "cols": []}}
    cfg["studies"] = {"opt": {**spec, **study}}
    return sc.prepare(cfg)


def ctx_of(cfg):
    return orr.study_context(cfg, "opt", build_plan(cfg).data_fp)


def fake_metrics(rnd, values):
    return {t["cell"]: {"status": "ok", "val_dice_patient": v} for t, v in zip(rnd["trials"], values) if t["cell"]}


def test_plan_has_no_static_cells_but_the_base_split():
    plan = build_plan(tiny_cfg())
    study = plan.studies["opt"]
    assert study.axes == ("trial", "lr", "optimizer", "depth") and study.cells == ()
    assert list(plan.split_specs) == ["seed0"] and not plan.cells
    assert orr.round_sizes({"n_trials": 5, "parallel": 2}) == [2, 2, 1]


def test_schema_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"studies\.s\.n_trials"):
        SEARCH_MODES["optuna"]("s", {"axes": AXES}, {}, None)
    with pytest.raises(ConfigError, match=r"studies\.s\.axes\.lr"):
        SEARCH_MODES["optuna"]("s", {"n_trials": 2, "axes": {"lr": {"loguniform": [0, 1]}}}, {}, None)


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_proposals_are_deterministic_and_seeded(sampler):
    ctx = ctx_of(tiny_cfg(sampler=sampler))
    r0 = orr.propose_round(ctx, 0, 2, [], {})
    assert r0 == orr.propose_round(ctx, 0, 2, [], {})
    m = fake_metrics(r0, [0.4, 0.7])
    r1 = orr.propose_round(ctx, 1, 2, [r0], m)
    assert r1 == orr.propose_round(ctx, 1, 2, [r0], m)
    assert [t["number"] for t in r1["trials"]] == [2, 3]
    other = orr.propose_round({**ctx, "sample_seed": 7}, 0, 2, [], {})
    assert [t["params"] for t in other["trials"]] != [t["params"] for t in r0["trials"]]
    # a trial's cell is resolved like any other cell: base + its parameters
    for t in r0["trials"]:
        if t["state"] == "proposed":
            assert t["config"]["lr"] == t["params"]["lr"] and t["config"]["epochs"] == ctx["base"]["epochs"]


def test_told_values_and_states():
    ctx = ctx_of(tiny_cfg())
    r0 = orr.propose_round(ctx, 0, 2, [], {})
    r0["trials"][0].update(state="proposed", cell="aaaaaaaaaaaa")
    r0["trials"][1].update(state="proposed", cell="bbbbbbbbbbbb")
    metrics = {"aaaaaaaaaaaa": {"status": "ok", "val_dice_patient": 0.61}, "bbbbbbbbbbbb": {"status": "diverged"}}
    told = orr.told_trials(ctx, [r0], metrics)
    assert [(t["optuna_state"], t["value"], t["status"]) for t in told] == [
        ("COMPLETE", 0.61, "ok"),
        ("FAIL", None, "diverged"),
    ]


def test_invalid_proposals_are_recorded_not_cells(tmp_path):
    # depth 6 needs 64 pixels: at 32×32 every proposal is invalid
    ctx = ctx_of(tiny_cfg(axes={"lr": [0.01], "depth": [6]}))
    r0 = orr.propose_round(ctx, 0, 2, [], {})
    assert all(t["state"] == "invalid" and "too deep" in t["reason"] and t["cell"] is None for t in r0["trials"])
    told = orr.told_trials(ctx, [r0], {})
    assert {t["optuna_state"] for t in told} == {"FAIL"}
    r1 = orr.propose_round(ctx, 1, 2, [r0], {})  # told as failed: the next round still proposes
    assert len(r1["trials"]) == 2
    (tmp_path / "round0.json").write_text(json.dumps(r0))
    assert orr.trial_cells([tmp_path / "round0.json"]) == {}


def test_journal_holds_the_told_trials(tmp_path):
    import optuna

    ctx = ctx_of(tiny_cfg(axes={"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"]}))
    r0 = orr.propose_round(ctx, 0, 2, [], {})
    told = orr.told_trials(ctx, [r0], fake_metrics(r0, [0.5, 0.6]))
    orr.write_journal(tmp_path / "journal.log", ctx, told)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.load_study(study_name="opt", storage=storage)
    assert sorted(t.value for t in study.trials) == [0.5, 0.6]


def test_journal_shows_durations_reasons_and_the_metric_name(tmp_path):
    """What optuna-dashboard reads: each trial's start/end from its cell (metrics.json written at `end`,
    `wall_s` before it; a cell without metrics.json: history.csv's time and summed epoch_s), a failed
    trial's reason (user attr + Optuna's own fail_reason), the objective's name, the next round RUNNING."""
    import os
    from datetime import datetime

    import optuna

    ctx = ctx_of(tiny_cfg(axes={"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"]}, n_trials=3))
    r0 = orr.propose_round(ctx, 0, 3, [], {})
    a, b, c = (t["cell"] for t in r0["trials"])
    cells = tmp_path / "cells"
    end = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for cid, m in (
        (a, {"status": "ok", "val_dice_patient": 0.7, "wall_s": 90.0}),
        (b, {"status": "collapsed", "reason": "predicts nothing on 4 of 4 patients", "wall_s": 30.0}),
    ):
        (cells / cid).mkdir(parents=True)
        (cells / cid / "metrics.json").write_text(json.dumps(m))
        os.utime(cells / cid / "metrics.json", (end, end))
    (cells / c).mkdir()
    (cells / c / "history.csv").write_text("epoch,epoch_s\n1,2.5\n2,3.5\n")
    os.utime(cells / c / "history.csv", (end, end))
    rounds = tmp_path / "optuna"
    rounds.mkdir()
    (rounds / "round0.json").write_text(json.dumps(r0))
    r1 = orr.run_round(ctx, 1, 2, [rounds / "round0.json"], cells, rounds / "round1.json")

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(rounds / "journal.log")))
    study = optuna.load_study(study_name="opt", storage=storage)
    assert study.metric_names == ["val_dice_patient"]
    tr = study.trials
    assert [t.state.name for t in tr] == ["COMPLETE", "FAIL", "FAIL", "RUNNING", "RUNNING"]
    assert [t.user_attrs["cell"] for t in tr] == [a, b, c] + [t["cell"] for t in r1["trials"]]
    assert [t.duration.total_seconds() for t in tr[:3]] == [90.0, 30.0, 6.0]
    assert all(t.datetime_complete.timestamp() == end for t in tr[:3])
    assert tr[0].value == 0.7 and "reason" not in tr[0].user_attrs
    assert tr[1].user_attrs["reason"] == tr[1].system_attrs["fail_reason"] == "predicts nothing on 4 of 4 patients"
    assert tr[2].user_attrs["status"] == "missing" and "no metrics.json" in tr[2].system_attrs["fail_reason"]
    assert tr[3].datetime_start is not None and tr[3].datetime_complete is None


def test_shipped_optuna_study_plans_at_smoke_scale():
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    seeds = yaml.safe_load((ROOT / "config" / "seed_studies.yaml").read_text())
    cfg = sc.prepare(
        sc.deep_merge(sc.deep_merge(base, seeds), {"scale": "smoke", "select": ["seed007_optuna"]}), base_dir=ROOT
    )
    plan = build_plan(cfg)
    assert plan.studies["seed007_optuna"].cells == ()
    ctx = orr.study_context(cfg, "seed007_optuna", plan.data_fp)
    assert orr.round_sizes(cfg["studies"]["seed007_optuna"]) == [4] * 5
    r0 = orr.propose_round(ctx, 0, 4, [], {})
    assert len(r0["trials"]) == 4 and all(t["config"]["epochs"] == 2 for t in r0["trials"])


# ---------------------------------------------------------------------------------------------- e2e
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(wd, *args):
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    proc = subprocess.run([*cmd, "--cores", "2", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def trained(out: str) -> int:
    return sum(1 for line in out.splitlines() if line.strip() in ("rule train:", "localrule train:"))


@pytest.mark.slow
def test_e2e_optuna_rounds(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"]["epochs"] = 1
    study = {"mode": "optuna", "n_trials": 4, "parallel": 2, "sample_seed": 1, "table": {"rows": ["trial"], "cols": []}}
    study["axes"] = {"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"]}
    cfg["studies"] = {"opt": study}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/studies/opt/figures"
    out = snakemake(tmp_path, target)
    assert trained(out) == 4
    trials = json.loads((tmp_path / "results/studies/opt/optuna/trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and all(t["state"] == "proposed" for t in trials)
    table = (tmp_path / "results/studies/opt/table.csv").read_text().splitlines()
    assert len(table) == 1 + 4  # one row per trial
    assert (tmp_path / "results/studies/opt/optuna/journal.log").stat().st_size > 0
    assert (tmp_path / "results/studies/opt/figures/optuna_history.svg").exists()
    assert "Nothing to be done" in snakemake(tmp_path, target, "-n")
    cfg["studies"]["opt"]["n_trials"] = 6
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, target)
    assert trained(out) == 2  # only the new round's trials (rule optuna_plan reran: the round sizes changed)
    rounds = sorted(p.name for p in (tmp_path / "results/studies/opt/optuna").glob("round*.json"))
    assert rounds == ["round0.json", "round1.json", "round2.json"]
    shutil.rmtree(tmp_path / "results" / "cells", ignore_errors=True)
