"""How often last.pt is written (``resources.checkpoint_every_epochs`` / ``checkpoint_every_s``): only every N
epochs or S seconds, always at the run's end and on a stop signal; best.pt with it. A run killed between two
writes resumes from the older last.pt to exactly the numbers of an uninterrupted run. CPU, one thread, the
tiny data set of tests/test_train.py (3 optimizer steps per epoch)."""

import logging
import re
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_preempt import RICH, _assert_same_outputs, _hist, _signal_after_data_load, _signal_at_step
from test_train import _params, _read_csv, _write_dataset

from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.plan.resources import ResourceConfig
from segsweep.training import checkpoint, loop, preempt
from segsweep.training.job import EXECUTION_SETTINGS, execution_settings, run_train_job
from segsweep.training.loop import CheckpointEvery, train_cell
from segsweep.training.preempt import Preempted

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def writes(monkeypatch):
    """Every checkpoint write, in order: (file name, epochs the content holds, partial or not)."""
    seen = []
    save = checkpoint.save

    def record(obj, path):
        seen.append((Path(path).name, obj["epoch"], "partial" in obj))
        save(obj, path)

    monkeypatch.setattr(checkpoint, "save", record)
    return seen


def _last_epochs(writes):
    return [e for name, e, _ in writes if name == "last.pt"]


def _assert_best_written_with_last(writes):
    """best.pt is only ever written right before last.pt, with an epoch that last.pt already holds."""
    for i, (name, epoch, _) in enumerate(writes):
        if name == "best.pt":
            nxt = writes[i + 1]
            assert nxt[0] == "last.pt" and epoch <= nxt[1], writes


def _ckpt(out, name="last.pt"):
    return torch.load(out / name, weights_only=True)


# ------------------------------------------------------------------------------------------ when it writes
@pytest.mark.parametrize(
    ("every", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 6, 7]),  # the default: every epoch, as always
        ({"checkpoint_every_epochs": 3}, [3, 6, 7]),  # every 3rd, and the run's last epoch
        ({"checkpoint_every_epochs": 7}, [7]),
        ({"checkpoint_every_epochs": 0}, [7]),  # neither count nor time: only at the end
        ({"checkpoint_every_epochs": 0, "checkpoint_every_s": 1e-9}, [1, 2, 3, 4, 5, 6, 7]),  # time, always due
        ({"checkpoint_every_epochs": 4, "checkpoint_every_s": 3600}, [4, 7]),  # time never due here
        # the config's default (neither key set) on the CPU: every epoch; the values passed beside it do not count
        ({"checkpoint_auto": True, "checkpoint_every_epochs": 0, "checkpoint_every_s": 0}, [1, 2, 3, 4, 5, 6, 7]),
    ],
    ids=["default", "every3", "every7", "end-only", "by-time", "epochs-or-time", "auto-on-cpu"],
)
def test_last_pt_is_written_every_n_epochs_and_at_the_end(data, tmp_path, writes, every, expected):
    data_dir, split = data
    m = train_cell(_params(epochs=7), data_dir, split, tmp_path / "c", **every)
    assert _last_epochs(writes) == expected
    _assert_best_written_with_last(writes)
    assert len(_read_csv(tmp_path / "c" / "history.csv")) == 7  # history.csv: after every epoch regardless
    assert _ckpt(tmp_path / "c", "best.pt")["epoch"] == m.best_epoch == _ckpt(tmp_path / "c")["best"]["epoch"]


def test_early_stop_divergence_and_rungs_always_write(data, tmp_path, writes):
    data_dir, split = data
    # early stop (a learning rate too small to make progress, as in test_train): the stopping epoch is written
    m = train_cell(
        _params(epochs=40, lr=1e-6, patience=2), data_dir, split, tmp_path / "e", checkpoint_every_epochs=100
    )
    assert m.reason.startswith("early stop") and _last_epochs(writes) == [m.epochs_run]
    assert _ckpt(tmp_path / "e")["stopped"] == "early_stop"
    assert _ckpt(tmp_path / "e", "best.pt")["epoch"] == m.best_epoch
    writes.clear()

    # divergence (test_train's huge learning rate)
    p = _params(optimizer="sgd", lr=1e6, momentum=0.0, batch_norm=False, loss="bce", epochs=10)
    m = train_cell(p, data_dir, split, tmp_path / "d", checkpoint_every_epochs=100)
    assert m.status == "diverged" and _last_epochs(writes) == [m.epochs_run]
    writes.clear()

    # a pruner's rung (stop_at) ends the call: written there; the continuation counts from it
    p = _params(epochs=8)
    summary = train_cell(p, data_dir, split, tmp_path / "r", stop_at=4, checkpoint_every_epochs=3)
    assert summary["epochs_run"] == 4 and _last_epochs(writes) == [3, 4]
    writes.clear()
    train_cell(p, data_dir, split, tmp_path / "r", checkpoint_every_epochs=3)
    assert _last_epochs(writes) == [7, 8]
    train_cell(p, data_dir, split, tmp_path / "whole")
    _assert_same_outputs(tmp_path / "whole", tmp_path / "r")


