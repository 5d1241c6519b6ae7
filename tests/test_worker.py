"""Trainer workers (segsweep.training.worker): a cell trained in a long-lived worker, after other cells, or
two at once on the CPU leaves the same files and statuses as a cell trained in its own job process; stop
signals and kills reach the cell and the retry resumes to the same numbers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_preempt import JOB, RICH, _assert_same_outputs, _hist, _quality
from test_train import _params, _write_dataset

from segsweep.errors import EXIT_PREEMPTED
from segsweep.training import worker as workers
from segsweep.training.job import run_train_job
from segsweep.training.record import CellMetrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def worker_dir(monkeypatch):
    """A short, private SEGSWEEP_WORKER_DIR (Unix socket paths are short); its workers are ended after."""
    base = Path(tempfile.mkdtemp(prefix="ssw", dir="/tmp"))
    monkeypatch.setenv("SEGSWEEP_WORKER_DIR", str(base))
    yield base
    subprocess.run(["pkill", "-9", "-f", f"segsweep.training.worker {base}"], check=False)
    shutil.rmtree(base, ignore_errors=True)


def _worker_pids(base: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"segsweep.training.worker {base}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _job(data, out, p, **kw):
    data_dir, split = data
    return run_train_job(p, data_dir=data_dir, split_path=split, out_dir=out, device="cpu", **kw)


def test_a_worker_trains_cells_one_after_another_like_separate_jobs(data, tmp_path, worker_dir, caplog):
    """Three cells in one worker (one crashes, one diverges, one learns) leave what three job processes leave."""
    cells = {
        "crash": (_params(epochs=2), {"threads": 0}),  # torch.set_num_threads(0): a RuntimeError inside training
        "diverge": (_params(optimizer="sgd", lr=1e6, momentum=0.0, batch_norm=False, loss="bce", epochs=10), {}),
        "ok": (_params(**RICH), {}),
    }
    got = {}
    with caplog.at_level(logging.INFO, logger="segsweep.jobs"):
        for name, (p, kw) in cells.items():
            got[name] = _job(data, tmp_path / "w" / name, p, attempt=2, max_attempts=2, worker=True, **kw)
    pids = {
        r.getMessage().split("pid ")[1].split(" ")[0] for r in caplog.records if "trained in worker" in r.getMessage()
    }
    assert len(pids) == 1  # one worker served all three
    for name, (p, kw) in cells.items():
        alone = _job(data, tmp_path / "p" / name, p, attempt=2, max_attempts=2, **kw)
        assert got[name].status == alone.status, name
        assert got[name].reason == alone.reason, name  # the crash reads the same
        if alone.status != "failed":
            assert _hist(tmp_path / "w" / name) == _hist(tmp_path / "p" / name)
            assert _quality(tmp_path / "w" / name) == _quality(tmp_path / "p" / name)
    assert [got[n].status for n in cells] == ["failed", "diverged", got["ok"].status]
    assert got["crash"].reason.startswith("RuntimeError")
    assert isinstance(got["ok"], CellMetrics) and got["ok"].status in ("ok", "collapsed")


def test_a_crash_before_the_last_attempt_is_retried_and_user_errors_stay_user_errors(data, tmp_path, worker_dir):
    from segsweep.errors import SegsweepError

    with pytest.raises(workers.WorkerCrash, match="RuntimeError"):
        _job(data, tmp_path / "c", _params(epochs=1), threads=0, attempt=1, max_attempts=2, worker=True)
    with pytest.raises(SegsweepError):  # a missing split file: the user's to fix, not a crash
        run_train_job(
            _params(epochs=1), data_dir=data[0], split_path=tmp_path / "nope.json", out_dir=tmp_path / "u", worker=True
        )


def test_a_working_directory_made_anew_under_the_same_path_is_the_one_the_worker_trains_in(
    data, tmp_path, worker_dir, monkeypatch, caplog
):
    """`rm -rf run && mkdir run` within the worker's idle time: the same path, so the same worker directory
    and worker, whose own working directory is the deleted one. The next cell, given relative paths, must train
    in the new directory (it crashed with FileNotFoundError, both attempts, before the worker followed the job's
    working directory per cell)."""
    run = tmp_path / "run"

    def fresh_run_dir():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(data[0], run / "data")
        monkeypatch.chdir(run)

    p = _params(epochs=2)
    with caplog.at_level(logging.INFO, logger="segsweep.jobs"):
        for _ in range(2):
            fresh_run_dir()
            m = run_train_job(
                p, data_dir=Path("data"), split_path=Path("data/split.json"), out_dir=Path("cell"),
                device="cpu", attempt=2, max_attempts=2, worker=True,
            )  # fmt: skip
            assert m.status in ("ok", "collapsed"), m.reason
    pids = {
        r.getMessage().split("pid ")[1].split(" ")[0] for r in caplog.records if "trained in worker" in r.getMessage()
    }
    assert len(pids) == 1  # the second cell went to the worker started in the deleted directory
    alone = tmp_path / "alone"
    _job(data, alone, p)
    assert _hist(run / "cell") == _hist(alone)
    assert _quality(run / "cell") == _quality(alone)


# ------------------------------------------------------------------------- a job process, from outside
# test_preempt's job process, with the cell handed to a worker
CLIENT = JOB.replace("max_attempts=2,\n)", "max_attempts=2,\n    worker=True,\n    worker_idle_s=30,\n)")
assert CLIENT != JOB


def _client(p, data, out, log):
    args = [json.dumps(p.to_dict()), str(data[0]), str(data[1]), str(out), str(log), "1"]
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_training(proc, out, timeout=120):
    deadline = time.monotonic() + timeout
    while not (out / "history.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[0]


LONG = _params(**{**RICH, "epochs": 20, "batch_size": 2})  # 6 steps an epoch, a few seconds on one core


def _finish_and_compare(data, tmp_path, out, p):
    m = _job(data, out, p, attempt=1, max_attempts=2, worker=True)  # the rerun resumes (in a worker)
    assert m.status in ("ok", "collapsed")
    _job(data, tmp_path / "whole" / "c", p)  # uninterrupted, in this process
    _assert_same_outputs(tmp_path / "whole" / "c", out)


@pytest.mark.parametrize("target", ["job", "worker"])
def test_sigterm_checkpoints_the_cell_and_the_rerun_resumes_identically(data, tmp_path, worker_dir, target):
    """SIGTERM to the job (Slurm's time-limit warning, scancel) is forwarded to its worker; SIGTERM to the worker
    itself stops its cell the same way and ends the worker. Either way: exit 75, a last.pt, the same numbers."""
    out, log = tmp_path / "job" / "c", tmp_path / "train.log"
    proc = _client(LONG, data, out, log)
    try:
        _wait_for_training(proc, out)
        pids = _worker_pids(worker_dir)
        assert len(pids) == 1
        os.kill(proc.pid if target == "job" else pids[0], signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, output
    assert not (out / "metrics.json").exists() and (out / "last.pt").exists()
    assert "preempted at epoch" in log.read_text()
    if target == "worker":  # a worker told to stop does not serve another cell
        deadline = time.monotonic() + 30
        while _worker_pids(worker_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _worker_pids(worker_dir) == []
    _finish_and_compare(data, tmp_path, out, LONG)


def test_a_killed_job_frees_its_worker_and_the_retry_resumes_identically(data, tmp_path, worker_dir):
    """kill -9 of the job: the worker sees its client gone, checkpoints the cell and serves the retry."""
    out, log = tmp_path / "job" / "c", tmp_path / "train.log"
    proc = _client(LONG, data, out, log)
    try:
        _wait_for_training(proc, out)
        pid = _worker_pids(worker_dir)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    _finish_and_compare(data, tmp_path, out, LONG)
    assert _worker_pids(worker_dir) == pid  # the same worker trained the retry


def test_a_worker_that_dies_is_a_crash_of_its_cell_only(data, tmp_path, worker_dir):
    """kill -9 of the worker (as a segfault would end it): the job fails for the retry, which starts a
    fresh worker and resumes to the same numbers."""
    out, log = tmp_path / "job" / "c", tmp_path / "train.log"
    proc = _client(LONG, data, out, log)
    try:
        _wait_for_training(proc, out)
        os.kill(_worker_pids(worker_dir)[0], signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode not in (0, EXIT_PREEMPTED) and "WorkerCrash" in output, output
    _finish_and_compare(data, tmp_path, out, LONG)


def test_a_worker_that_ends_after_its_client_was_signalled_is_a_stop_not_a_crash(data, tmp_path, worker_dir):
    """Under proctrack/cgroup a Slurm job's cancel or requeue kills the batch step's worker right after its
    client got SIGTERM (stand-in: the worker is paused, so it cannot act on the stop, then killed): the job
    stops (exit 75, no crash counted) and the retry resumes from the last epoch's last.pt to the same numbers."""
    out, log = tmp_path / "job" / "c", tmp_path / "train.log"
    proc = _client(LONG, data, out, log)
    try:
        _wait_for_training(proc, out)
        (pid,) = _worker_pids(worker_dir)
        os.kill(pid, signal.SIGSTOP)
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.5)  # the client passes the stop on
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, output
    text = log.read_text()
    assert "SIGTERM: stopping, and the training worker of slot 0 ended before it saved mid-epoch" in text, text
    assert "a stop, not a crash" in text and "crash 1 of" not in text
    _finish_and_compare(data, tmp_path, out, LONG)


