"""Pruners (segsweep.plan.pruning): ASHA promotions from rung files, fold pruning's rules, planning checks,
continuing a cell from its rung checkpoint, and the real Snakefile on tiny pruned studies."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.stats import wilcoxon

from segsweep import paths
from segsweep.analysis.configs import config_groups
from segsweep.analysis.runs import cells_frame
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan import pruning
from segsweep.plan.cells import build_plan
from segsweep.study import Study, StudyCell, TableLayout, pruned_cells

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"


def study_of(n_configs, repeats=1, folds=None):
    cells = []
    for i in range(n_configs):
        for r in range(repeats):
            for f in folds or [None]:
                cid = f"{i:02x}{r:02x}{(f or 0):02x}" + "0" * 6
                cells.append(StudyCell(cid, (("lr", str(i)),), r, f))
    axes = {"lr": tuple(str(i) for i in range(n_configs))}
    return Study("s", "s", "", "grid", ("lr",), TableLayout(("lr",), ()), tuple(cells), axes)


def write_rung(cell, epoch, dice, status="ok"):
    path = Path(paths.rung_path(cell, epoch))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cell": cell, "status": status, "epochs_run": epoch, "best_val_dice": dice}))


def write_metrics(cell, value, status="ok"):
    path = Path(paths.cell_file(cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cell": cell, "status": status, "val_dice_patient": value}))


# ------------------------------------------------------------------------------------------------ asha
def test_asha_promotes_the_top_n_over_eta_by_the_mean_over_repeats(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = study_of(7, repeats=2)
    dice = [0.5, 0.9, 0.1, 0.7, 0.8, 0.2, 0.6]
    for sc_ in study.cells:
        i = int(sc_.label("lr"))
        write_rung(sc_.cell_id, 3, dice[i] + (0.02 if sc_.repeat else -0.02))
    asha = pruning.Asha(rungs=[3, 9, 27], eta=3)
    d = asha.decide(study, 0, pruning.configurations(study))
    assert d["keep"] == ["lr=1", "lr=4"]  # ⌊7 / 3⌋ = 2, best first
    assert len(d["pruned"]) == 5 and all(len(p["cells"]) == 2 for p in d["pruned"])
    assert d["scores"]["lr=3"] == pytest.approx(0.7)
    assert all("pruned at epoch 3" in p["reason"] and p["epochs_run"] == 3 for p in d["pruned"])


def test_asha_never_promotes_a_diverged_or_failed_cell_and_keeps_at_least_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = study_of(2)
    write_rung(study.cells[0].cell_id, 3, None, status="diverged")
    write_rung(study.cells[1].cell_id, 3, 0.1)
    d = pruning.Asha(rungs=[3, 9], eta=3).decide(study, 0, pruning.configurations(study))
    assert d["keep"] == ["lr=1"]  # ⌊2/3⌋ = 0 → at least one
    assert "diverged" in d["pruned"][0]["reason"]
    # ties: the study's order decides
    write_rung(study.cells[0].cell_id, 3, 0.1)
    assert pruning.Asha(rungs=[3, 9], eta=2).decide(study, 0, pruning.configurations(study))["keep"] == ["lr=0"]


def tiny_cfg(study, scale="full", **train):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(train)
    cfg["studies"] = {"s": study}
    cfg["scale"] = scale
    cfg["scales"] = {"smoke": yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["scales"]["smoke"]}
    return sc.prepare(cfg)


def pruners_of(cfg):
    plan = build_plan(cfg)
    return pruning.study_pruners(cfg, plan.studies, plan.cells), plan


def test_asha_last_rung_must_be_the_epochs_except_at_a_scale_preset():
    spec = {"axes": {"lr": [0.01, 0.1]}, "table": {"rows": ["lr"], "cols": []}}
    spec["pruner"] = {"name": "asha", "rungs": [1, 2, 4], "eta": 2}
    p, plan = pruners_of(tiny_cfg(spec, epochs=4))
    assert p["s"].rungs == (1, 2, 4)
    assert set(pruning.cell_rungs(p, plan.studies).values()) == {(1, 2)}
    with pytest.raises(ConfigError, match=r"studies\.s\.pruner\.rungs.*last rung \(4\).*epochs \(3\)"):
        pruners_of(tiny_cfg(spec, epochs=3))
    spec["pruner"] = {"name": "asha", "rungs": [3, 10, 30], "eta": 3}
    p, _ = pruners_of(tiny_cfg(spec, scale="smoke"))  # smoke trains 2 epochs: rungs scaled to them
    assert p["s"].rungs == (1, 2)


@pytest.mark.parametrize(
    ("pruner", "match"),
    [
        ({"name": "asha", "rungs": [4, 2]}, "strictly increasing"),
        ({"name": "nope"}, r"studies\.s\.pruner\.name.*'nope'"),
        ({"name": "folds"}, "needs cv: true"),
        ({"name": "asha", "rungs": [4], "bogus": 1}, r"studies\.s\.pruner"),
    ],
)
def test_bad_pruners_fail_at_plan_time_naming_the_key(pruner, match):
    spec = {"axes": {"lr": [0.01, 0.1]}, "table": {"rows": ["lr"], "cols": []}, "pruner": pruner}
    with pytest.raises(ConfigError, match=match):
        pruners_of(tiny_cfg(spec, epochs=4))


# ----------------------------------------------------------------------------------------------- folds
def test_wilcoxon_worse_is_scipys_one_sided_exact_test():
    a, b = [0.5, 0.6, 0.55, 0.4, 0.45], [0.7, 0.65, 0.8, 0.6, 0.5]
    assert pruning.wilcoxon_worse(a, b) == pytest.approx(1 / 32)  # all 5 differences negative: 1/2^5
    d = [x - y for x, y in zip(a[:3], b[:3])]
    assert pruning.wilcoxon_worse(a[:3], b[:3]) == pytest.approx(wilcoxon(d, alternative="less").pvalue)
    assert pruning.wilcoxon_worse([0.5, 0.5], [0.5, 0.5]) is None
    # lower is better: the same numbers are now better, not worse
    assert pruning.wilcoxon_worse(a, b, sign=-1.0) == pytest.approx(1.0)


def test_fold_pruning_by_threshold_and_by_wilcoxon(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = study_of(3, folds=[0, 1, 2, 3, 4, 5])
    vals = {0: [0.8, 0.82, 0.79, 0.81], 1: [0.3, 0.35, 0.2, 0.3], 2: [0.7, 0.71, 0.69, 0.72]}
    for c in study.cells:
        if c.fold < 4:
            write_metrics(c.cell_id, vals[int(c.label("lr"))][c.fold])
    fp = pruning.FoldPruner(threshold=0.5, wilcoxon_p=None, min_folds=2, n_folds=6)
    alive = pruning.configurations(study)
    assert fp.decide(study, 0, alive)["keep"] == ["lr=0", "lr=1", "lr=2"]  # 1 fold < min_folds
    d = fp.decide(study, 1, alive)
    assert d["keep"] == ["lr=0", "lr=2"]
    (p,) = d["pruned"]
    assert p["config"] == "lr=1" and "folds 3–6 skipped" in p["reason"] and "threshold 0.5" in p["reason"]
    assert sorted(p["cells"]) == sorted(c.cell_id for c in study.cells if c.label("lr") == "1" and c.fold >= 2)
    # Wilcoxon: lr=2 is below lr=0 on every one of 4 folds → p = 1/16 < 0.1
    fw = pruning.FoldPruner(threshold=None, wilcoxon_p=0.1, min_folds=2, n_folds=6)
    d = fw.decide(study, 3, {n: c for n, c in alive.items() if n != "lr=1"})
    assert d["keep"] == ["lr=0"] and d["best"] == "lr=0"
    assert "p = 0.0625" in d["pruned"][0]["reason"]
    # after 2 folds the same evidence is too weak (p = 0.25)
    assert fw.decide(study, 1, alive)["keep"] == ["lr=0", "lr=1", "lr=2"]


def test_stage_inputs_follow_the_decisions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = study_of(3, folds=[0, 1, 2])
    fp = pruning.FoldPruner(threshold=0.5, min_folds=1, n_folds=3)
    assert len(pruning.stage_inputs(fp, study, 0, [])) == 3
    dec = tmp_path / "d0.json"
    dec.write_text(json.dumps({"keep": ["lr=0"], "pruned": []}))
    files = pruning.stage_inputs(fp, study, 1, [dec])
    assert len(files) == 4  # fold 0 of all three, fold 1 of the survivor


def test_pruned_configurations_are_greyed_never_ranked(tmp_path):
    study = study_of(2)
    (tmp_path / study.cells[0].cell_id).mkdir()
    decisions = [
        {
            "budget": {"unit": "epoch", "value": 3, "total": None, "text": "epoch 3"},
            "pruned": [
                {
                    "config": "lr=1",
                    "cells": [study.cells[1].cell_id],
                    "epochs_run": 3,
                    "value": 0.42,
                    "reason": "pruned at epoch 3 (rung 1 of 2)",
                }
            ],
        }
    ]
    df = cells_frame(study, tmp_path, None, pruned_cells(decisions))
    assert list(df["status"]) == ["failed", "pruned"]  # cell 0 has no metrics.json in this fixture
    g = {x["config"]: x for x in config_groups(study, df)}["lr=1"]
    assert g["status"] == "pruned" and g["n"] == 0 and g["mean"] is None
    assert g["text"] == "pruned at epoch 3 (0.420)"


# ------------------------------------------------------------------------------- continuing from a rung
def test_a_cell_continued_from_its_rungs_equals_an_uninterrupted_run(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_train import _params, _read_csv, _strip_times, _write_dataset

    from segsweep.training.loop import train_cell

    data_dir, split = _write_dataset(tmp_path / "data")
    p = _params(epochs=5, schedule="cosine", augment={"flip": True}, dropout=0.1, optimizer="sgd", lr=0.05)
    whole = train_cell(p, data_dir, split, tmp_path / "whole")
    seen = []
    r1 = train_cell(p, data_dir, split, tmp_path / "rungs", stop_at=2, on_epoch=lambda r: seen.append(r["epoch"]))
    assert r1["epochs_run"] == 2 and not (tmp_path / "rungs" / "metrics.json").exists()
    r2 = train_cell(p, data_dir, split, tmp_path / "rungs", stop_at=4, on_epoch=lambda r: seen.append(r["epoch"]))
    done = train_cell(p, data_dir, split, tmp_path / "rungs", on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2, 3, 4, 5]  # no epoch trained twice
    assert _strip_times(done) == _strip_times(whole)
    h = [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(tmp_path / "rungs" / "history.csv")]
    assert h == [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(tmp_path / "whole" / "history.csv")]
    hist = [float(r["val_dice"]) for r in _read_csv(tmp_path / "whole" / "history.csv")]
    assert r2["best_val_dice"] == pytest.approx(max(hist[:4]))  # the rung result of an uninterrupted run
    # a last.pt already past the rung trains nothing: the rung is read from its history
    again = train_cell(p, data_dir, split, tmp_path / "rungs", stop_at=2, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2, 3, 4, 5] and again["best_val_dice"] == r1["best_val_dice"]


# ------------------------------------------------------------------------------------------------- e2e
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(wd, *args):
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    proc = subprocess.run([*cmd, "--cores", "2", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def ran(out: str, rule: str) -> int:
    return sum(1 for line in out.splitlines() if line.strip() in (f"rule {rule}:", f"localrule {rule}:"))


@pytest.mark.slow
def test_e2e_asha_study(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=4, patience=None)
    cfg["studies"] = {
        "sha": {
            "axes": {"lr": [0.0001, 0.001, 0.01, 0.1]},
            "table": {"rows": ["lr"], "cols": []},
            "pruner": {"name": "asha", "rungs": [1, 2, 4], "eta": 2},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "results/studies/sha/table.csv")
    assert ran(out, "train_rung") == 4 + 2 and ran(out, "train") == 1  # 4 to epoch 1, 2 to epoch 2, 1 to 4
    rows = list(csv.DictReader((tmp_path / "results/studies/sha/table.csv").open()))
    texts = [r["val_dice_patient"] for r in rows]
    assert sum(t.startswith("pruned at epoch 1") for t in texts) == 2
    assert sum(t.startswith("pruned at epoch 2") for t in texts) == 1
    d1 = json.loads((tmp_path / "results/studies/sha/prune/stage1.json").read_text())
    (winner,) = [c for sc_ in d1["keep"] for c in [sc_]]
    cells = {r["config"]: r for r in csv.DictReader((tmp_path / "results/studies/sha/cells.csv").open())}
    cell = cells[winner]["cell"]
    hist = list(csv.DictReader((tmp_path / "results/cells" / cell / "history.csv").open()))
    assert [int(r["epoch"]) for r in hist] == [1, 2, 3, 4]  # continued, no repeated epoch
    assert "Nothing to be done" in snakemake(tmp_path, "results/studies/sha/table.csv", "-n")
    shutil.rmtree(tmp_path / "results" / "cells", ignore_errors=True)


@pytest.mark.slow
def test_e2e_fold_pruning_skips_the_configured_folds(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=1)
    cfg["splits"] = {**cfg.get("splits", {}), "folds": 3}
    cfg["studies"] = {
        "cvp": {
            "axes": {"lr": [0.01, 0.02]},
            "cv": True,
            "table": {"rows": ["lr"], "cols": []},
            # nothing reaches Dice 0.99 in one epoch: every configuration stops after its first fold
            "pruner": {"name": "folds", "threshold": 0.99, "wilcoxon_p": None, "min_folds": 1},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "results/studies/cvp/table.csv")
    assert ran(out, "train") == 2  # fold 0 of each configuration; folds 1 and 2 skipped
    rows = list(csv.DictReader((tmp_path / "results/studies/cvp/cells.csv").open()))
    assert sorted(r["status"] for r in rows if r["fold"] != "0.0" and r["fold"] != "0") == ["pruned"] * 4
    table = (tmp_path / "results/studies/cvp/table.csv").read_text()
    assert table.count("pruned after 1 fold") == 2
    assert "Nothing to be done" in snakemake(tmp_path, "results/studies/cvp/table.csv", "-n")


def test_the_schema_types_only_settings_some_pruner_takes():
    """Pruner names are the registry's (no enum to keep); the schema's typed settings are no stale keys."""
    from segsweep.registry import keyword_defaults

    schema = sc.schema()["definitions"]["study"]["properties"]["pruner"]["properties"]
    assert "enum" not in schema["name"]
    takes = set().union(*(keyword_defaults(e.obj) for e in pruning.PRUNERS))
    assert set(schema) - {"name"} <= takes
    with pytest.raises(ConfigError, match=r"studies\.s\.pruner\.etaa': unknown setting .*closest known: eta"):
        pruners_of(
            tiny_cfg(
                {"axes": {"lr": [0.1]}, "table": {"rows": ["lr"], "cols": []}, "pruner": {"name": "asha", "etaa": 2}}
            )
        )


def test_a_rung_job_retries_a_crash_then_records_it_as_failed(tmp_path, monkeypatch):
    from segsweep.training import loop, rungs

    def crash(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(loop, "train_cell", crash)
    out = tmp_path / "abc" / "rungs" / "3.json"
    kw = {"stop_at": 3, "data_dir": tmp_path, "split_path": tmp_path / "s.json", "out": out}
    with pytest.raises(RuntimeError):
        rungs.run_rung_job(None, attempt=1, max_attempts=2, **kw)
    assert not out.exists()
    rec = rungs.run_rung_job(None, attempt=2, max_attempts=2, **kw)
    assert rec["status"] == "failed" and "CUDA out of memory" in rec["reason"]
    assert json.loads(out.read_text())["status"] == "failed"
    assert not (tmp_path / "abc" / "metrics.json").exists()  # the cell itself is not marked failed


# ----------------------------------------------------------------------------------------- optuna + asha
def test_optuna_pruned_trials_are_told_as_pruned_with_their_rung_value(tmp_path):
    import optuna

    from segsweep.plan import optuna_rounds as orr

    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=4)
    axes = {"lr": {"loguniform": [1e-4, 1e-1]}}
    spec = {"mode": "optuna", "n_trials": 4, "parallel": 2, "axes": axes, "table": {"rows": ["trial"], "cols": []}}
    cfg["studies"] = {"opt": {**spec, "pruner": {"name": "asha", "rungs": [1, 4], "eta": 2}}}
    cfg = sc.prepare(cfg)
    p, plan = pruners_of(cfg)
    assert p["opt"].rungs == (1, 4)
    ctx = orr.study_context(cfg, "opt", plan.data_fp)
    r0 = orr.propose_round(ctx, 0, 2, [], {})
    a, b = (t["cell"] for t in r0["trials"])
    (tmp_path / a).mkdir()
    (tmp_path / a / "metrics.json").write_text(json.dumps({"status": "ok", "val_dice_patient": 0.7}))
    decision = {"pruned": [{"config": "x", "cells": [b], "epochs_run": 1, "value": 0.2, "reason": "pruned at epoch 1"}]}
    (tmp_path / "d.json").write_text(json.dumps(decision))
    metrics = orr.read_metrics([r0], tmp_path, [tmp_path / "d.json"])
    told = orr.told_trials(ctx, [r0], metrics)
    assert [t["optuna_state"] for t in told] == ["COMPLETE", "PRUNED"]
    assert told[1]["intermediate"] == {"1": 0.2} and told[1]["status"] == "pruned"
    r1 = orr.propose_round(ctx, 1, 2, [r0], metrics)  # TPE accepts the pruned trial
    assert len(r1["trials"]) == 2
    frozen = orr._frozen(told[1], "PRUNED", None, orr.distributions(ctx)[0])
    assert frozen.state == optuna.trial.TrialState.PRUNED and frozen.intermediate_values == {1: 0.2}


def test_optuna_with_a_fold_pruner_or_an_epochs_axis_is_refused():
    cfg = yaml.safe_load(TINY.read_text())
    spec = {"mode": "optuna", "n_trials": 4, "table": {"rows": ["trial"], "cols": []}}
    cfg["studies"] = {"opt": {**spec, "axes": {"lr": [0.01, 0.1]}, "pruner": {"name": "folds"}}}
    with pytest.raises(ConfigError, match="mode 'optuna' takes 'asha' only"):
        pruners_of(sc.prepare(cfg))
    cfg["studies"] = {"opt": {**spec, "axes": {"epochs": [2, 4]}, "pruner": {"name": "asha", "rungs": [2, 4]}}}
    with pytest.raises(ConfigError, match=r"axes\.epochs"):
        pruners_of(sc.prepare(cfg))


@pytest.mark.slow
def test_e2e_optuna_study_under_asha(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=2, patience=None)
    cfg["studies"] = {
        "opt": {
            "mode": "optuna",
            "n_trials": 4,
            "parallel": 4,
            "sample_seed": 1,
            "axes": {"lr": {"loguniform": [1e-4, 1e-1]}, "optimizer": ["adam", "sgd"]},
            "table": {"rows": ["trial"], "cols": []},
            "pruner": {"name": "asha", "rungs": [1, 2], "eta": 2},
        }
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "results/studies/opt/table.csv")
    assert ran(out, "train_rung") == 4 and ran(out, "train") == 2  # one bracket: 4 to epoch 1, 2 go on
    trials = json.loads((tmp_path / "results/studies/opt/optuna/trials.json").read_text())["trials"]
    assert sorted(t["status"] == "pruned" for t in trials) == [False, False, True, True]
    assert (tmp_path / "results/studies/opt/table.csv").read_text().count("pruned at epoch 1") == 2
    assert "Nothing to be done" in snakemake(tmp_path, "results/studies/opt/table.csv", "-n")
    shutil.rmtree(tmp_path / "results" / "cells", ignore_errors=True)
