"""A cell folder that turns read-only while the study runs (issue 26's row): Snakemake itself must not crash.

Before, Snakemake removed a job's output before running it (`Job.remove_existing_output`), and on a read-only
folder that raised `OSError: Read-only file system` in Snakemake itself: the run stopped, cells after it never
started despite keep-going. The train rule's output is `update()` now (Snakemake leaves it to the job, which
writes it atomically), so only that cell's job fails; the others finish, and once the folder is writable again
the same command finishes the study with an uninterrupted run's table.

Needs root (a read-only bind mount, as a read-only or failing file system looks to the job); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"
TARGET = "results/studies/tiny/table.csv"

pytestmark = pytest.mark.slow


def _mount_ro(path: Path) -> bool:
    ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    return ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True).returncode == 0


def _cmd(wd: Path) -> list[str]:
    return [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml"),
            "--profile", str(ROOT / "profiles" / "local"), "--cores", "1", TARGET]  # fmt: skip


def _config(wd: Path) -> None:
    wd.mkdir(parents=True)
    cfg = yaml.safe_load(TINY.read_text())
    cfg["resources"].update(device="cpu", train_max_stops=0, worker=False)  # a failing cell: 2 tries, not 22
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


@pytest.fixture
def can_mount(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    if os.geteuid() != 0 or not _mount_ro(probe):
        pytest.skip("needs root and bind mounts (a read-only mount)")
    subprocess.run(["umount", str(probe)], check=True)


def _make_a_waiting_cell_read_only(wd: Path, stop: threading.Event, found: dict) -> None:
    """Once one cell trains, bind-mount another cell's folder (planned, not started) read-only."""
    cells = wd / "results" / "cells"
    while not stop.is_set():
        dirs = [d for d in cells.glob("*") if d.is_dir()] if cells.exists() else []
        training = [d for d in dirs if (d / "history.csv").exists()]
        waiting = [d for d in dirs if not (d / "history.csv").exists() and not (d / "metrics.json").exists()]
        if training and waiting:
            found["cell"] = waiting[0]
            found["mounted"] = _mount_ro(waiting[0])
            return
        time.sleep(0.05)


def test_a_read_only_cell_folder_fails_its_cell_not_snakemake(tmp_path, can_mount):
    ref, wd = tmp_path / "ref", tmp_path / "ro"
    _config(ref)
    _config(wd)
    done = subprocess.run(_cmd(ref), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    stop, found = threading.Event(), {}
    side = threading.Thread(target=_make_a_waiting_cell_read_only, args=(wd, stop, found), daemon=True)
    proc = subprocess.Popen(_cmd(wd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    side.start()
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        stop.set()
        side.join(timeout=10)
        if found.get("mounted"):
            subprocess.run(["umount", str(found["cell"])], check=True)
    assert found.get("mounted"), "no cell was seen waiting while another trained: nothing was made read-only"
    ro_cell = found["cell"].name
    # the read-only cell's job failed (it cannot write), Snakemake did not: no traceback of its own, and every
    # other cell finished
    assert proc.returncode != 0
    assert "remove_existing_output" not in out and "Read-only file system" in out, out[-4000:]
    others = sorted(p.parent.name for p in (ref / "results" / "cells").glob("*/metrics.json"))
    assert ro_cell in others
    for cell in others:
        if cell != ro_cell:
            assert (wd / "results" / "cells" / cell / "metrics.json").exists(), cell
    assert not (wd / "results" / "cells" / ro_cell / "metrics.json").exists()

    # writable again: the same command finishes the study, with the uninterrupted run's table
    again = subprocess.run(_cmd(wd), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for name in ("table.csv", "table.json"):
        assert (wd / "results" / "studies" / "tiny" / name).read_text() == (
            ref / "results" / "studies" / "tiny" / name
        ).read_text(), name
