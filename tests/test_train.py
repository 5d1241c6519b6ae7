"""train_cell end to end on a tiny synthetic data set (bright discs on noise, 32×32): learning, output
files, determinism, resume equivalence, divergence and early stopping. CPU, one thread, seconds."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from segsweep.errors import ConfigError, DataError, SegsweepError
from segsweep.plan.config import cell_params
from segsweep.training.evaluate import NATIVE_IMAGE_COLUMNS, PER_PATIENT_COLUMNS
from segsweep.training.final_evaluation import PER_IMAGE_COLUMNS
from segsweep.training.loop import HISTORY_COLUMNS, train_cell
from segsweep.training.record import CellMetrics

torch.set_num_threads(1)

PATIENTS = ["p0000000a", "p0000000b", "p0000000c", "p0000000d"]
VAL_KEYS = tuple(
    f"val_{k}"
    for k in (
        "dice_patient",
        "dice",
        "iou_patient",
        "iou",
        "hd95_mm_patient",
        "hd95_mm",
        "nsd_patient",
        "nsd",
        "n_slices",
        "n_patients",
        "n_excluded_both_empty",
        "n_one_empty",
    )
)


def _write_dataset(root, n_per_patient=4, size=32, nan_in=None, seed=0):
    """4 patients × 4 images: a disc (random centre/radius) brighter than the noisy background."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for pid in PATIENTS:
        images, masks = [], []
        for _ in range(n_per_patient):
            cy, cx = rng.uniform(10, size - 10, 2)
            r = rng.uniform(4, 8)
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            img = np.clip(0.25 + 0.5 * m + rng.normal(0, 0.08, m.shape), 0, 1).astype(np.float32)
            images.append(img)
            masks.append(m)
        image = np.stack(images)
        raw = (image * 255).astype(np.uint8)
        if pid == nan_in:
            image[0, 5, 5] = np.nan
        np.savez(
            root / f"{pid}.npz",
            image=image,
            raw=raw,
            mask=np.stack(masks),
            spacing=np.full((n_per_patient, 2), 1.25, np.float32),
            slice=np.arange(n_per_patient, dtype=np.int32),
        )
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "source": "phantom",
                "layout": "rvsc",
                "target": "endo",
                "n_classes": 1,
                "size": [size, size],
                "patients": [{"id": p, "n_images": n_per_patient} for p in PATIENTS],
                "n_images": n_per_patient * len(PATIENTS),
                "qc_counts": {},
            }
        )
    )
    split = root / "split.json"
    split.write_text(
        json.dumps(
            {
                "seed": 0,
                "val": [PATIENTS[3]],
                "pool": PATIENTS[:3],
                "folds": [{"val": [PATIENTS[0]], "pool": PATIENTS[1:]}],
            }
        )
    )
    return root, split


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("data"))


def _params(**kw):
    base = {
        "depth": 2,
        "base_width": 4,
        "batch_size": 4,
        "epochs": 4,
        "lr": 0.01,
        "optimizer": "adam",
        "loss": "dice + bce",
    }
    base.update(kw)
    return cell_params(base)


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _strip_times(metrics):
    """Metrics without what legitimately differs between two identical runs: time and folder name."""
    return {k: v for k, v in metrics.to_json().items() if k not in ("wall_s", "cell")}


