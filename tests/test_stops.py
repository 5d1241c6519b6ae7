"""A stop is not a crash (issue 26): crashes are counted per invocation in the cell folder, not by Snakemake's
attempt; a Slurm job knows when to stop before its time limit and requeues itself while it still runs.

Slurm's commands are stand-ins on PATH here (small shell scripts printing what squeue prints on the test cluster);
tests/slurm/test_slurm.py runs the same code against the real one-node cluster."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from pathlib import Path

import pytest

from segsweep.training import job, preempt, slurm_job


def _crash(out: Path, *, attempt: int, max_attempts: int = 2):
    def run():
        raise RuntimeError("CUDA out of memory")

    return job.run_attempt(run, lambda exc, s: "failed", out_dir=out, attempt=attempt, max_attempts=max_attempts)


def test_crashes_are_counted_in_the_cell_folder_per_invocation(tmp_path, monkeypatch):
    out = tmp_path / "c0ffee"
    out.mkdir()
    monkeypatch.setenv(job.RUN_ENV, "run1")
    with pytest.raises(RuntimeError):
        _crash(out, attempt=1)
    assert json.loads((out / job.CRASHES_FILE).read_text()) == {"run": "run1", "crashes": 1}
    # a requeued Slurm job runs again with the same Snakemake attempt: the second crash is still the last one
    assert _crash(out, attempt=1) == "failed"
    # a new `snakemake` invocation gives the cell its whole budget again
    monkeypatch.setenv(job.RUN_ENV, "run2")
    with pytest.raises(RuntimeError):
        _crash(out, attempt=1)
    assert job.crashes_so_far(out) == 1

    # stops in between use nothing
    def stopped():
        raise preempt.Preempted(signal.SIGTERM, 3, 1, 5, out / "last.pt")

    for attempt in (2, 3, 4):
        with pytest.raises(preempt.Preempted):
            job.run_attempt(stopped, lambda exc, s: "failed", out_dir=out, attempt=attempt, max_attempts=2)
    assert job.crashes_so_far(out) == 1
    assert _crash(out, attempt=5) == "failed"


def test_stop_by_requests_a_stop_at_the_deadline():
    with preempt.catch_stop_signals() as req, preempt.stop_by(time.time() + 0.2):
        assert not req.requested
        t0 = time.monotonic()
        while not req.requested and time.monotonic() - t0 < 5:
            time.sleep(0.01)
    assert req.signum == preempt.DEADLINE_SIGNAL and time.monotonic() - t0 >= 0.15
    with preempt.catch_stop_signals() as req, preempt.stop_by(None):
        time.sleep(0.05)
    assert not req.requested


def _fake_slurm(tmp_path: Path, monkeypatch, squeue_out: str, jobid: str = "4242") -> Path:
    """squeue printing ``squeue_out`` for the format asked (``%S|%e`` or ``%T``), scontrol logging its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(
        f'#!/bin/sh\ncase "$*" in *%T*) echo "{squeue_out.split(";")[-1]}";; *) echo "{squeue_out.split(";")[0]}";; esac\n'
    )
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    for f in ("squeue", "scontrol"):
        (bin_dir / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv(slurm_job.JOB_ENV, jobid)
    monkeypatch.delenv(slurm_job.RESTARTS_ENV, raising=False)
    return tmp_path / "scontrol.log"


def test_stop_time_is_the_end_time_less_the_margin(tmp_path, monkeypatch):
    monkeypatch.delenv(slurm_job.JOB_ENV, raising=False)
    assert slurm_job.stop_time(120) is None  # outside Slurm
    start = dt.datetime(2026, 12, 7, 9, 0, 0)
    end = start + dt.timedelta(minutes=60)
    _fake_slurm(tmp_path, monkeypatch, f"{start.isoformat()}|{end.isoformat()};RUNNING")
    assert slurm_job.stop_time(120) == end.timestamp() - 120
    # a short limit: a quarter of it at most, so the job still trains
    end = start + dt.timedelta(minutes=4)
    _fake_slurm(tmp_path, monkeypatch, f"{start.isoformat()}|{end.isoformat()};RUNNING")
    assert slurm_job.stop_time(120) == end.timestamp() - 60
    _fake_slurm(tmp_path, monkeypatch, f"{start.isoformat()}|N/A;RUNNING")  # no time limit
    assert slurm_job.stop_time(120) is None


def test_a_running_job_requeues_itself_a_cancelled_one_does_not(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    try:
        calls = _fake_slurm(tmp_path, monkeypatch, "x|y;RUNNING")
        assert slurm_job.continue_later(max_requeues=3)
        assert calls.read_text().split() == ["requeue", "4242"]
        calls.unlink()
        monkeypatch.setenv(slurm_job.RESTARTS_ENV, "3")  # requeued 3 times already
        assert not slurm_job.continue_later(max_requeues=3) and not calls.exists()
        calls = _fake_slurm(tmp_path, monkeypatch, "x|y;COMPLETING")  # scancel'd (by the user or by Snakemake)
        assert not slurm_job.continue_later(max_requeues=3) and not calls.exists()
    finally:
        signal.signal(signal.SIGTERM, before)
