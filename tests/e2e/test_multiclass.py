"""A small multi-class study (LV cavity + myocardium, softmax) through the real Snakefile on the phantom:
per-class metrics in metrics.json and the per-run files, a table per class, overlays in class colours, and
the report (issue 12 point 5; docs/evaluation.md, "Multi-class targets")."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from .test_pipeline import TINY, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e-multiclass")
    cfg = yaml.safe_load(TINY.read_text())
    cfg["title"] = "segsweep multiclass end-to-end test"
    cfg["data"]["target"] = "multiclass"
    cfg["preprocess"]["size"] = [48, 40]
    cfg["train"].update(epochs=12, base_width=8, lr=0.01, loss="dice + bce")
    cfg["studies"] = {  # ranked by one class (the mean over classes is the default value; unit-tested)
        "mc": {
            "title": "Multiclass losses",
            "axes": {"loss": ["dice + bce", "dice"]},
            "table": {"rows": ["loss"], "cols": [], "value": "val_dice_patient_myo"},
        },
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(wd)
    shutil.rmtree(wd / "results" / "raw", ignore_errors=True)  # the phantom's DICOM files: not needed below
    return wd, proc


def test_multiclass_study_end_to_end(run_dir):
    wd, _ = run_dir
    assert len(list((wd / "results" / "cells").iterdir())) == 2
    (ds_file,) = (wd / "results" / "data").glob("*/dataset.json")  # results/data/<key>/
    ds = json.loads(ds_file.read_text())
    assert ds["target"] == "multiclass" and ds["n_classes"] == 3
    cells = pd.read_csv(wd / "results" / "studies" / "mc" / "cells.csv")
    assert len(cells) == 2 and set(cells["status"]) <= {"ok", "collapsed"}
    for cell in cells["cell"]:
        d = wd / "results" / "cells" / cell
        m = json.loads((d / "metrics.json").read_text())
        assert set(m["val_per_class"]) == {"lv", "myo"} and set(m["test"]["per_class"]) == {"lv", "myo"}
        classes = [m["val_per_class"][c]["dice_patient"] for c in ("lv", "myo")]
        assert all(0.0 <= x <= 1.0 for x in classes) and m["val_dice_patient"] == pytest.approx(np.mean(classes))
        assert m["evaluation"]["grid"] == "native" and set(m["val_collapse"]) == {"lv", "myo"}
        pp = pd.read_csv(d / "per_patient.csv")
        assert {"dice_lv", "dice_myo", "n_slices_myo"} <= set(pp.columns)
        pi = pd.read_csv(d / "per_image.csv")
        assert {"native_dice_lv", "native_dice_myo", "empty_lv"} <= set(pi.columns)
        with np.load(d / "predictions.npz") as z:
            assert list(z["classes"]) == ["lv", "myo"] and set(np.unique(z["mask"])) == {0, 1, 2}
        if m["status"] == "ok":
            assert cells.set_index("cell").loc[cell, "val_dice_patient_myo"] == pytest.approx(classes[1])
    # the per-class table shows the myocardium's numbers
    t = json.loads((wd / "results" / "studies" / "mc" / "table.json").read_text())
    assert t["value"] == "val_dice_patient_myo"
    ok = cells[cells["status"] == "ok"]
    shown = [x["mean"] for line in t["cells"] for x in line if x["mean"] is not None]
    assert sorted(shown) == pytest.approx(sorted(ok["val_dice_patient_myo"]))
    html = (wd / "reports" / "report.html").read_text()
    assert "myocardium" in html  # the per-class table value's label
    assert (wd / "reports" / "report.pdf").stat().st_size > 10_000
    if len(ok):  # the best configuration's overlays, in class colours
        figs = json.loads((wd / "results" / "studies" / "mc" / "figures" / "figures.json").read_text())
        overlay = next(f for f in figs["figures"] if f["kind"] == "overlays")
        assert "LV cavity, myocardium in their own colours" in overlay["caption"]
