"""Stop signals (SIGTERM / SIGUSR1: Slurm's time-limit warning, preemption, scancel) during training: a
mid-epoch last.pt, `Preempted`, an exit for the retry (never a failed cell), and a resumed run with exactly
the numbers of an uninterrupted one. CPU, one thread, the tiny data set of tests/test_train.py; genuine
signals (os.kill to this process, or Popen.send_signal to a job process)."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_train import _params, _read_csv, _write_dataset

from segsweep import runner
from segsweep.errors import SegsweepError
from segsweep.training import loop, preempt, schedules
from segsweep.training.job import CRASHES_FILE, RUN_ENV, USER_ERROR_MARKER, run_train_job
from segsweep.training.loop import PARTIAL_CHECKPOINT_VERSION, train_cell
from segsweep.training.preempt import EXIT_PREEMPTED, Preempted

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

# per-step schedule, augmentation, dropout, a penalty, clipping: every piece of state must survive the stop
RICH = dict(
    epochs=3,
    schedule="cosine",
    augment={"flip": True, "rotate_deg": 15, "intensity": 0.1},
    dropout=0.1,
    regularizer="l2",
    reg_lambda=1e-4,
    grad_clip=1.0,
    optimizer="sgd",
    lr=0.05,
)
# stopped in the epoch that unfreezes the encoder: its group, and the logged encoder LR, must come back
UNFREEZE = dict(epochs=3, finetune="freeze_then_unfreeze", unfreeze_epoch=1, schedule="cosine", dropout=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def sentinel():
    """A handler of the test's own for both signals: if training does not catch one, the test fails here
    instead of pytest dying; afterwards training must have put exactly this handler back."""
    seen = []
    handler = lambda signum, frame: seen.append(signum)  # noqa: E731
    old = {s: signal.signal(s, handler) for s in preempt.STOP_SIGNALS}
    yield SimpleNamespace(handler=handler, seen=seen)
    for s, h in old.items():
        signal.signal(s, h)


def _signal_at_step(monkeypatch, signum, global_step):
    """Send ``signum`` to this process right after optimizer step ``global_step`` (1-based, whole run)."""
    orig = schedules.LRSchedule.step

    def step(self):
        orig(self)
        if self.step_count == global_step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(schedules.LRSchedule, "step", step)


def _signal_after_data_load(monkeypatch, signum=signal.SIGTERM):
    """Send ``signum`` to this process right after the cell's data load, before its first step."""
    load = loop.load_cell_data

    def load_then_signal(*a, **k):
        d = load(*a, **k)
        os.kill(os.getpid(), signum)
        return d

    monkeypatch.setattr(loop, "load_cell_data", load_then_signal)


def _hist(out):
    return [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(out / "history.csv")]


def _quality(out):
    """metrics.json without what differs between two identical runs: wall time and folder name."""
    m = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in ("wall_s", "cell")}