def test_learns_and_writes_every_output(data, tmp_path):
    data_dir, split = data
    out = tmp_path / "cell"
    m = train_cell(_params(epochs=12), data_dir, split, out)
    assert m.status == "ok" and m.reason is None
    assert m.best_val_dice > 0.5
    assert m.n_train == 12 and m.n_val == 4 and m.epochs_run == 12 and m.device == "cpu"
    assert isinstance(m, CellMetrics) and CellMetrics.read(out / "metrics.json") == m
    assert json.loads((out / "metrics.json").read_text()) == m.to_json()
    assert set(m.to_json()) == {
        "cell",
        "status",
        "reason",
        "best_val_dice",
        "best_epoch",
        "final_val_dice",
        "best_val_iou",
        "best_val_hd95_mm",
        "epochs_run",
        "wall_s",
        "device",
        "hardware",
        "n_train",
        "n_val",
        "params",
        "execution",
        *VAL_KEYS,
        "test",
        "evaluation",
        "val_collapse",
        "val_per_class",
    }
    assert m.val_per_class is None  # a binary target: the val_* fields are its only class
    assert m.val_collapse["foreground"]["n_slices"] == 4 and 0.5 < m.val_collapse["foreground"]["area_ratio"] < 2
    assert m.execution == {"amp": False, "channels_last": False, "threads": 1, "device_requested": "auto"}
    assert m.params == _params(epochs=12).to_dict()
    hist = _read_csv(out / "history.csv")
    assert tuple(hist[0]) == HISTORY_COLUMNS and [int(r["epoch"]) for r in hist] == list(range(1, 13))
    assert float(hist[0]["val_dice"]) < float(hist[m.best_epoch - 1]["val_dice"])  # it improved
    assert float(hist[-1]["train_loss"]) < float(hist[0]["train_loss"])
    # the final evaluation restores best.pt: its Dice is the best epoch's, not the last one's
    assert m.best_val_dice == pytest.approx(float(hist[m.best_epoch - 1]["val_dice"]), abs=1e-6)
    assert m.final_val_dice == pytest.approx(float(hist[-1]["val_dice"]))
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == m.best_epoch
    rows = _read_csv(out / "per_image.csv")
    assert tuple(rows[0]) == PER_IMAGE_COLUMNS + NATIVE_IMAGE_COLUMNS and len(rows) == 4
    assert {r["set"] for r in rows} == {"val"}
    # no native arrays in these patient files (as ingested before they existed): evaluated on the network grid
    assert m.evaluation == {"nsd_tolerance_mm": 2.0, "hd95_cap_mm": None, "grid": "network"} and m.test is None
    assert m.val_dice == pytest.approx(np.mean([float(r["native_dice"]) for r in rows]))
    assert m.val_n_slices == 4 and m.val_n_patients == 1 and m.val_n_excluded_both_empty == 0
    assert {r["patient"] for r in rows} == {PATIENTS[3]} and [int(r["slice"]) for r in rows] == [0, 1, 2, 3]
    assert np.mean([float(r["dice"]) for r in rows]) == pytest.approx(m.best_val_dice, abs=1e-6)
    hd = [float(r["hd95_mm"]) for r in rows if r["hd95_mm"]]
    assert m.best_val_hd95_mm == pytest.approx(np.mean(hd)) and all(h >= 0 for h in hd)
    with np.load(out / "predictions.npz") as z:
        assert z["pred"].shape == z["mask"].shape == z["image"].shape == (4, 32, 32)
        assert z["pred"].dtype == np.uint8 and set(np.unique(z["pred"])) <= {0, 1}
        assert list(z["patient"]) == [PATIENTS[3]] * 4 and list(z["slice"]) == [0, 1, 2, 3]
        assert sorted(z.files) == ["image", "mask", "patient", "pred", "slice"]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert len(ckpt["history"]) == 12 and ckpt["schedule"]["step_count"] == 12 * 3


def test_same_seed_same_numbers_other_seed_other_numbers(data, tmp_path):
    data_dir, split = data
    kw = dict(
        epochs=2,
        augment={"flip": True, "rotate_deg": 10, "scale": 0.1, "intensity": 0.1},
        dropout=0.2,
        dropout_mode="spatial",
    )
    a = train_cell(_params(**kw), data_dir, split, tmp_path / "a")
    b = train_cell(_params(**kw), data_dir, split, tmp_path / "b")
    train_cell(_params(seed=1, **kw), data_dir, split, tmp_path / "c")
    ha, hb, hc = (torch.load(tmp_path / x / "last.pt", weights_only=True)["history"] for x in "abc")
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_s"} for r in h]  # noqa: E731
    assert strip(ha) == strip(hb) and _strip_times(a) == _strip_times(b)
    assert strip(ha) != strip(hc)
    wa = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _Killed(Exception):
    pass