def test_two_cells_at_once_give_the_numbers_of_two_sequential_jobs(data, tmp_path, worker_dir):
    """K = 2 concurrent cells on the CPU (two slots, two workers sharing the cores)."""
    ps = [_params(**{**RICH, "epochs": 4, "seed": s}) for s in (0, 1)]
    procs = [_client(p, data, tmp_path / "k2" / f"c{i}", tmp_path / f"{i}.log") for i, p in enumerate(ps)]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    assert len(_worker_pids(worker_dir)) == 2
    for i, p in enumerate(ps):
        _job(data, tmp_path / "seq" / f"c{i}", p)
        _assert_same_outputs(tmp_path / "seq" / f"c{i}", tmp_path / "k2" / f"c{i}")


# ------------------------------------------------------------------------------------------- units
def test_slots_share_out_the_visible_gpus_round_robin(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    gpus = workers.visible_gpus()
    assert gpus == ["2", "5"]
    assert [workers.gpu_of_slot(i, gpus) for i in range(5)] == ["2", "5", "2", "5", "2"]
    assert workers.gpu_of_slot(0, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert workers.visible_gpus() == []


def test_slots_are_exclusive_and_released(tmp_path):
    with workers.take_slot(tmp_path) as a, workers.take_slot(tmp_path) as b:
        assert (a, b) == (0, 1)
    with workers.take_slot(tmp_path) as c:
        assert c == 0


def test_edited_code_gets_new_workers(tmp_path, monkeypatch):
    """The worker directory is keyed by the package's sources: after an edit no old worker is reused."""
    pkg = tmp_path / "segsweep"
    shutil.copytree(workers.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(workers, "PACKAGE_DIR", pkg)
    monkeypatch.setenv("SEGSWEEP_WORKER_DIR", str(tmp_path / "w"))
    before = workers.worker_dir()
    assert workers.worker_dir() == before
    f = pkg / "training" / "loop.py"
    f.write_text(f.read_text() + "\n# edited\n")
    assert workers.worker_dir() != before


def test_another_torch_or_torch_environment_gets_new_workers(tmp_path, monkeypatch):
    """A worker keeps the torch it imported and the environment it was started with: torch upgraded in place
    or a changed CUDA / torch / thread-pool variable must not reach an old one; a per-run variable must."""
    monkeypatch.setenv("SEGSWEEP_WORKER_DIR", str(tmp_path / "w"))
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "version.py").write_text("__version__ = '2.14.1'\n")
    monkeypatch.setattr(workers, "_torch_dir", lambda: fake)
    before = workers.worker_dir()
    (fake / "version.py").write_text("__version__ = '2.15.0'\n")  # pip install -U torch, in place
    upgraded = workers.worker_dir()
    assert upgraded != before
    # another value than this process has (a library imported by an earlier test may have set it)
    was = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8" if was == ":4096:8" else ":4096:8")
    assert workers.worker_dir() != upgraded
    if was is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", was)
    monkeypatch.setenv("SEGSWEEP_RUN", "abc123")  # one id per snakemake invocation: workers outlive it
    assert workers.worker_dir() == upgraded
    assert workers.torch_stamp().startswith(str(fake))