# ------------------------------------------------------------------------------------------ resume
class _Killed(Exception):
    pass


def _kill_after(n, also=None):
    def on_epoch(row):
        if also is not None:
            also(row)
        if row["epoch"] == n:
            raise _Killed  # as kill -9 right after the epoch: nothing more is written

    return on_epoch


def test_killed_between_checkpoints_resumes_from_the_older_one_identically(data, tmp_path, writes):
    data_dir, split = data
    # per-step schedule, augmentation, dropout, a penalty, clipping: every random stream must be restored
    p = _params(**{**RICH, "epochs": 7})
    whole = tmp_path / "whole"
    train_cell(p, data_dir, split, whole)  # every epoch: the setting must not change a single number
    writes.clear()

    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        train_cell(p, data_dir, split, out, on_epoch=_kill_after(5), checkpoint_every_epochs=3)
    assert _last_epochs(writes) == [3]
    assert len(_read_csv(out / "history.csv")) == 5  # the epochs after last.pt are lost with the job
    ckpt = _ckpt(out)
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    # best.pt agrees with the last.pt the retry resumes: a best epoch 4 or 5 was never written
    assert _ckpt(out, "best.pt")["epoch"] == ckpt["best"]["epoch"] <= 3

    writes.clear()
    seen = []
    train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]), checkpoint_every_epochs=3)
    assert seen == [4, 5, 6, 7]  # epochs 4 and 5 trained again, from epoch 3's state
    assert _last_epochs(writes) == [6, 7]
    _assert_same_outputs(whole, out)
    assert (whole / "history.csv").read_text().count("\n") == (out / "history.csv").read_text().count("\n") == 8


def test_older_last_pt_with_a_newer_best_pt_resumes_identically(data, tmp_path, caplog):
    """best.pt newer than last.pt (a job killed between the two writes, or an older segsweep that wrote
    best.pt at once): the retrained epochs write it again, the final evaluation reads the right weights."""
    data_dir, split = data
    p = _params(**{**RICH, "epochs": 6})
    whole = tmp_path / "whole"
    train_cell(p, data_dir, split, whole)
    best_epoch = _ckpt(whole, "best.pt")["epoch"]
    assert best_epoch > 2  # else the test shows nothing: pick other epochs

    out, kept = tmp_path / "c", tmp_path / "last-after-2.pt"

    def keep_epoch_2(row):
        if row["epoch"] == 2:
            shutil.copy(out / "last.pt", kept)
            shutil.copy(checkpoint.sidecar(out / "last.pt"), checkpoint.sidecar(kept))

    with pytest.raises(_Killed):
        train_cell(p, data_dir, split, out, on_epoch=_kill_after(best_epoch, also=keep_epoch_2))
    shutil.copy(kept, out / "last.pt")  # last.pt after epoch 2 (and its digest), best.pt of a later epoch
    shutil.copy(checkpoint.sidecar(kept), checkpoint.sidecar(out / "last.pt"))
    ckpt = _ckpt(out)
    assert len(ckpt["history"]) == 2 and ckpt["best"]["epoch"] <= 2 < _ckpt(out, "best.pt")["epoch"] == best_epoch

    seen = []
    with caplog.at_level(logging.WARNING):
        train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]), checkpoint_every_epochs=2)
    assert seen == [3, 4, 5, 6]
    assert re.search(rf"best.pt holds epoch {best_epoch}, last.pt expects {ckpt['best']['epoch']}", caplog.text)
    _assert_same_outputs(whole, out)