def test_resume_after_interruption_gives_identical_results(data, tmp_path):
    data_dir, split = data
    # per-step schedule, augmentation, dropout and a penalty: every piece of state must survive the restart
    p = _params(
        epochs=4,
        schedule="cosine",
        augment={"flip": True, "rotate_deg": 15, "intensity": 0.1},
        dropout=0.1,
        regularizer="l2",
        reg_lambda=1e-4,
        grad_clip=1.0,
        optimizer="sgd",
        lr=0.05,
    )
    whole = train_cell(p, data_dir, split, tmp_path / "whole")

    def kill_after_two(row):
        if row["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_cell(p, data_dir, split, tmp_path / "split", on_epoch=kill_after_two)
    assert not (tmp_path / "split" / "metrics.json").exists()
    assert len(_read_csv(tmp_path / "split" / "history.csv")) == 2
    seen = []
    resumed = train_cell(p, data_dir, split, tmp_path / "split", on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [3, 4]  # only the missing epochs were trained
    assert _strip_times(resumed) == _strip_times(whole)
    h1 = [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(tmp_path / "whole" / "history.csv")]
    h2 = [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(tmp_path / "split" / "history.csv")]
    assert h1 == h2
    for name in ("predictions.npz",):
        with np.load(tmp_path / "whole" / name) as z1, np.load(tmp_path / "split" / name) as z2:
            assert all(np.array_equal(z1[k], z2[k]) for k in z1.files)
    # a finished run's last.pt makes a rerun skip training and reproduce the evaluation
    again = train_cell(p, data_dir, split, tmp_path / "split", on_epoch=lambda r: pytest.fail("retrained"))
    assert _strip_times(again) == _strip_times(resumed)


def test_checkpoint_of_other_parameters_is_not_resumed(data, tmp_path):
    data_dir, split = data
    train_cell(_params(epochs=1), data_dir, split, tmp_path / "x")
    seen = []
    m = train_cell(
        _params(epochs=2, lr=0.02), data_dir, split, tmp_path / "x", on_epoch=lambda r: seen.append(r["epoch"])
    )
    assert seen == [1, 2] and m.epochs_run == 2


def test_nan_in_the_data_diverges_cleanly(tmp_path):
    data_dir, split = _write_dataset(tmp_path / "d", nan_in=PATIENTS[0])
    out = tmp_path / "cell"
    m = train_cell(_params(epochs=5), data_dir, split, out)
    assert m.status == "diverged"
    assert m.epochs_run == 1 and "epoch 1" in m.reason and "nan" in m.reason
    assert m.best_val_dice is None and m.final_val_dice is None and m.best_val_iou is None
    assert m.best_epoch is None and m.best_val_hd95_mm is None
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"
    assert _read_csv(out / "per_image.csv") == []
    with np.load(out / "predictions.npz") as z:
        assert z["pred"].shape == (0, 32, 32)


def test_huge_learning_rate_diverges(data, tmp_path):
    data_dir, split = data
    # plain SGD at lr 1e6 without batch norm: the weights overflow to inf within the first epochs
    m = train_cell(
        _params(optimizer="sgd", lr=1e6, momentum=0.0, batch_norm=False, loss="bce", epochs=10),
        data_dir,
        split,
        tmp_path / "c",
    )
    assert m.status == "diverged" and m.epochs_run < 10
    assert m.best_val_dice is None and "non-finite" in m.reason


def test_early_stopping_stops_and_restores_the_best_epoch(data, tmp_path):
    data_dir, split = data
    # a learning rate too small to make progress: val Dice stalls and patience runs out
    m = train_cell(_params(epochs=40, lr=1e-6, patience=2), data_dir, split, tmp_path / "e")
    hist = _read_csv(tmp_path / "e" / "history.csv")
    dice = [float(r["val_dice"]) for r in hist]
    assert m.status == "ok" and m.epochs_run == len(hist) < 40
    assert m.reason.startswith("early stop after epoch")
    assert m.best_epoch == int(np.argmax(dice)) + 1
    assert m.epochs_run == m.best_epoch + 2  # exactly `patience` epochs without a strict gain
    assert m.best_val_dice == pytest.approx(max(dice), abs=1e-6)


def test_fold_fraction_and_three_channels(data, tmp_path):
    data_dir, split = data
    m = train_cell(_params(epochs=1, fold=0, fraction=0.34, in_channels=3), data_dir, split, tmp_path / "f")
    # fold 0: val = patient a, pool = [b, c, d]; fraction 0.34 → round(1.02) = 1 patient
    assert m.n_val == 4 and m.n_train == 4
    assert {r["patient"] for r in _read_csv(tmp_path / "f" / "per_image.csv")} == {PATIENTS[0]}


def test_user_errors_name_the_file(data, tmp_path):
    data_dir, split = data
    bad_split = tmp_path / "split.json"
    bad_split.write_text(json.dumps({"seed": 0, "val": ["p_missing"], "pool": PATIENTS[:2], "folds": []}))
    with pytest.raises(DataError, match="split.json"):
        train_cell(_params(epochs=1), data_dir, bad_split, tmp_path / "o")
    with pytest.raises(DataError, match="seed"):
        train_cell(_params(epochs=1, split_seed=3), data_dir, split, tmp_path / "o")
    with pytest.raises(DataError, match="dataset.json"):
        train_cell(_params(epochs=1), tmp_path / "nowhere", split, tmp_path / "o")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="resources.device"):
            train_cell(_params(epochs=1), data_dir, split, tmp_path / "o", device="cuda")


def test_history_values_are_finite_numbers(data, tmp_path):
    data_dir, split = data
    train_cell(
        _params(epochs=2, schedule={"name": "step", "gamma": 0.5, "step_epochs": 1}), data_dir, split, tmp_path / "h"
    )
    hist = _read_csv(tmp_path / "h" / "history.csv")
    assert [float(r["lr"]) for r in hist] == [0.01, 0.005]  # the LR of each epoch's first step
    assert all(math.isfinite(float(r[c])) for r in hist for c in HISTORY_COLUMNS)


def test_amp_and_channels_last_options_run(data, tmp_path):
    # GPU speed options; on the CPU they exercise the same code path (bf16 autocast, NHWC layout)
    data_dir, split = data
    m = train_cell(_params(epochs=2, in_channels=3), data_dir, split, tmp_path / "amp", amp=True, channels_last=True)
    # two epochs may leave a model that predicts every pixel: finished, with status collapsed (numbers kept)
    assert m.status in ("ok", "collapsed") and 0.0 <= m.best_val_dice <= 1.0
    assert m.params == _params(epochs=2, in_channels=3).to_dict()  # not part of the cell's parameters


def test_auto_speed_settings_are_off_on_the_cpu(data, tmp_path):
    """The config's default "auto" resolves on the training device (the CPU here: both off) and metrics.json
    records what ran; the numbers are those of an explicit false."""
    data_dir, split = data
    auto = train_cell(_params(epochs=1), data_dir, split, tmp_path / "a", amp="auto", channels_last="auto")
    off = train_cell(_params(epochs=1), data_dir, split, tmp_path / "o")
    assert (auto.execution["amp"], auto.execution["channels_last"]) == (False, False)
    assert (tmp_path / "a" / "history.csv").read_text().split("\n")[1].split(",")[:6] == (
        (tmp_path / "o" / "history.csv").read_text().split("\n")[1].split(",")[:6]
    )
    assert auto.best_val_dice == off.best_val_dice


def test_unreadable_checkpoint_starts_afresh(data, tmp_path):
    data_dir, split = data
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "last.pt").write_bytes(b"not a checkpoint")
    seen = []
    m = train_cell(_params(epochs=2), data_dir, split, tmp_path / "u", on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1, 2] and m.status == "ok"


