"""The real Snakefile on a tiny phantom config, in a temp working directory.

Checks the report files exist, the study table holds one value per cell, and that Snakemake reruns only
what a config change touches: one new learning rate → only its cells + aggregation/figures/report; a
title change → only the report.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or in a dry run)."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", output, re.S)
    if not m:
        return {}
    return {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", m.group(1), re.M)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e")
    shutil.copy(TINY, wd / "config.yaml")
    proc = snakemake(wd)
    return wd, proc


def test_report_and_tables(run_dir):
    wd, proc = run_dir
    assert (wd / "reports" / "report.html").stat().st_size > 10_000
    pdf = (wd / "reports" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    axes = cfg["studies"]["tiny"]["axes"]
    n_cells = len(axes["optimizer"]) * len(axes["lr"])
    cells = pd.read_csv(wd / "results" / "studies" / "tiny" / "cells.csv")
    assert len(cells) == n_cells and cells["cell"].nunique() == n_cells
    assert set(cells["status"]) <= {"ok", "collapsed", "diverged", "failed"}
    table = json.loads((wd / "results" / "studies" / "tiny" / "table.json").read_text())
    assert table  # layout written
    for cell in cells["cell"]:
        m = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())
        assert m["status"] in {"ok", "collapsed", "diverged", "failed"}
        if m["status"] in ("ok", "collapsed"):  # a collapsed run keeps its numbers
            assert 0.0 <= m["best_val_dice"] <= 1.0
            # the final evaluation (docs/evaluation.md): native resolution, validation and the test patient
            assert m["evaluation"]["grid"] == "native" and 0.0 <= m["val_dice_patient"] <= 1.0
            assert m["val_n_patients"] == 2 and m["test"]["n_patients"] == 1
            assert all(0.0 <= m["test"][k] <= 1.0 for k in ("dice", "dice_patient", "iou", "nsd"))
            pp = pd.read_csv(wd / "results" / "cells" / cell / "per_patient.csv")
            assert list(pp.columns) == ["set", "patient", "n_slices", "dice", "iou", "hd95_mm", "nsd"]
            assert sorted(pp["set"]) == ["test", "val", "val"]
            pi = pd.read_csv(wd / "results" / "cells" / cell / "per_image.csv")
            assert list(pi.columns[:5]) == ["patient", "slice", "dice", "iou", "hd95_mm"]
            assert (pi["set"] == "val").sum() == m["n_val"]
    split = json.loads(next((wd / "results" / "splits").glob("*/*.json")).read_text())  # splits/<key>/
    assert len(split["test"]) == 1 and not set(split["test"]) & set(split["val"] + split["pool"])
    html = (wd / "reports" / "report.html").read_text()
    assert '<section id="test-set"' in html and 'id="no-test-set"' not in html
    (qc_file,) = (wd / "results" / "data").glob("*/qc.csv")  # results/data/<key>/
    qc = pd.read_csv(qc_file)
    assert "image_without_contour" in set(qc["reason"])  # the phantom leaves some slices uncontoured


def test_one_value_change_reruns_only_touched_cells(run_dir):
    wd, _ = run_dir
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["studies"]["tiny"]["axes"]["lr"][-1] = 0.05  # one new learning rate
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(wd, "-n")
    jobs = job_counts(dry.stdout + dry.stderr)
    assert jobs.get("train") == len(cfg["studies"]["tiny"]["axes"]["optimizer"]), jobs
    assert not {"phantom", "ingest", "split"} & set(jobs), jobs
    assert {"aggregate", "figures", "report"} <= set(jobs), jobs
    real = snakemake(wd)
    assert job_counts(real.stdout + real.stderr).get("train") == 2


def test_report_only_change_trains_nothing(run_dir):
    wd, _ = run_dir
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["title"] = "A new title"
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(wd, "-n")
    jobs = job_counts(dry.stdout + dry.stderr)
    assert set(jobs) - {"all"} == {"report"}, jobs


def test_config_typo_names_the_key(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"]["learning_rate"] = 0.1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "learning_rate" in proc.stdout + proc.stderr


def test_snakemake_report_zip(run_dir):
    """`snakemake --report report.zip` packs the flagged tables and figures with their captions."""
    import zipfile

    wd, _ = run_dir
    snakemake(wd)  # up to date first: an earlier test of this module may have changed the title (a dry run)
    snakemake(wd, "--report", str(wd / "report.zip"))
    names = zipfile.ZipFile(wd / "report.zip").namelist()
    assert any(n.endswith("/heatmap.svg") for n in names), names
    assert any(n.endswith("/table.csv") for n in names), names
    # segsweep's own report (category "report"), not only Snakemake's report.html index
    zf = zipfile.ZipFile(wd / "report.zip")
    ours = [n for n in names if re.search(r"/data/raw/\w+/report\.html$", n)]  # Snakemake's own: report/report.html
    assert len(ours) == 1 and any(re.search(r"/data/raw/\w+/report\.pdf$", n) for n in names), names
    title = yaml.safe_load((wd / "config.yaml").read_text())["title"]
    assert title in zf.read(ours[0]).decode()


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["train"].update(loss={"terms": [{"name": "focal", "alpha": 1.5}]}), "loss"),
        (lambda c: c["train"].update(loss={"terms": [{"name": "dice", "gamma": 2.0}]}), "loss"),
        # multiclass trains (tests/e2e/test_multiclass.py), but not with a sigmoid-only loss
        (lambda c: (c["data"].update(target="multiclass"), c["train"].update(loss="focal")), "loss"),
    ],
    ids=["focal_alpha_1.5", "unknown_loss_parameter", "multiclass_with_a_binary_loss"],
)
def test_invalid_values_stop_the_dry_run(tmp_path, change, key):
    """Values only the implementation can judge still fail at plan time, with the key named: no job starts."""
    cfg = yaml.safe_load(TINY.read_text())
    change(cfg)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert f"config key '{key}'" in out, out[-2000:]
    assert "rule train" not in out and not (tmp_path / "results").exists()
