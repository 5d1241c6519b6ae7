"""A study the size of the demo's largest (3 optimizers × 2 fractions × 4 learning rates, one run each, one
collapsed run with a long reason) gets one PDF page: facts, findings, table and key figure (issue 24)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from fixtures_results import render
from test_report_tables import N_PATIENTS, SLICES, _cell

from segsweep.analysis.aggregate import aggregate_study
from segsweep.data.splits import make_split
from segsweep.report.plots import make_study_figures
from segsweep.study import Study, StudyCell, TableLayout

pytestmark = pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils (pdftotext)")
REASON = (
    "collapsed to full: the prediction covers 99.0 % of the pixels of the 32 validation slices that contain the "
    "structure (≥ 95.0 %; 39.4 × the reference area)"
)


def test_a_24_configuration_study_fits_one_page(tmp_path):
    results = tmp_path / "results"
    cells = results / "cells"
    pids = [f"p{i:08x}" for i in range(N_PATIENTS)]
    split = make_split(pids, seed=0, val_fraction=0.25)
    (results / "splits").mkdir(parents=True)
    (results / "splits" / "seed0.json").write_text(json.dumps(split))
    rng = np.random.default_rng(0)
    axes = {"optimizer": ("adam", "rmsprop", "sgd"), "fraction": ("0.4", "1.0"), "lr": ("0.0001", "0.001", "0.01", "1")}
    runs = []
    for k, (opt, frac, lr) in enumerate(
        (o, f, lr) for o in axes["optimizer"] for f in axes["fraction"] for lr in axes["lr"]
    ):
        cid = f"{k:012x}"
        collapsed = (opt, frac, lr) == ("rmsprop", "0.4", "1")
        dice = {p: list(rng.uniform(0.2, 0.95, SLICES)) for p in split["val"]}
        _cell(cells, cid, "collapsed" if collapsed else "ok", {"split_seed": 0, "fraction": float(frac)}, dice)
        if collapsed:
            m = json.loads((cells / cid / "metrics.json").read_text())
            (cells / cid / "metrics.json").write_text(json.dumps({**m, "reason": REASON}))
        runs.append(StudyCell(cid, (("optimizer", opt), ("fraction", frac), ("lr", lr)), 0, None))
    study = Study(
        "lr_optimizer",
        "Learning rate × optimizer × training fraction",
        "The seed study's layout: rows optimizer × training-data fraction, columns learning rate, value = Dice per "
        "validation patient at native resolution.",
        "grid",
        tuple(axes),
        TableLayout(rows=("optimizer", "fraction"), cols=("lr",), value="best_val_dice"),
        tuple(runs),
        axes,
    )
    sd = results / "studies" / study.name
    aggregate_study(study, cells, sd, seed=7, splits=[results / "splits" / "seed0.json"])
    make_study_figures(study, sd, cells, sd / "figures")
    config = {"title": "One page", "seed": 7}
    render(tmp_path / "report.html", config, [study], results, tmp_path, tmp_path / "report.pdf")
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = text.split("\f")
    (i,) = [k for k, p in enumerate(pages) if re.search(r"^\s*3\s+Learning rate × optimizer", p, re.M)]
    page = " ".join(pages[i].split())
    assert "collapsed to full" in page and "Table 2." in page
    assert re.search(r"Figure \d+\. Mean per configuration \(heatmap\)\. .* they carry no number\.", page), page[-600:]
    assert re.search(r"^\s*4\s+Test set\s*$", pages[i + 1], re.M)  # the next section starts the next page