# ------------------------------------------------------------------------------------ the job wrapper
def _job(data, out, **kw):
    from segsweep.training.job import run_train_job

    data_dir, split = data
    kw.setdefault("split_path", split)
    return run_train_job(_params(epochs=1), data_dir=data_dir, out_dir=out, **kw)


def test_user_error_fails_at_once_and_is_never_a_failed_cell(data, tmp_path, monkeypatch):
    from segsweep.training import loop
    from segsweep.training.job import USER_ERROR_MARKER

    out = tmp_path / "cell"
    bad_split = tmp_path / "missing_split.json"
    with pytest.raises(DataError, match="missing_split.json") as first:
        _job(data, out, split_path=bad_split, attempt=1, max_attempts=3)
    assert not (out / "metrics.json").exists()
    assert (out / USER_ERROR_MARKER).read_text() == f"{first.value}\n"
    # Snakemake's retries (the last one included) fail with the same message, without training
    monkeypatch.setattr(loop, "train_cell", lambda *a, **k: pytest.fail("a retry after a user error trained"))
    for attempt in (2, 3):
        with pytest.raises(SegsweepError) as again:
            _job(data, out, split_path=bad_split, attempt=attempt, max_attempts=3)
        assert str(again.value) == str(first.value)
    assert not (out / "metrics.json").exists()
    monkeypatch.undo()
    # a fresh invocation (attempt 1) after the fix drops the marker and trains
    m = _job(data, out, attempt=1, max_attempts=3)
    # one epoch: finished, possibly with a model that predicts nothing yet (collapsed), never failed
    assert m.status in ("ok", "collapsed") and not (out / USER_ERROR_MARKER).exists()