def _assert_same_outputs(a, b):
    assert _hist(a) == _hist(b)
    assert _quality(a) == _quality(b)
    for name in ("per_image.csv", "per_patient.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    with np.load(a / "predictions.npz") as z1, np.load(b / "predictions.npz") as z2:
        assert z1.files == z2.files and all(np.array_equal(z1[k], z2[k]) for k in z1.files)
    for name in ("last.pt", "best.pt"):
        w1 = torch.load(a / name, weights_only=True)["model"]
        w2 = torch.load(b / name, weights_only=True)["model"]
        assert all(torch.equal(w1[k], w2[k]) for k in w1), name


@pytest.mark.parametrize(
    ("signum", "kw", "at_step"),
    [
        (signal.SIGTERM, RICH, 5),  # epoch 2 of 3 steps per epoch, after its step 2
        (signal.SIGUSR1, UNFREEZE, 4),  # epoch 2 (the encoder's first), after its step 1
    ],
    ids=["SIGTERM", "SIGUSR1-unfreeze"],
)
def test_signal_mid_epoch_writes_a_partial_checkpoint_and_resumes_identically(
    data, tmp_path, monkeypatch, sentinel, signum, kw, at_step
):
    data_dir, split = data
    p = _params(**kw)
    whole = tmp_path / "whole"
    train_cell(p, data_dir, split, whole)

    out = tmp_path / "stopped"
    _signal_at_step(monkeypatch, signum, at_step)
    with pytest.raises(Preempted) as stop:
        train_cell(p, data_dir, split, out)
    monkeypatch.undo()
    assert (stop.value.signum, stop.value.epoch, stop.value.step, stop.value.steps) == (signum, 2, at_step - 3, 3)
    assert f"preempted at epoch 2 step {at_step - 3}/3; last.pt written; exiting for the retry" in str(stop.value)
    assert signal.getsignal(signum) is sentinel.handler and sentinel.seen == []  # caught by training, then restored
    assert not (out / "metrics.json").exists() and len(_read_csv(out / "history.csv")) == 1

    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["version"] == PARTIAL_CHECKPOINT_VERSION and ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    part = ckpt["partial"]
    assert part["epoch"] == 2 and part["step"] == at_step - 3 and ckpt["schedule"]["step_count"] == at_step
    assert sorted(part["perm"].tolist()) == list(range(12))  # the epoch's order, already drawn
    assert part["loss_sum"].ndim == 0 and torch.isfinite(part["loss_sum"])
    if kw is UNFREEZE:
        assert len(ckpt["optimizer"]["param_groups"]) == 2 and part["lr_encoder"] == part["lr_first"] > 0

    seen = []
    train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [2, 3]  # epoch 2 went on inside; nothing retrained
    _assert_same_outputs(whole, out)


def test_stop_in_the_first_epoch_and_before_any_step(data, tmp_path, monkeypatch, sentinel):
    data_dir, split = data
    p = _params(**RICH)
    train_cell(p, data_dir, split, tmp_path / "whole")

    # a signal while the data load (before the first step): nothing is trained, nothing written
    out = tmp_path / "early"
    _signal_after_data_load(monkeypatch)
    with pytest.raises(Preempted, match="epoch 1 step 0/3; nothing trained yet") as stop:
        train_cell(p, data_dir, split, out)
    assert stop.value.checkpoint is None and not (out / "last.pt").exists()
    monkeypatch.undo()

    # after the run's very first step
    _signal_at_step(monkeypatch, signal.SIGTERM, 1)
    with pytest.raises(Preempted, match="epoch 1 step 1/3"):
        train_cell(p, data_dir, split, out)
    monkeypatch.undo()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["history"] == [] and ckpt["partial"]["step"] == 1
    train_cell(p, data_dir, split, out)
    _assert_same_outputs(tmp_path / "whole", out)
    assert sentinel.seen == []


def test_signal_after_an_epoch_s_last_step_stops_at_the_epoch_end(data, tmp_path, monkeypatch, sentinel):
    """The epoch's last step finishes the epoch (validation, epoch-end last.pt); the next epoch does not start."""
    data_dir, split = data
    p = _params(**RICH)
    out = tmp_path / "c"
    _signal_at_step(monkeypatch, signal.SIGUSR1, 3)
    with pytest.raises(Preempted, match="epoch 2 step 0/3; last.pt written"):
        train_cell(p, data_dir, split, out)
    monkeypatch.undo()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["version"] == loop.CHECKPOINT_VERSION and "partial" not in ckpt and len(ckpt["history"]) == 1
    train_cell(p, data_dir, split, out)
    train_cell(p, data_dir, split, tmp_path / "whole")
    _assert_same_outputs(tmp_path / "whole", out)


def test_a_partial_checkpoint_that_does_not_fit_starts_afresh(data, tmp_path, monkeypatch, sentinel, caplog):
    data_dir, split = data
    p = _params(**RICH)
    out = tmp_path / "c"
    _signal_at_step(monkeypatch, signal.SIGTERM, 5)
    with pytest.raises(Preempted):
        train_cell(p, data_dir, split, out)
    monkeypatch.undo()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["partial"]["step"] = 1  # no longer the schedule's step count
    loop.checkpoint.save(ckpt, out / "last.pt")  # a valid file (digest), whose content does not fit
    seen = []
    with caplog.at_level(logging.WARNING):
        train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2, 3] and "belongs to other parameters or another version: starting afresh" in caplog.text


def test_catch_stop_signals_restores_the_previous_handlers():
    before = {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS}
    with preempt.catch_stop_signals() as outer:
        os.kill(os.getpid(), signal.SIGUSR1)
        with preempt.catch_stop_signals() as inner:
            assert preempt.requested() is None  # the innermost one answers
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert inner.signum == signal.SIGTERM and preempt.requested() == signal.SIGTERM  # the first one wins
        assert outer.signum == signal.SIGUSR1 and preempt.requested() == signal.SIGUSR1
    assert {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS} == before
    assert preempt.requested() is None
    with pytest.raises(KeyError), preempt.catch_stop_signals():
        raise KeyError("x")
    assert {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS} == before

    # outside the main thread nothing can be installed: the context still works, and never fires
    result = {}

    def in_thread():
        with preempt.catch_stop_signals() as req:
            result["requested"] = req.requested

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert result == {"requested": False} and {s: signal.getsignal(s) for s in preempt.STOP_SIGNALS} == before


# ------------------------------------------------------------------------------------ the job wrapper
def _job(data, out, p, **kw):
    data_dir, split = data
    return run_train_job(p, data_dir=data_dir, split_path=split, out_dir=out, device="cpu", **kw)


