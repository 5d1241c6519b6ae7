"""The worker spawner (segsweep.training.spawner): a trainer worker started through it serves cells like one
its client started; without a spawner the client starts the worker itself; the spawner ends with its parent.
The Slurm side (a pack's cells through one worker started from the batch step) is tests/slurm/test_slurm.py."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import _params
from test_worker import _job, data, worker_dir  # noqa: F401 - fixtures

from segsweep.training import spawner as spawners

ROOT = Path(__file__).resolve().parents[1]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _trained_by(caplog) -> list[str]:
    return [
        r.getMessage().split("pid ")[1].split(" ")[0] for r in caplog.records if "trained in worker" in r.getMessage()
    ]


@pytest.fixture
def spawner(worker_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv(spawners.ENV, "")  # undone after the test: `start` records its socket there
    started = spawners.start("test")
    yield started
    os.kill(started.pid, signal.SIGKILL)


def test_a_worker_started_through_the_spawner_serves_the_cells(data, tmp_path, spawner, caplog):  # noqa: F811
    assert os.environ[spawners.ENV] == str(spawner.socket)
    with caplog.at_level(logging.INFO, logger="segsweep.jobs"):
        for seed in (0, 1):
            m = _job(data, tmp_path / f"c{seed}", _params(epochs=1, seed=seed), worker=True)
            assert m.status in ("ok", "collapsed")
    started = [r.getMessage() for r in caplog.records if "started a training worker" in r.getMessage()]
    assert len(started) == 1 and f"through the Slurm job's worker spawner (pid {spawner.pid}, " in started[0]
    pids = _trained_by(caplog)
    assert len(pids) == 2 and len(set(pids)) == 1  # one worker served both cells
    assert _ppid(int(pids[0])) == spawner.pid  # the spawner's child, not this (client) process's
    log = next(spawner.socket.parent.glob("*/slot-0.log")).read_text()
    assert f"worker pid {pids[0]} (parent {spawner.pid})" in log


def test_without_a_spawner_the_client_starts_the_worker_itself(data, tmp_path, worker_dir, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setenv(spawners.ENV, str(worker_dir / "spawner-gone.sock"))  # recorded, but nothing listens
    with caplog.at_level(logging.INFO, logger="segsweep.jobs"):
        m = _job(data, tmp_path / "c", _params(epochs=1), worker=True)
    assert m.status in ("ok", "collapsed")
    messages = [r.getMessage() for r in caplog.records]
    assert any("worker spawner does not answer: this job step starts the worker" in msg for msg in messages)
    (pid,) = _trained_by(caplog)
    assert _ppid(int(pid)) == os.getpid()  # started by the client (the job runs in this process here)


def test_the_spawner_exits_when_its_parent_has_ended(worker_dir):  # noqa: F811
    code = "from segsweep.training import spawner; print(spawner.start('p').pid)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
    deadline = time.monotonic() + 10 * spawners.POLL_S + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the spawner outlived its parent"
    assert not (worker_dir / "spawner-p.sock").exists()
    assert "has ended: exiting (0 workers still running)" in (worker_dir / "spawner-p.log").read_text()


def test_only_a_slurm_batch_step_with_training_jobs_starts_a_spawner(monkeypatch):
    assert spawners.in_slurm_batch_step({"SLURM_JOB_ID": "7"})
    assert spawners.in_slurm_batch_step({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": spawners.BATCH_STEP_ID})
    assert not spawners.in_slurm_batch_step({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"})  # a cell's srun step
    assert not spawners.in_slurm_batch_step({})  # not in Slurm
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    assert spawners.start_for_batch_step({"aggregate"}, worker=True) is None  # no training job
    assert spawners.start_for_batch_step({"train"}, worker=False) is None  # resources.worker: false
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    assert spawners.start_for_batch_step({"train"}, worker=True) is None  # a step, not the batch step


def test_the_target_rules_are_read_from_a_job_invocations_command_line():
    argv = [
        "snakemake",
        "--snakefile",
        "S",
        "--target-jobs",
        "train:cell=0a1b",
        "split:key=x,seed=1",
        "--mode",
        "remote",
    ]
    assert spawners.target_rules(argv) == {"train", "split"}
    assert spawners.target_rules(["snakemake", "--cores", "2", "all"]) == set()  # a run, not a job invocation


def test_a_new_spawner_removes_the_sockets_of_ended_ones(worker_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv(spawners.ENV, "")
    dead = worker_dir / "spawner-1-2.sock"  # a spawner killed with its job: the file stays, nothing listens
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(dead))
    fresh = worker_dir / "spawner-3-4.sock"  # just bound by another job's spawner, not listening yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(fresh))
    os.utime(dead, (time.time() - 120, time.time() - 120), follow_symlinks=False)
    started = spawners.start("5")
    try:
        assert not dead.exists() and fresh.exists() and started.socket.exists()
    finally:
        os.kill(started.pid, signal.SIGKILL)


def test_a_spawner_of_a_job_with_several_gpus_starts_no_gpu_worker(worker_dir, monkeypatch, tmp_path):  # noqa: F811
    """Where Slurm constrains devices a step numbers its GPUs from 0 and the batch step numbers all of the job's:
    the spawner cannot tell which GPU a step's "0" is, so the step starts that worker itself."""
    monkeypatch.setenv(spawners.ENV, "")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the batch step's view: the job's two GPUs
    started = spawners.start("gpus")
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    try:
        env = {"PATH": os.environ["PATH"], "CUDA_VISIBLE_DEVICES": "0"}
        reply = spawners.spawn(started.socket, sleeper, env, str(tmp_path), tmp_path / "gpu.log")
        assert reply == {"declined": spawners.SEVERAL_GPUS}
        env.pop("CUDA_VISIBLE_DEVICES")  # a CPU worker: no GPU to mistake
        reply = spawners.spawn(started.socket, sleeper, env, str(tmp_path), tmp_path / "cpu.log")
        assert reply["spawner"] == {"pid": started.pid, "job": os.environ.get("SLURM_JOB_ID"), "step": "batch"}
        assert _ppid(reply["pid"]) == started.pid
        os.kill(reply["pid"], signal.SIGKILL)
    finally:
        os.kill(started.pid, signal.SIGKILL)


def test_a_worker_the_spawner_started_that_exits_at_once_is_a_crash(spawner, monkeypatch):
    from segsweep.training import worker as workers

    directory = workers.worker_dir()
    t0 = time.monotonic()
    with pytest.raises(workers.WorkerCrash, match="exited at start"):
        workers._connect(directory, 0, "not-a-number", logging.getLogger("test"))  # the worker fails to parse it
    assert time.monotonic() - t0 < workers.START_TIMEOUT_S / 4  # noticed once reaped, not at the start timeout
    assert "ValueError" in (directory / "slot-0.log").read_text()