def test_runtime_failure_is_retried_then_recorded_as_failed(data, tmp_path, monkeypatch):
    from segsweep.analysis.runs import read_cell
    from segsweep.training import loop

    def crash(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(loop, "train_cell", crash)
    out = tmp_path / "c0ffee"
    with pytest.raises(RuntimeError, match="out of memory"):
        _job(data, out, attempt=1, max_attempts=2, device="cpu")
    assert not (out / "metrics.json").exists()
    m = _job(data, out, attempt=2, max_attempts=2, device="cpu")
    assert m.status == "failed" and m.reason == "RuntimeError: CUDA out of memory" and m.cell == "c0ffee"
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == m.to_json() and on_disk["params"] == _params(epochs=1).to_dict()
    assert {k for k, v in on_disk.items() if v is not None} == {
        "cell",
        "status",
        "reason",
        "wall_s",
        "device",
        "params",
    }
    row = read_cell("c0ffee", tmp_path)
    assert row["status"] == "failed" and row["reason"] == m.reason


def test_runner_turns_a_user_error_into_one_line(data, tmp_path, capsys):
    import logging
    from types import SimpleNamespace

    from segsweep import runner
    from segsweep.training.job import run_train_job

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    smk = SimpleNamespace(log=[str(tmp_path / "train.log")], rule="train")
    try:
        with pytest.raises(SystemExit) as exit_:
            runner.run(
                smk,
                run_train_job,
                _params(epochs=1),
                data_dir=data[0],
                split_path=tmp_path / "nope.json",
                out_dir=tmp_path / "cell",
                attempt=1,
                max_attempts=3,
            )
    finally:
        for h in root.handlers:  # runner.setup_logging replaced the root handlers: put pytest's back
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert exit_.value.code == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("segsweep: error:")]
    assert len(err) == 1 and "nope.json" in err[0]
    assert "Traceback" not in (tmp_path / "train.log").read_text()


# ------------------------------------------------------------------- final evaluation (native, test set)
NATIVE_PATIENTS = [f"p000000{i:02x}" for i in range(16, 21)]  # 5 patients: 3 pool, 1 val, 1 test


def _write_native_dataset(root, test_flip=False, seed=1):
    """5 patients × 4 images ingested as the pipeline does: native 64×56 discs (1 mm pixels), resize_pad to
    32×32, with the native arrays. ``test_flip`` changes the test patient's images and masks (only its)."""
    from segsweep.data import preprocess as pre
    from segsweep.data.ingest import write_npz

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    native = (64, 56)
    g = pre.plan(native, (32, 32), "resize_pad")
    yy, xx = np.mgrid[: native[0], : native[1]]
    for pid in NATIVE_PATIENTS:
        imgs, masks, nmasks = [], [], []
        for _ in range(4):
            cy, cx = rng.uniform(20, 44), rng.uniform(20, 36)
            r = rng.uniform(8, 15)
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
            if test_flip and pid == NATIVE_PATIENTS[-1]:
                m = np.ascontiguousarray(m[::-1, ::-1])
            img = np.clip(0.25 + 0.5 * m + rng.normal(0, 0.08, m.shape), 0, 1).astype(np.float32)
            imgs.append(pre.apply(g, img))
            masks.append(pre.apply(g, m, is_mask=True))
            nmasks.append(m)
        n = len(imgs)
        write_npz(
            root / f"{pid}.npz",
            {
                "image": np.stack(imgs),
                "raw": (np.stack(imgs) * 255).astype(np.uint8),
                "mask": np.stack(masks),
                "spacing": np.tile(np.array(g.factor, np.float32), (n, 1)),
                "slice": np.arange(n, dtype=np.int32),
                "native_mask": np.stack(nmasks),
                "native_shape": np.tile(np.array(native, np.int32), (n, 1)),
                "resized_shape": np.tile(np.array(g.resized, np.int32), (n, 1)),
                "native_spacing": np.ones((n, 2), np.float32),
            },
        )
    (root / "dataset.json").write_text(
        json.dumps({"n_classes": 2, "patients": [{"id": p, "n_images": 4} for p in NATIVE_PATIENTS]})
    )
    split = root / "split.json"
    split.write_text(
        json.dumps(
            {
                "seed": 0,
                "val_fraction": 0.2,
                "val": [NATIVE_PATIENTS[3]],
                "pool": NATIVE_PATIENTS[:3],
                "folds": [],
                "test_fraction": 0.2,
                "test": [NATIVE_PATIENTS[4]],
            }
        )
    )
    return root, split


