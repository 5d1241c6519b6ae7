"""Checkpoints written off the training thread (`checkpoint.Writer`) and a final evaluation that lets the
device go before it scores (`final_evaluation`): the same files and numbers as writing and scoring in the
training thread. CPU, one thread, a tiny phantom with native arrays and a test set (issue 21, part 4)."""

import logging

import numpy as np
import pytest
import torch
from test_preempt import RICH, _assert_same_outputs

from segsweep.data import ingest, phantom
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
from segsweep.data.splits import write_split
from segsweep.errors import DataError
from segsweep.plan.config import cell_params
from segsweep.training import checkpoint
from segsweep.training import evaluate as ev
from segsweep.training.loop import train_cell

torch.set_num_threads(1)

PHANTOM = PhantomConfig(patients=6, slices=3, rows=64, cols=56, no_contour_fraction=0.0)
PREP = PreprocessConfig(size=(32, 32), tile_grid=(4, 4))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bg")
    phantom.generate(PHANTOM, root / "raw")
    ingest.run(DataConfig("phantom", str(root / "raw"), "endo", False, "k", PHANTOM), PREP, root / "data")
    split = root / "seed0.json"
    write_split(root / "data" / "dataset.json", split, 0, 0.34, None, 0.17)
    return root / "data", split


def _params(**kw):
    return cell_params({"depth": 2, "base_width": 4, "batch_size": 2, "lr": 0.01, **RICH, "epochs": 4, **kw})


def test_background_writes_give_the_files_of_synchronous_ones(data, tmp_path, monkeypatch):
    data_dir, split = data
    monkeypatch.setattr(checkpoint, "BACKGROUND_WRITES", False)
    train_cell(_params(), data_dir, split, tmp_path / "sync")
    monkeypatch.setattr(checkpoint, "BACKGROUND_WRITES", True)
    train_cell(_params(), data_dir, split, tmp_path / "bg")
    _assert_same_outputs(tmp_path / "sync", tmp_path / "bg")
    assert (tmp_path / "bg" / "native_predictions.npz").exists()
    with (
        np.load(tmp_path / "sync" / "native_predictions.npz") as a,
        np.load(tmp_path / "bg" / "native_predictions.npz") as b,
    ):
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    a, b = (checkpoint.load(tmp_path / d / "last.pt") for d in ("sync", "bg"))
    # the whole resume state, not only the weights: optimizer moments, generators, history, best epoch
    for key in ("optimizer", "rng", "schedule"):
        assert _equal(a[key], b[key]), key
    timeless = [[{k: v for k, v in row.items() if k != "epoch_s"} for row in c["history"]] for c in (a, b)]
    assert timeless[0] == timeless[1] and a["best"] == b["best"] and a["epoch"] == b["epoch"] == 4


def _equal(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(_equal(u, v) for u, v in zip(x, y, strict=True))
    return x == y


def test_the_snapshot_is_what_is_written_whatever_training_does_next(tmp_path):
    weights, history = torch.zeros(1000), [{"epoch": 1}]
    with checkpoint.Writer(background=True) as writer:
        (written,) = writer.submit([({"model": {"w": weights}, "history": history, "epoch": 1}, tmp_path / "last.pt")])
        weights += 1  # the next optimizer step, in place, while the file is written
        history.append({"epoch": 2})
    got = checkpoint.load(tmp_path / "last.pt")
    assert torch.equal(got["model"]["w"], torch.zeros(1000)) and got["history"] == [{"epoch": 1}]
    assert torch.equal(written["model"]["w"], torch.zeros(1000))  # the snapshot, not the live tensor


def test_writes_stay_in_order_and_a_failed_write_raises_in_the_training_thread(tmp_path, caplog):
    with checkpoint.Writer(background=True) as writer:
        for epoch in (1, 2, 3):  # each submission waits for the one before
            writer.submit([({"epoch": epoch}, tmp_path / "best.pt"), ({"epoch": epoch}, tmp_path / "last.pt")])
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == checkpoint.load(tmp_path / "best.pt")["epoch"] == 3
    (tmp_path / "a-file").write_text("")  # a folder that cannot be: the write fails
    bad = tmp_path / "a-file" / "last.pt"
    writer = checkpoint.Writer(background=True)
    writer.submit([({"epoch": 1}, bad)])
    with pytest.raises(OSError):
        writer.wait()
    # an exception already on its way out wins; the failed write is logged
    with (
        pytest.raises(DataError, match="the cell's own error"),
        caplog.at_level(logging.ERROR),
        checkpoint.Writer(background=True, log=logging.getLogger("t")) as writer,
    ):
        writer.submit([({"epoch": 1}, bad)])
        raise DataError("the cell's own error")
    assert "writing a checkpoint failed as well" in caplog.text


def test_logits_computed_up_front_score_as_when_asked_for_while_scoring(data):
    data_dir, _ = data
    pids = [p.stem for p in sorted(data_dir.glob("*.npz"))]
    images = ev.load_images(data_dir, pids + pids)  # each twice: more than one chunk
    assert len(images) > ev.CHUNK

    def logits(x):
        return ((x - 0.4) * 8).astype(np.float32)

    cfg = ev.EvaluationConfig.from_mapping(None)
    direct = ev.evaluate_set("val", images, logits, cfg)
    replayed = ev.evaluate_set("val", images, ev.replay(ev.network_logits(images, logits)), cfg)
    assert replayed.net == direct.net and replayed.summary == direct.summary
    assert all(np.array_equal(a, b) for a, b in zip(replayed.native_label, direct.native_label, strict=True))
    with pytest.raises(RuntimeError, match="precomputed logits for"):
        ev.replay([np.zeros((3, 32, 32), np.float32)])(np.zeros((2, 32, 32), np.float32))
