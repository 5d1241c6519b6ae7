"""Checkpoints that cannot poison a cell (segsweep.training.checkpoint): durable writes with a SHA-256
sidecar, verified loads that name the file, and a truncated or bit-flipped best.pt / last.pt that the
training loop rebuilds or ignores, to the numbers of an untouched run, never a `failed` cell. CPU, one
thread, the tiny data set of tests/test_train.py."""

import logging
import os

import numpy as np
import pytest
import torch
from test_train import _params, _read_csv, _strip_times, _write_dataset

from segsweep import io
from segsweep.errors import DataError
from segsweep.training import checkpoint
from segsweep.training.job import run_train_job
from segsweep.training.loop import train_cell

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _flip_bit(path):
    # a byte in the middle: inside a tensor's stored data, where torch.load itself notices nothing
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


CORRUPTIONS = {"truncated": _truncate, "bit-flipped": _flip_bit}


# ------------------------------------------------------------------------------------------- the module
def test_save_writes_a_sidecar_and_load_round_trips(tmp_path):
    path = tmp_path / "best.pt"
    checkpoint.save({"epoch": 3, "model": {"w": torch.arange(4.0)}}, path)
    digest = io.sha256_file(path)
    assert checkpoint.sidecar(path).read_text() == f"{digest}  best.pt\n"
    got = checkpoint.load(path)
    assert got["epoch"] == 3 and torch.equal(got["model"]["w"], torch.arange(4.0))
    assert {p.name for p in tmp_path.iterdir()} == {"best.pt", "best.pt.sha256"}  # no temporary file left


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_file_is_refused_naming_it(tmp_path, how):
    path = tmp_path / "best.pt"
    checkpoint.save({"epoch": 1, "model": {"w": torch.randn(256)}}, path)
    CORRUPTIONS[how](path)
    with pytest.raises(checkpoint.CorruptCheckpoint, match=r"best\.pt") as err:
        checkpoint.load(path)
    assert isinstance(err.value, DataError) and err.value.path == path
    assert str(path) in str(err.value) and "SHA-256" in str(err.value)


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(checkpoint.CorruptCheckpoint, match="not found") as err:
        checkpoint.load(tmp_path / "cell" / "best.pt")
    assert str(tmp_path / "cell" / "best.pt") in str(err.value)


def test_without_a_sidecar_torch_load_decides(tmp_path):
    """A best.pt written by an older segsweep (no sidecar): read as before; a truncated one is refused."""
    path = tmp_path / "best.pt"
    torch.save({"epoch": 2, "model": {"w": torch.randn(256)}}, path)
    assert checkpoint.load(path)["epoch"] == 2
    _truncate(path)
    with pytest.raises(checkpoint.CorruptCheckpoint, match="cannot be read as a checkpoint") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def test_a_write_cut_before_the_rename_leaves_the_old_file_valid(tmp_path, monkeypatch):
    """The sidecar is written before the rename and lists the old digest too: a job that dies between the
    two leaves a pair that still verifies (the old content)."""
    path = tmp_path / "last.pt"
    checkpoint.save({"epoch": 1}, path)

    replace = os.replace

    def dies_at_the_checkpoint(src, dst):  # the sidecar's own rename goes through
        if str(dst) == str(path):
            raise OSError("killed")
        replace(src, dst)

    monkeypatch.setattr(io.os, "replace", dies_at_the_checkpoint)
    with pytest.raises(OSError, match="killed"):
        checkpoint.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert len(checkpoint.sidecar(path).read_text().splitlines()) == 2  # the new digest and the old
    assert checkpoint.load(path)["epoch"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "last.pt.sha256"}
    for epoch in (3, 4, 5, 6):  # later saves keep the list short, the file's own digest always in it
        checkpoint.save({"epoch": epoch}, path)
        assert checkpoint.load(path)["epoch"] == epoch and len(checkpoint.sidecar(path).read_text().splitlines()) <= 4