def test_final_evaluation_at_native_resolution_with_a_test_set(tmp_path):
    data_dir, split = _write_native_dataset(tmp_path / "data")
    out = tmp_path / "cell"
    m = train_cell(_params(epochs=6), data_dir, split, out, evaluation={"nsd_tolerance_mm": 3.0})
    assert m.status == "ok" and m.n_train == 12 and m.n_val == 4
    assert m.evaluation == {"nsd_tolerance_mm": 3.0, "hd95_cap_mm": None, "grid": "native"}
    pp = _read_csv(out / "per_patient.csv")
    assert tuple(pp[0]) == PER_PATIENT_COLUMNS
    assert [(r["set"], r["patient"], r["n_slices"]) for r in pp] == [
        ("val", NATIVE_PATIENTS[3], "4"),
        ("test", NATIVE_PATIENTS[4], "4"),
    ]
    rows = _read_csv(out / "per_image.csv")
    assert [r["set"] for r in rows] == ["val"] * 4 + ["test"] * 4
    val_rows, test_rows = rows[:4], rows[4:]
    # the monitor's network-grid numbers stay what they were; the native ones are the new fields
    assert np.mean([float(r["dice"]) for r in val_rows]) == pytest.approx(m.best_val_dice, abs=1e-6)
    assert m.val_dice == pytest.approx(np.mean([float(r["native_dice"]) for r in val_rows]))
    assert m.val_nsd == pytest.approx(np.mean([float(r["native_nsd"]) for r in val_rows]))
    assert m.val_dice_patient == pytest.approx(float(pp[0]["dice"]))
    assert (m.val_n_slices, m.val_n_patients, m.val_n_excluded_both_empty) == (4, 1, 0)
    t = m.test
    assert set(t) >= {"dice", "dice_patient", "iou", "hd95_mm", "nsd", "n_slices", "n_patients", "n_one_empty"}
    assert (t["n_slices"], t["n_patients"], t["n_excluded_both_empty"]) == (4, 1, 0)
    assert t["dice"] == pytest.approx(np.mean([float(r["native_dice"]) for r in test_rows]))
    assert t["dice_patient"] == pytest.approx(float(pp[1]["dice"]))
    assert 0 <= t["nsd"] <= 1 and 0 <= t["dice"] <= 1 and t["hd95_mm"] >= 0
    # the model learned: native Dice close to the network-grid Dice
    assert m.val_dice > 0.5 and abs(m.val_dice - m.best_val_dice) < 0.1
    # predictions.npz keeps the validation images only
    with np.load(out / "predictions.npz") as z:
        assert list(z["patient"]) == [NATIVE_PATIENTS[3]] * 4


def test_test_patients_never_influence_training_or_validation(tmp_path):
    """Changing only the test patient's data changes the test numbers and nothing else."""
    runs = []
    for flip in (False, True):
        data_dir, split = _write_native_dataset(tmp_path / f"data{flip}", test_flip=flip)
        runs.append(train_cell(_params(epochs=6), data_dir, split, tmp_path / f"cell{flip}"))
    a, b = (_strip_times(r) for r in runs)
    assert a.pop("test") != b.pop("test")
    assert a == b
    hist = [
        [{k: v for k, v in r.items() if k != "epoch_s"} for r in _read_csv(tmp_path / f"cell{f}" / "history.csv")]
        for f in (False, True)
    ]
    assert hist[0] == hist[1]


def test_a_test_patient_in_training_is_refused(tmp_path):
    data_dir, split = _write_native_dataset(tmp_path / "data")
    s = json.loads(split.read_text())
    s["test"] = [NATIVE_PATIENTS[0]]
    split.write_text(json.dumps(s))
    with pytest.raises(DataError, match="test patients also used"):
        train_cell(_params(epochs=1), data_dir, split, tmp_path / "cell")


def test_new_evaluation_settings_reevaluate_without_training(tmp_path):
    """What a changed `evaluation` section does to a finished cell (the train rule reruns it): last.pt is
    complete, so no epoch runs again; only the final evaluation is redone with the new settings."""
    data_dir, split = _write_native_dataset(tmp_path / "data")
    out = tmp_path / "cell"
    first = train_cell(_params(epochs=2), data_dir, split, out)
    epochs = []
    again = train_cell(
        _params(epochs=2), data_dir, split, out, evaluation={"nsd_tolerance_mm": 6.0}, on_epoch=epochs.append
    )
    assert epochs == [] and again.best_epoch == first.best_epoch and again.best_val_dice == first.best_val_dice
    assert again.evaluation["nsd_tolerance_mm"] == 6.0 and again.val_dice == first.val_dice
    assert again.val_nsd >= first.val_nsd and again.test["nsd"] >= first.test["nsd"]
