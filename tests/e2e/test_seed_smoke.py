"""A shipped seed study really runs at smoke scale on the phantom: the 5-fold CV study, shrunk."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

pytestmark = pytest.mark.slow


def test_kfold_study_runs_at_smoke_scale(tmp_path):
    overlay = {
        "scale": "smoke",
        "select": ["seed006_kfold"],
        "data": {"phantom": {"patients": 7, "slices": 4, "rows": 96, "cols": 80}},  # 2 test, 5 for 5 folds
        "resources": {"train_gpus": 0, "train_threads": 1, "train_mem_mb": 2000},
    }
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    proc = subprocess.run(
        [
            SNAKEMAKE,
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(tmp_path),
            "--cores",
            "2",
            "--configfile",
            str(ROOT / "config" / "config.yaml"),
            str(ROOT / "config" / "seed_studies.yaml"),
            str(tmp_path / "overlay.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    cells = pd.read_csv(tmp_path / "results" / "studies" / "seed006_kfold" / "cells.csv")
    # smoke: 2 optimizers × 2 learning rates (axes_limit 2) × 2 folds (max_folds 2)
    assert len(cells) == 8 and sorted(cells["fold"].unique()) == [0, 1]
    (split_file,) = (tmp_path / "results" / "splits").glob("*/seed0-cv5.json")  # results/splits/<key>/
    split = json.loads(split_file.read_text())
    assert len(split["folds"]) == 5
    table = pd.read_csv(tmp_path / "results" / "studies" / "seed006_kfold" / "table.csv")
    assert len(table) == 2  # rows: optimizer
    assert (tmp_path / "reports" / "seed_studies.pdf").exists()  # its report.name
