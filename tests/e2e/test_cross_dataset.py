"""The real Snakefile with two extra phantom data sets: a study trains on data set `a`, a fine-tuning study on
data set `b` starts from its validation-selected cell (`init_from: {study: src}`), in one run; then a dry run
has nothing to do. Each data set has its own ingest, QC manifest and splits; the default one's are keyed: results/data/<key>."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.training.finetune import selected_cell

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow

PH = {"rows": 96, "cols": 80, "no_contour_fraction": 0.0}
CONFIG = {
    "title": "segsweep cross-dataset end-to-end test",
    "seed": 3,
    "data": {"source": "phantom", "phantom": {**PH, "patients": 4, "slices": 2}},
    "datasets": {
        "a": {"source": "phantom", "phantom": {**PH, "patients": 6, "slices": 6, "layout": "sunnybrook", "seed": 11}},
        "b": {
            "source": "phantom",
            "phantom": {**PH, "patients": 5, "slices": 3, "no_contour_fraction": 0.25, "seed": 29},
        },
    },
    "preprocess": {"size": [32, 32], "clahe": {"clip_limit": 2.0, "tile_grid": [4, 4]}},
    "splits": {"seed": 0, "val_fraction": 0.34},
    # the source needs an ok cell to start from: 6 short epochs at lr 0.01 give one on this phantom
    "train": {"epochs": 6, "depth": 2, "base_width": 4, "batch_size": 4, "lr": 0.01},
    "resources": {"train_threads": 1, "ingest_threads": 1},
    "studies": {
        "src": {"data": "a", "axes": {"lr": [0.01, 0.003]}, "table": {"rows": ["lr"], "cols": []}},
        "fine": {
            "data": "b",
            "base": {"init_from": {"study": "src"}, "epochs": 1},
            "axes": {"finetune": ["full"]},
            "table": {"rows": ["finetune"], "cols": []},
        },
    },
}


def snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    proc = subprocess.run([*cmd, "--cores", "2", *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_pretrain_on_one_data_set_and_fine_tune_on_another(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    snakemake(tmp_path)
    res = tmp_path / "results"
    plan = build_plan(sc.prepare(CONFIG))

    # each data set: its own phantom, ingest, QC manifest and split; the default one's folders keyed by its settings
    assert len(list(res.glob("data/*/dataset.json"))) == 1 and len(list(res.glob("raw/phantom/*/MANIFEST.json"))) == 1
    for name, layout, n in (("a", "sunnybrook", 6), ("b", "rvsc", 5)):
        ds = json.loads((res / "datasets" / name / "data" / "dataset.json").read_text())
        assert (ds["layout"], len(ds["patients"])) == (layout, n)
        assert (res / "datasets" / name / "data" / "qc.csv").exists()
        assert (res / "datasets" / name / "splits" / "seed0.json").exists()
    assert not (res / "splits").exists()  # no study trains on the default data set

    # the fine-tuned cell started from the source study's validation-selected cell (trained on data set a)
    src = selected_cell(res / "studies", plan.cells[plan.studies["fine"].cell_ids[0]].params.init_from)
    assert plan.cells[src].dataset == "a"
    (fine,) = plan.studies["fine"].cell_ids
    log = (tmp_path / "logs" / "train" / f"{fine}.log").read_text()
    assert f"initialised from weights of cell {src} (results/cells/{src}/best.pt)" in log, log[-2000:]
    m = json.loads((res / "cells" / fine / "metrics.json").read_text())
    assert m["status"] in ("ok", "collapsed") and m["params"]["init_from"]["study"] == "src"
    n_val_b = len(json.loads((res / "datasets" / "b" / "splits" / "seed0.json").read_text())["val"])
    assert m["val_n_patients"] == n_val_b  # evaluated on data set b's validation patients

    # the report names each study's data set and counts the extra ones
    html = (tmp_path / "reports" / "report.html").read_text()
    assert "Other data sets" in html and "<code>a</code>: phantom (sunnybrook), 6 patients" in html

    proc = snakemake(tmp_path, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