# ------------------------------------------------------------------------------------------ stop signals
@pytest.fixture
def sentinel():
    """Own handlers for both signals, so a signal training fails to catch cannot kill pytest."""
    seen = []
    old = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in preempt.STOP_SIGNALS}
    yield seen
    for s, h in old.items():
        signal.signal(s, h)


def test_a_stop_signal_between_checkpoints_writes_last_pt(data, tmp_path, monkeypatch, sentinel, writes):
    data_dir, split = data
    p = _params(**{**RICH, "epochs": 5})
    whole = tmp_path / "whole"
    train_cell(p, data_dir, split, whole)

    # after epoch 2's last step: epoch 2 ends, the signal is seen before epoch 3 and last.pt (not due before
    # epoch 10) is written then, with best.pt waiting since epoch 1 or 2
    out = tmp_path / "end"
    writes.clear()
    _signal_at_step(monkeypatch, signal.SIGTERM, 6)
    with pytest.raises(Preempted, match="epoch 3 step 0/3; last.pt written"):
        train_cell(p, data_dir, split, out, checkpoint_every_epochs=10)
    monkeypatch.undo()
    assert _last_epochs(writes) == [2] and writes[0][0] == "best.pt"
    ckpt = _ckpt(out)
    assert "partial" not in ckpt and len(ckpt["history"]) == 2
    assert _ckpt(out, "best.pt")["epoch"] == ckpt["best"]["epoch"]
    train_cell(p, data_dir, split, out, checkpoint_every_epochs=10)
    _assert_same_outputs(whole, out)

    # inside epoch 3 (after its step 2): a mid-epoch last.pt, and the pending best.pt before it
    out = tmp_path / "mid"
    _signal_at_step(monkeypatch, signal.SIGUSR1, 8)
    with pytest.raises(Preempted, match="epoch 3 step 2/3; last.pt written"):
        train_cell(p, data_dir, split, out, checkpoint_every_epochs=0)
    monkeypatch.undo()
    ckpt = _ckpt(out)
    assert ckpt["partial"]["epoch"] == 3 and len(ckpt["history"]) == 2
    assert _ckpt(out, "best.pt")["epoch"] == ckpt["best"]["epoch"]
    train_cell(p, data_dir, split, out, checkpoint_every_epochs=0)
    _assert_same_outputs(whole, out)
    assert _hist(out) == _hist(whole) and sentinel == []


def test_a_signal_while_the_data_load_writes_nothing(data, tmp_path, monkeypatch, sentinel):
    data_dir, split = data
    _signal_after_data_load(monkeypatch)
    with pytest.raises(Preempted, match="nothing trained yet"):
        train_cell(_params(epochs=3), data_dir, split, tmp_path / "c", checkpoint_every_epochs=2)
    assert not (tmp_path / "c" / "last.pt").exists() and not (tmp_path / "c" / "best.pt").exists()


# ------------------------------------------------------------------------------------------ config → job
def test_bad_values_are_config_errors():
    for bad in ({"epochs": -1}, {"epochs": 1.5}, {"epochs": True}, {"seconds": -1}, {"seconds": float("nan")}):
        with pytest.raises(ConfigError, match="resources.checkpoint_every"):
            CheckpointEvery(**bad)
    assert CheckpointEvery().due(1, 0.0) and not CheckpointEvery(0, 0).due(10**6, 1e9)
    assert CheckpointEvery(0, 60).due(0, 60.0) and not CheckpointEvery(0, 60).due(5, 59.9)
    # the default decided on the device: every epoch on the CPU; on a GPU by time (60 s), never by epoch count
    assert CheckpointEvery.for_device("cpu") == CheckpointEvery(1, 0)
    gpu = CheckpointEvery.for_device("cuda")
    assert gpu == CheckpointEvery(0, 60) and not gpu.due(1000, 59.0) and gpu.due(1, 60.0)
    assert (
        CheckpointEvery(3, 600).describe() == "every 3 epochs or every 600 s,"
        and CheckpointEvery(0).describe() == "only"
    )


