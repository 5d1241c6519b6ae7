"""A config edited while a run goes on (issue 26, part 4): on Slurm each job step parses the config again and
looked its planned cell id up in the edited one (`InputFunctionException … KeyError: '<id>'`). Jobs now parse
the config the run was planned with (segsweep.plan.planned_config, named by SEGSWEEP_PLANNED_CONFIG, which
sbatch passes on); where that variable does not reach them, training jobs run their cell as planned from
results/cells/<id>/cell.json (segsweep.plan.snapshots), or stop with a message naming that file. Reproduced
locally the way the jobstep runs a job: a second `snakemake --mode remote --target-jobs <rule>:<wildcards>`
with the edited config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.plan.planned_config import ENV, FOLDER, adopt, record
from segsweep.plan.snapshots import PlannedCells, read_snapshot, snapshot_path, write_snapshot

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CFG = {
    "data": {"source": "phantom", "phantom": {"patients": 6, "slices": 2, "rows": 64, "cols": 64}},
    "preprocess": {"size": [32, 32]},
    "splits": {"val_fraction": 0.34},
    "train": {"epochs": 2, "depth": 2, "base_width": 2, "batch_size": 4},
    "resources": {"train_threads": 1, "ingest_threads": 1},
    "studies": {"s": {"axes": {"lr": [0.001, 0.01]}, "table": {"rows": ["lr"], "cols": []}}},
}


def _plan(cfg):
    return build_plan(sc.prepare(json.loads(json.dumps(cfg))))


def test_a_snapshot_round_trips_the_cell(tmp_path):
    plan = _plan({**CFG, "train": {**CFG["train"], "augment": {"flip": True}, "schedule": "cosine"}})
    for cell in plan.cells.values():
        path = write_snapshot(tmp_path, cell)
        assert path == tmp_path / cell.id / "cell.json"
        back = read_snapshot(tmp_path, cell.id)
        assert back == cell and back.params.to_dict(identity=True) == cell.params.to_dict(identity=True)


def test_planned_cells_record_on_lookup_and_fall_back_to_the_snapshot(tmp_path):
    planned = _plan(CFG)
    edited = _plan({**CFG, "train": {**CFG["train"], "epochs": 1}})
    assert not set(planned.cells) & set(edited.cells)  # the edit changes every id
    told = []
    cells = PlannedCells(planned.cells, lambda: [], tmp_path, on_snapshot=told.append)
    cid = next(iter(planned.cells))
    assert cells[cid] == planned.cells[cid] and snapshot_path(tmp_path, cid).exists()
    after = PlannedCells(edited.cells, lambda: [], tmp_path, on_snapshot=told.append)
    assert cid not in after and after[cid] == planned.cells[cid] and after[cid].params.epochs == 2
    assert len(told) == 1 and f"running it as planned, from {snapshot_path(tmp_path, cid)}" in told[0]
    other = next(c for c in planned.cells if c != cid)  # never looked up, so never recorded
    with pytest.raises(ConfigError, match=rf"cell {other} is not a cell of the config.*{other}/cell\.json"):
        after[other]


def test_the_planned_config_round_trips_in_order_and_names_itself(tmp_path, monkeypatch):
    """Key order is meaning (a study's axes order its labels): the planned config keeps it."""
    given = {"studies": {"s": {"axes": {"optimizer": ["adam"], "lr": [0.01]}}}}
    prepared = {**given, "train": {"epochs": 2}}
    path = record(given, prepared, tmp_path)
    assert record(given, prepared, tmp_path) == path  # content-addressed: written once
    monkeypatch.setenv(ENV, str(path))
    told, cfg = [], {"studies": {"s": {"axes": {"lr": [0.01], "optimizer": ["adam"]}}}}
    assert adopt(cfg, notify=told.append) == path
    assert cfg == prepared and list(cfg["studies"]["s"]["axes"]) == ["optimizer", "lr"]
    assert len(told) == 1 and str(path) in told[0]  # the files' order differed: an edit
    monkeypatch.setenv(ENV, str(tmp_path / "gone.json"))
    with pytest.raises(ConfigError, match=rf"{ENV}=.*gone\.json: the config this run was planned with is gone"):
        adopt({})


def _snakemake(wd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    return subprocess.run(
        [*cmd, "--cores", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
    )


def _job(wd: Path, target: str, planned: Path | None) -> subprocess.CompletedProcess:
    """One job the way the Slurm jobstep runs it: its own invocation in remote mode, the environment of sbatch
    (which carries SEGSWEEP_PLANNED_CONFIG from the submitting Snakemake, unless the cluster drops it)."""
    return _snakemake(wd, "--mode", "remote", "--target-jobs", target, env={ENV: str(planned) if planned else None})


@pytest.fixture
def planned_then_edited(tmp_path):
    """A run planned and started (ingest, splits) with CFG, then the config file edited: epochs 2 → 1."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(CFG))
    proc = _snakemake(wd, "--until", "split", env={ENV: None})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (planned,) = (wd / FOLDER).glob("*.json")
    (wd / "config.yaml").write_text(yaml.safe_dump({**CFG, "train": {**CFG["train"], "epochs": 1}}))
    return wd, planned, sorted(_plan(CFG).cells)


def test_jobs_parse_the_config_the_run_was_planned_with(planned_then_edited):
    wd, planned, cells = planned_then_edited
    for cell in cells:
        proc = _job(wd, f"train:cell={cell}", planned)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "segsweep: the config differs from the one this run was planned with" in proc.stderr
        m = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())
        assert m["params"]["epochs"] == 2 and m["epochs_run"] == 2  # the cell as planned, not as edited
    # the study's table too: its planned cells (the edited config's cells were never trained)
    proc = _job(wd, "aggregate:study=s", planned)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "Missing output files: results/cells" not in proc.stdout + proc.stderr  # no other cell was trained
    table = (wd / "results" / "studies" / "s" / "cells.csv").read_text()
    assert all(c in table for c in cells)
    assert sorted(p.name for p in (wd / "results" / "cells").iterdir()) == cells


def test_without_the_planned_config_a_training_job_runs_its_cell_s_snapshot(planned_then_edited):
    """A cluster that does not pass the environment on (SBATCH_EXPORT=NONE): the cell's own snapshot."""
    wd, _, (first, second) = planned_then_edited
    assert snapshot_path(wd / "results" / "cells", first).exists()
    proc = _job(wd, f"train:cell={first}", None)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    m = json.loads((wd / "results" / "cells" / first / "metrics.json").read_text())
    assert m["params"]["epochs"] == 2 and m["epochs_run"] == 2  # the cell as planned, not as edited
    assert f"segsweep: cell {first} is not a cell of the config as it is now" in proc.stderr
    # without its snapshot (a run planned by an older segsweep) the job stops naming the file
    snapshot_path(wd / "results" / "cells", second).unlink()
    proc = _job(wd, f"train:cell={second}", None)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"cell {second} is not a cell of the config as it is now, and results/cells/{second}/cell.json" in out
