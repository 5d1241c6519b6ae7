"""`snakemake predict` on the real Snakefile: a one-cell tiny phantom study, then its model applied to an
unlabelled phantom root with a CT series and a cut file in it (docs/predict.md). About 30 s on 2 cores."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from segsweep.data import dicom as dcm
from segsweep.data.config import PhantomConfig
from segsweep.data.phantom import generate_series
from segsweep.data.phantom_scanner import generate_scanner_series

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"

pytestmark = pytest.mark.slow


def test_snakemake_predict_writes_segs_volumes_and_qc(tmp_path):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=20, loss="dice + bce")  # enough to learn the tiny phantom (2 epochs collapse)
    cfg["studies"] = {"tiny": {"title": "One cell", "axes": {"lr": [0.01]}, "table": {"rows": [], "cols": ["lr"]}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    ph = cfg["data"]["phantom"]
    dicom = tmp_path / "dicom"
    size = dict(slices=ph["slices"], rows=ph["rows"], cols=ph["cols"])
    generate_series(PhantomConfig(patients=2, **size), dicom, mixed=True)
    with dcm.quiet():  # cine layouts and header quirks beside it (tests/test_predict_scanners.py has the rest)
        generate_scanner_series(PhantomConfig(patients=1, **size), dicom / "scanner", phases=3)
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")]
    cmd += [
        "--cores",
        "2",
        "predict",
        "results/studies/tiny/model_card.md",
        "--config",
        f"predict={{input: {dicom}, model: best}}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = tmp_path / "results" / "predict"
    summary = json.loads((out / "predict.json").read_text())
    assert summary["n_series"] == 2 + 4 and summary["model"]["study"] == "tiny" and summary["images_per_s"] > 0
    qc = pd.read_csv(out / "qc.csv", keep_default_na=False)
    assert {"predict_not_mr", "dicom_truncated", "dicom_no_pixels", "predict_geometry_mixed"} <= set(qc["reason"])
    assert "predict_series_failed" not in set(qc["reason"])  # cine, per position, quirks, Enhanced MR: all written
    for s in summary["series"]:
        info = json.loads((out / s["series"] / "series.json").read_text())
        for seg in info["segs"]:
            with dcm.quiet():
                ds = pydicom.dcmread(out / s["series"] / seg["file"])
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.NumberOfFrames == len(seg["images"])
        assert (out / s["series"] / "volumes.csv").exists()
        assert (info["function"] is not None) == (info["volumes_ml"] is not None and len(info["volumes_ml"]) > 1)
    card = (tmp_path / "results" / "studies" / "tiny" / "model_card.md").read_text()
    assert summary["model"]["cell"] in card and "sha256" in card
    # the training data come from the keyed data folders (results/data/<key>, results/splits/<key>)
    assert "Source: phantom" in card and re.search(r"after quality control: [1-9]\d* patients", card), card
    assert re.search(r"training slices \([1-9]\d* patients\)", card), card
    # nothing usable: the rule fails, says so and where, and keeps qc.csv (Snakemake owns predict.json only)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("no DICOM here\n")  # pydicom's forced read parses this, lazily, into garbage
    cmd[-1] = f"predict={{input: {bad}, model: best}}"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "no series could be predicted" in proc.stdout + proc.stderr + _log(tmp_path)
    reasons = pd.read_csv(out / "qc.csv", keep_default_na=False)["reason"].tolist()
    assert reasons == ["predict_no_series_written", "dicom_not_dicom"]
    assert not (out / "predict.json").exists()
    shutil.rmtree(dicom)


def _log(tmp_path):
    log = tmp_path / "logs" / "predict.log"
    return log.read_text() if log.exists() else ""
