"""benchmarks/bench_gpu_grid.py (issue 21's GPU bar through Snakemake) and gpu_wheels.py: the log and
history parsing against hand-made files, the wheels' selection, and (slow) the --dry run end to end."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_gpu_grid"), importlib.import_module("gpu_wheels")
    finally:
        sys.path.remove(str(BENCH))


LOG = """Job stats:
job          count
---------  -------
train            2
total            2

[Mon Dec  7 18:55:29 2026]
localrule train:
    jobid: 3

[Mon Dec  7 18:55:31 2026]
rule train:
    jobid: 4
[Mon Dec  7 18:55:40 2026]
Finished jobid: 3 (Rule: train)
[Mon Dec  7 18:55:41 2026]
rule aggregate:
[Mon Dec  7 18:55:47 2026]
Finished jobid: 4 (Rule: train)
"""


def _ts(s: str) -> float:
    return dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S").timestamp()


def test_training_window_from_snakemakes_log(bench):
    grid, _ = bench
    jobs = grid.job_times(LOG, "train")
    assert [s for s, _ in jobs] == [_ts("2026-12-07 18:55:29"), _ts("2026-12-07 18:55:31")]
    assert max(e for _, e in jobs) - min(s for s, _ in jobs) == 18.0
    assert grid.job_times(LOG, "aggregate") == [(_ts("2026-12-07 18:55:41"), None)]


def test_cells_read_epoch_time_by_column_name(bench, tmp_path):
    grid, _ = bench
    cell = tmp_path / "results" / "cells" / "abc"
    cell.mkdir(parents=True)
    (cell / "metrics.json").write_text(
        json.dumps({"status": "ok", "n_train": 50, "device": "cuda", "hardware": "H100", "execution": {"amp": True}})
    )
    (cell / "history.csv").write_text("epoch,epoch_s,lr_encoder\n1,2.0,0.5\n2,3.0,0.5\n")
    (row,) = grid.read_cells(tmp_path)
    assert (row["epochs_run"], row["train_epochs_s"], row["amp"]) == (2, 5.0, True)
    assert grid.pooled_images_per_s([row]) == 20.0  # 50 images × 2 epochs / 5 s
    (cell / "history.csv").write_text("epoch,lr_encoder\n1,0.5\n")
    with pytest.raises(RuntimeError, match="epoch_s"):
        grid.read_cells(tmp_path)


def test_gpu_utilisation_is_one_nvidia_smi_query_per_sample(bench, tmp_path, monkeypatch):
    grid, _ = bench
    fake = tmp_path / "nvidia-smi"  # prints what `--query-gpu=utilization.gpu,memory.used ... nounits` prints
    fake.write_text('#!/bin/sh\necho "87, 1234"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = grid.Sampler(gpu=True)
    t0 = time.time()
    sampler.start()
    time.sleep(1.2)
    sampler.stop.set()
    sampler.join(timeout=5)
    assert len(sampler.samples) >= 2
    assert all(s[1:] == (87.0, 1234.0) for s in sampler.samples)
    assert grid.mean_in(sampler.samples, t0, time.time()) == 87.0
    assert grid.mean_in(sampler.samples, t0 - 10, t0 - 5) is None


def test_wheels_carry_snakemake_and_never_shadow_the_images_torch(bench):
    _, wheels = bench
    needed = wheels.closure(wheels.NEEDED)
    carried = {n for n in needed if n not in wheels.IMAGE}
    assert {"snakemake", "jsonschema", "pydicom", "pulp"} <= carried
    assert not carried & {"torch", "numpy", "scipy", "pandas", "pyyaml", "psutil"}


@pytest.mark.slow
def test_dry_run_is_the_grid_through_snakemake(bench, tmp_path):
    grid, _ = bench
    r = grid.main(["--dry", "--out", str(tmp_path / "gpu_grid_dry.json")])
    assert r["rc"] == 0 and not r["timed_out"]
    assert r["grid_cells"] == r["cells_finished"] == 8  # the smoke scale's 2 × 2 × 2
    assert sum(r["statuses"].values()) == 8 and "failed" not in r["statuses"]
    assert 0 < r["training_window_s"] <= r["wall_s"]
    assert r["utilisation"]["samples"] > 0 and 0 <= r["utilisation"]["mean_training_window_pct"] <= 100
    assert r["images_per_s_pooled"] > 0
    assert r["bar"]["meets"] is None  # no bar on the CPU