def test_job_exits_for_the_retry_on_every_attempt_and_never_records_failed(
    data, tmp_path, monkeypatch, sentinel, caplog
):
    """Stops never use one of the cell's crash attempts (attempts.json counts crashes only): stopped three times
    with a budget of 2, the cell is never recorded failed, and the next run finishes it like an uninterrupted one."""
    p = _params(**RICH)
    out = tmp_path / "c0ffee"
    for attempt, at_step in ((1, 2), (2, 5), (3, 7)):  # more stops than the crash budget (max_attempts=2)
        _signal_at_step(monkeypatch, signal.SIGTERM, at_step)
        monkeypatch.setenv(RUN_ENV, "run1")
        with caplog.at_level(logging.WARNING, logger="segsweep.jobs"), pytest.raises(Preempted):
            _job(data, out, p, attempt=attempt, max_attempts=2)
        monkeypatch.undo()
        assert not (out / "metrics.json").exists() and not (out / USER_ERROR_MARKER).exists()
        assert not (out / CRASHES_FILE).exists()
    msgs = [r.getMessage() for r in caplog.records if r.name == "segsweep.jobs"]
    assert msgs[0] == (
        "SIGTERM: preempted at epoch 1 step 2/3; last.pt written; exiting for the retry "
        "(a stop, not a crash: 0 of 2 crash attempts used)"
    )
    assert msgs[2].startswith("SIGTERM: preempted at epoch ") and msgs[2].endswith("0 of 2 crash attempts used)")
    # the next `snakemake` run (attempt 1 again) resumes and finishes like an uninterrupted run
    m = _job(data, out, p, attempt=1, max_attempts=2)
    assert m.status in ("ok", "collapsed")
    train_cell(p, data[0], data[1], tmp_path / "whole", device="cpu")
    _assert_same_outputs(tmp_path / "whole", out)


def test_runner_exits_with_exit_preempted(data, tmp_path, monkeypatch, sentinel, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    smk = SimpleNamespace(log=[str(tmp_path / "train.log")], rule="train")
    _signal_at_step(monkeypatch, signal.SIGUSR1, 2)
    try:
        with pytest.raises(SystemExit) as exit_:
            runner.run(
                smk, run_train_job, _params(**RICH), data_dir=data[0], split_path=data[1], out_dir=tmp_path / "c"
            )
    finally:
        for h in root.handlers:  # runner.setup_logging replaced the root handlers: put pytest's back
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert exit_.value.code == EXIT_PREEMPTED
    err = capsys.readouterr().err.splitlines()
    assert "segsweep: SIGUSR1: preempted at epoch 1 step 2/3; last.pt written; exiting for the retry" in err
    log = (tmp_path / "train.log").read_text()
    assert "preempted at epoch 1 step 2/3" in log and "Traceback" not in log
    assert not isinstance(Preempted(15, 1, 1, 3, None), Exception | SegsweepError)  # never a crash, never a user error


# --------------------------------------------------------------------------- a real job process, signalled
JOB = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from segsweep import runner
from segsweep.training.job import run_train_job
from segsweep.training.params import CellParams

params, data_dir, split, out, log, attempt = sys.argv[1:]
runner.run(
    SimpleNamespace(log=[log], rule="train"),
    run_train_job,
    CellParams.from_dict(json.loads(params)),
    data_dir=Path(data_dir),
    split_path=Path(split),
    out_dir=Path(out),
    device="cpu",
    attempt=int(attempt),
    max_attempts=2,
)
"""


def _job_process(p, data, out, log, attempt):
    args = [json.dumps(p.to_dict()), str(data[0]), str(data[1]), str(out), str(log), str(attempt)]
    return subprocess.Popen(
        [sys.executable, "-c", JOB, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_job_process_terminated_from_outside_resumes_to_the_same_numbers(data, tmp_path, caplog):
    # 6 steps per epoch, 15 epochs (~2 s on one core): the signal lands while it trains, mostly mid-epoch
    p = _params(**{**RICH, "epochs": 15, "batch_size": 2})
    out, log = tmp_path / "job" / "c", tmp_path / "train.log"
    proc = _job_process(p, data, out, log, attempt=1)
    try:
        deadline = time.monotonic() + 120
        while not (out / "history.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)  # as Slurm's --signal=TERM / scancel sends it to the job step
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, output
    assert not (out / "metrics.json").exists() and not (out / USER_ERROR_MARKER).exists()
    assert "preempted at epoch" in log.read_text() and "last.pt written; exiting for the retry" in output
    ckpt = torch.load(out / "last.pt", weights_only=True)
    stopped_at = (len(ckpt["history"]), ckpt.get("partial", {}).get("step", 0))
    assert 1 <= stopped_at[0] < 15

    # the retry (in this process: a second interpreter start costs more than the training)
    with caplog.at_level(logging.INFO, logger="segsweep.jobs"):
        m = _job(data, out, p, attempt=2, max_attempts=2)
    assert m.status in ("ok", "collapsed") and "resuming from" in caplog.text
    train_cell(p, data[0], data[1], tmp_path / "whole" / "c", device="cpu")
    _assert_same_outputs(tmp_path / "whole" / "c", out)
    print(f"stopped after epoch {stopped_at[0]}, step {stopped_at[1]} of the next")