# ------------------------------------------------------------------------------------ in the training loop
def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_model(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """An untouched run: its metrics, history and best.pt. Early stopping, so the best epoch is not the last
    (best.pt cannot be copied from last.pt's model)."""
    data_dir, split = data
    out = tmp_path_factory.mktemp("finished") / "cell"
    p = _params(epochs=12, patience=2, dropout=0.1, augment={"flip": True})
    m = train_cell(p, data_dir, split, out)
    assert m.status == "ok" and m.best_epoch < m.epochs_run
    return p, out, m


def _copy_cell(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_best_pt_of_a_finished_cell_is_rebuilt_not_failed(data, finished, tmp_path, how, caplog):
    """The issue's case: a finished cell's best.pt damaged, then a rerun (e.g. an `evaluation` change):
    no epoch is trained again for the cell's numbers; best.pt is rebuilt to the same weights."""
    data_dir, split = data
    p, src, whole = finished
    out = tmp_path / "cell"
    _copy_cell(src, out)
    (out / "metrics.json").unlink()
    CORRUPTIONS[how](out / "best.pt")
    with caplog.at_level(logging.INFO):
        again = train_cell(p, data_dir, split, out, on_epoch=lambda r: pytest.fail("retrained an epoch"))
    assert again.status == "ok"
    assert _strip_times(again) == _strip_times(whole)
    assert _same_model(_weights(out / "best.pt")["model"], _weights(src / "best.pt")["model"])
    assert checkpoint.load(out / "best.pt")["epoch"] == whole.best_epoch
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(out / "best.pt") in w and "rebuilding" in w for w in warned), warned


def test_corrupt_best_pt_as_the_last_attempt_of_a_job_is_not_a_failed_cell(data, finished, tmp_path):
    data_dir, split = data
    p, src, whole = finished
    out = tmp_path / "cell"
    _copy_cell(src, out)
    (out / "metrics.json").unlink()
    _truncate(out / "best.pt")
    m = run_train_job(p, data_dir=data_dir, split_path=split, out_dir=out, attempt=1, max_attempts=1)
    assert m.status == "ok" and m.best_val_dice == whole.best_val_dice


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_best_pt_of_an_unfinished_cell_resumes_from_last_pt(data, finished, tmp_path, how, caplog):
    data_dir, split = data
    p, _, whole = finished

    class Killed(Exception):
        pass

    def kill_at(epoch):
        def on_epoch(row):
            if row["epoch"] == epoch:
                raise Killed

        return on_epoch

    out = tmp_path / "cell"
    # killed right after the best epoch: last.pt's best is that epoch, and no later epoch rewrites best.pt
    with pytest.raises(Killed):
        train_cell(p, data_dir, split, out, on_epoch=kill_at(whole.best_epoch))
    CORRUPTIONS[how](out / "best.pt")
    seen = []
    with caplog.at_level(logging.WARNING):
        resumed = train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == list(range(whole.best_epoch + 1, whole.epochs_run + 1))  # resumed, not restarted
    assert _strip_times(resumed) == _strip_times(whole)
    hist = [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(out / "history.csv")]
    ref = [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(finished[1] / "history.csv")]
    assert hist == ref
    with np.load(out / "predictions.npz") as z1, np.load(finished[1] / "predictions.npz") as z2:
        assert all(np.array_equal(z1[k], z2[k]) for k in z1.files)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{out / 'best.pt'}" in warned and "resuming from" in warned


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_last_pt_starts_afresh_naming_the_file(data, tmp_path, how, caplog):
    data_dir, split = data
    p = _params(epochs=2)
    out = tmp_path / "cell"
    first = train_cell(p, data_dir, split, out)
    (out / "metrics.json").unlink()
    CORRUPTIONS[how](out / "last.pt")
    seen = []
    with caplog.at_level(logging.WARNING):
        again = train_cell(p, data_dir, split, out, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2] and _strip_times(again) == _strip_times(first)
    assert any(str(out / "last.pt") in r.getMessage() and "starting afresh" in r.getMessage() for r in caplog.records)


def test_init_from_a_corrupt_best_pt_names_the_file(data, finished, tmp_path):
    data_dir, split = data
    p, src, whole = finished
    cells = tmp_path / "cells"
    _copy_cell(src, cells / "aaaaaaaaaaaa")
    _flip_bit(cells / "aaaaaaaaaaaa" / "best.pt")
    child = _params(epochs=1, init_from={"cell": "aaaaaaaaaaaa"})
    with pytest.raises(DataError, match=str(cells / "aaaaaaaaaaaa" / "best.pt")):
        train_cell(child, data_dir, split, cells / "bbbbbbbbbbbb")
    assert not (cells / "bbbbbbbbbbbb" / "metrics.json").exists()
