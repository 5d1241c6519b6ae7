"""benchmarks/bench_gpu.py: history.csv read by column name, the real grid's fractions, and (slow) its --dry run."""

from __future__ import annotations

import csv
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(BENCH))


def _history(path: Path, columns, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        w.writerows(rows)
    return path


def test_epoch_times_by_name_not_position(bench_gpu, tmp_path):
    from segsweep.training.loop import HISTORY_COLUMNS

    cols = list(HISTORY_COLUMNS)
    row = {c: 0.001 for c in cols}  # lr, lr_encoder, ...: all 0.001; only epoch_s differs
    rows = [[{**row, "epoch": e, "epoch_s": 1.5 * e}[c] for c in cols] for e in (1, 2)]
    assert bench_gpu.epoch_times(_history(tmp_path / "h.csv", cols, rows)) == [1.5, 3.0]
    # the column moved: still found by name
    moved = ["epoch_s"] + [c for c in cols if c != "epoch_s"]
    rows = [[{**row, "epoch": e, "epoch_s": 2.0}[c] for c in moved] for e in (1, 2)]
    assert bench_gpu.epoch_times(_history(tmp_path / "m.csv", moved, rows)) == [2.0, 2.0]


def test_epoch_times_fails_loudly(bench_gpu, tmp_path):
    cols = ["epoch", "lr", "train_loss", "lr_encoder"]
    with pytest.raises(RuntimeError, match="epoch_s"):
        bench_gpu.epoch_times(_history(tmp_path / "h.csv", cols, [[1, 0.001, 0.5, 0.001]]))
    with pytest.raises(RuntimeError, match="not positive"):
        bench_gpu.epoch_times(_history(tmp_path / "z.csv", ["epoch", "epoch_s"], [[1, 0.0]]))


def test_grid_is_the_study_with_its_fractions(bench_gpu):
    study = bench_gpu.load_study()
    cells = bench_gpu.grid_order(study)
    axes = study["axes"]
    assert len(cells) == len(axes["optimizer"]) * len(axes["fraction"]) * len(axes["lr"]) == 75
    assert {(c["optimizer"], c["lr"], c["fraction"]) for c in cells} == {
        (o, lr, f) for o in axes["optimizer"] for lr in axes["lr"] for f in axes["fraction"]
    }
    for i in range(0, len(cells), 5):  # every 5 consecutive cells: every fraction, optimizer and lr
        block = cells[i : i + 5]
        assert sorted(c["fraction"] for c in block) == sorted(axes["fraction"])
        assert {c["optimizer"] for c in block} == set(axes["optimizer"])
        assert sorted(c["lr"] for c in block) == sorted(axes["lr"])
    assert all(c["epochs"] == study["base"]["epochs"] for c in cells)
    assert sorted(c["fraction"] for c in bench_gpu.grid(dry=True)) == sorted(axes["fraction"])


@pytest.mark.slow
def test_dry_run(bench_gpu, tmp_path):
    r = bench_gpu.main(["--dry", "--out", str(tmp_path / "gpu_dry.json")])
    assert (tmp_path / "gpu_dry.json").exists()
    p = r["precision"]
    n_train = {float(f): n for f, n in r["setup"]["n_train_by_fraction"].items()}
    assert len(set(n_train.values())) == len(n_train)  # the fractions train different numbers of images
    for row in p["cells"]:
        assert row["n_train"] == n_train[row["fraction"]]
        assert row["images_per_s"] == pytest.approx(row["n_train"] * row["epochs_run"] / row["train_epochs_s"], 0.01)
    assert p["speedup_amp_bf16_cl"] == pytest.approx(p["images_per_s"]["amp_bf16_cl"] / p["images_per_s"]["fp32"], 0.01)
    assert p["speedup_amp_bf16_cl"] != 1.0
    runs = r["concurrency"]["runs"]
    assert [x["k"] for x in runs] == [1, 2]
    for x in runs:
        assert x["cells"] == len(r["concurrency"]["queue"])
        assert x["cells_per_hour"] == pytest.approx(x["cells"] / x["wall_s"] * 3600, 0.01)
    assert {c["thread"] for c in runs[1]["cells_detail"]} == {0, 1}
