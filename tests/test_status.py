"""`python -m segsweep.plan.status` (segsweep.plan.status): per study, cells done / running / pending / failed, the
running cells' epoch and an ETA from measured epoch times; on files written by hand and on a running study."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from segsweep.plan.status import cell_progress, format_duration, render, study_progress

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
LOG = """2026-12-07 06:29:57,653 INFO segsweep: rule train: starting
2026-12-07 06:29:57,702 INFO segsweep.jobs: cell {c}: 9 training images (3 patients), device cpu
"""
EPOCH = "2026-12-07 06:29:57,872 INFO segsweep.jobs: epoch {k}/{n} lr 0.05 train_loss 0.9 val_loss 0.9 val_dice 0.04 val_iou 0.02 ({s} s)\n"


def _cell(root: Path, cell: str, status: str | None = None, epochs: list[float] = (), n: int = 10, done=False):
    if status is not None:
        (root / "results" / "cells" / cell).mkdir(parents=True, exist_ok=True)
        (root / "results" / "cells" / cell / "metrics.json").write_text(json.dumps({"status": status}))
    if epochs:
        (root / "logs" / "train").mkdir(parents=True, exist_ok=True)
        text = LOG.format(c=cell) + "".join(EPOCH.format(k=k, n=n, s=s) for k, s in enumerate(epochs, 1))
        (root / "logs" / "train" / f"{cell}.log").write_text(
            text + ("2026-12-07 06:29:58,076 INFO segsweep: rule train: done\n" if done else "")
        )


def test_states_and_eta_by_hand(tmp_path):
    _cell(tmp_path, "a" * 12, "ok", [1.0] * 10, done=True)
    _cell(tmp_path, "b" * 12, "collapsed")
    _cell(tmp_path, "c" * 12, "failed")
    _cell(tmp_path, "d" * 12, None, [2.0, 4.0, 3.0])  # running: epoch 3 of 10, 3 s per epoch
    # e: pending (no log); f: a job that started, then went quiet long ago (killed): pending, resumes later
    _cell(tmp_path, "f" * 12, None, [1.0])
    old = time.time() - 3600
    os.utime(tmp_path / "logs" / "train" / f"{'f' * 12}.log", (old, old))
    studies = {"s": ["a" * 12, "b" * 12, "c" * 12, "d" * 12], "t": ["d" * 12, "e" * 12, "f" * 12]}
    epochs = {c * 12: 10 for c in "abcdef"}
    s, t = study_progress(studies, epochs, tmp_path)
    assert [s.count(k) for k in ("done", "running", "pending", "failed")] == [2, 1, 0, 1]
    assert [t.count(k) for k in ("done", "running", "pending", "failed")] == [0, 1, 2, 0]
    d = cell_progress("d" * 12, 10, tmp_path)
    assert (d.state, d.epoch, d.epochs, d.mean_epoch_s, d.left_s) == ("running", 3, 10, 3.0, 21.0)
    # s: only d left, 7 epochs × 3 s. t: d's 21 s + 2 pending cells × 10 epochs × the run's mean epoch time
    # (10 × 1 s of a, 2 + 4 + 3 of d, 1 of f: 20 s / 14 epochs) over 1 running cell
    assert s.eta_s == 21.0
    assert t.eta_s == pytest.approx(21.0 + 20 * 20 / 14)
    text = render([s, t], {"d" * 12: "t: lr=0.01"})
    assert text.splitlines()[1].split() == ["s", "4", "2", "1", "0", "1", "21", "s"]
    assert f"running {'d' * 12} (t: lr=0.01): epoch 3/10, 3.0 s/epoch, 21 s left" in text
    assert [format_duration(x) for x in (None, 0.2, 89, 91, 5399, 7200)] == [
        "–",
        "0.2 s",
        "89 s",
        "2 min",
        "90 min",
        "2.0 h",
    ]


@pytest.mark.slow
def test_status_of_a_running_study(tmp_path):
    """A real run (one core, cells of 80 epochs on 32×32 images): while a cell trains, the view shows it
    running at its epoch with an ETA, the finished ones done, the rest pending."""
    cfg = yaml.safe_load((ROOT / "tests" / "e2e" / "tiny_config.yaml").read_text())
    cfg["train"].update(epochs=80, patience=None)
    cfg["resources"] = {"train_threads": 1, "ingest_threads": 1, "worker": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    status = [sys.executable, "-m", "segsweep.plan.status", "--configfile", str(tmp_path / "config.yaml")]
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1", "--configfile"]
    run = subprocess.Popen(
        [*cmd, str(tmp_path / "config.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        seen = None
        deadline = time.time() + 300
        while time.time() < deadline and run.poll() is None:
            out = subprocess.run(status, capture_output=True, text=True, cwd=tmp_path, timeout=120)
            assert out.returncode == 0, out.stderr[-2000:]
            row = out.stdout.splitlines()[1].split()
            if row[3] == "1" and "running " in out.stdout:
                line = next(ln for ln in out.stdout.splitlines() if ln.startswith("  running "))
                epoch = int(line.split("epoch ")[1].split("/")[0])
                if epoch >= 3 and row[-2:] != ["–"] and int(row[2]) >= 1:
                    seen = out.stdout
                    break
            time.sleep(1)
        assert seen is not None, "never saw a running cell after a finished one"
        study, n, done, running, pending, failed = seen.splitlines()[1].split()[:6]
        assert (study, n, running, failed) == ("tiny", "4", "1", "0")
        assert int(done) + int(pending) == 3
        assert "/80, " in seen and "(tiny: lr=" in seen and " left" in seen
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)  # the Snakemake run this test started, and its jobs
        run.wait(timeout=60)