def test_job_passes_the_setting_to_train_cell(tmp_path, monkeypatch):
    got = {}
    monkeypatch.setattr(loop, "train_cell", lambda *a, **k: got.update(k) or "metrics")
    common = dict(data_dir=tmp_path, split_path=tmp_path / "s.json", out_dir=tmp_path / "c")
    assert run_train_job(_params(), **common) == "metrics"
    assert (got["checkpoint_every_epochs"], got["checkpoint_every_s"]) == (1, 0)
    run_train_job(_params(), **common, checkpoint_every_epochs=5, checkpoint_every_s=600)
    assert (got["checkpoint_every_epochs"], got["checkpoint_every_s"]) == (5, 600)
    assert got["checkpoint_auto"] is False
    run_train_job(_params(), **common, checkpoint_auto=True)  # the config's default reaches train_cell
    assert got["checkpoint_auto"] is True


def test_config_keys_reach_the_rule_as_resources_and_leave_cell_ids_alone():
    default = sc.load_config(ROOT / "config" / "config.yaml")
    res = ResourceConfig.from_config(default)
    assert (res.checkpoint_every_epochs, res.checkpoint_every_s) == (None, None)  # unset: the device decides
    got = res.execution_resources()
    assert (got["checkpoint_auto"], got["checkpoint_every_epochs"], got["checkpoint_every_s"]) == (1, 0, 0)
    every = {"resources": {"checkpoint_every_epochs": 5, "checkpoint_every_s": 600}}
    cfg = sc.load_config(ROOT / "config" / "config.yaml", every)
    assert (ResourceConfig.from_config(cfg).checkpoint_every_s, cfg["resources"]["train_threads"]) == (600, 1)
    got = ResourceConfig.from_config(cfg).execution_resources()
    assert (got["checkpoint_auto"], got["checkpoint_every_epochs"], got["checkpoint_every_s"]) == (0, 5, 600)
    # one key set: the other one is off, not the device's choice ("at most every 600 s", as written)
    only_s = sc.load_config(ROOT / "config" / "config.yaml", {"resources": {"checkpoint_every_s": 600}})
    got = ResourceConfig.from_config(only_s).execution_resources()
    assert (got["checkpoint_auto"], got["checkpoint_every_epochs"], got["checkpoint_every_s"]) == (0, 0, 600)
    assert sorted(build_plan(cfg).cells) == sorted(build_plan(default).cells)
    for bad in ({"checkpoint_every_epochs": -1}, {"checkpoint_every_s": 1.5}, {"checkpoint_every_epochs": "3"}):
        with pytest.raises(ConfigError, match="resources.checkpoint_every"):
            sc.load_config(ROOT / "config" / "config.yaml", {"resources": bad})
    # resources, not params: Snakemake reruns a job whose params change, and this changes no result. The
    # execution settings reach the train and train_rung rules whole (EXECUTION_RESOURCES) and the scripts pass
    # them on whole (execution_settings), so a new one touches no script.
    for key in ("checkpoint_every_epochs", "checkpoint_every_s", "checkpoint_auto", "worker", "worker_idle_s"):
        assert key in EXECUTION_SETTINGS
    train = (ROOT / "rules" / "train.smk").read_text()  # + what every training rule shares (TRAIN_*)
    shared = {
        n: re.search(rf"\n{n} = dict\(\n(.*?)\n\)", train, re.S).group(1) for n in ("TRAIN_RESOURCES", "TRAIN_PARAMS")
    }
    for rules, rule in (("train.smk", "train"), ("prune.smk", "train_rung")):
        text = (ROOT / "rules" / rules).read_text()
        body = text[text.index(f"rule {rule}:") :]
        resources = re.search(r"\n    resources:\n(.*?)\n    \w+:", body, re.S).group(1)
        params = re.search(r"\n    params:\n(.*?)\n    \w+:", body, re.S).group(1)
        resources = resources.replace("**TRAIN_RESOURCES", shared["TRAIN_RESOURCES"])
        params = params.replace("**TRAIN_PARAMS", shared["TRAIN_PARAMS"])
        assert "**EXECUTION_RESOURCES" in resources and "EXECUTION" not in params and "checkpoint" not in params
    for script in ("train.py", "train_rung.py"):
        assert "execution_settings(smk.resources)" in (ROOT / "workflow" / "scripts" / script).read_text()
    got = execution_settings(SimpleNamespace(checkpoint_every_epochs=3, checkpoint_every_s=0, worker=1, other=5))
    assert got == {"checkpoint_every_epochs": 3, "checkpoint_every_s": 0, "worker": True}
