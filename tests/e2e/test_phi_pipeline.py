"""No identifying value reaches any output of the WHOLE pipeline.

A phantom with distinctive fake PHI in its headers is written as a real-data tree (RVSC layout); the real
Snakefile runs on it as user data; then every file under results/, reports/ and logs/ is scanned: raw
bytes, members of zip containers (npz arrays, torch checkpoints), the text of the PDF (pdftotext), PNG/SVG
metadata (raw bytes), for the planted values and for the patients' folder names."""

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from test_phi import needles, output_blobs, scan  # the ingest-level scanner (tests/test_phi.py)

from segsweep.data import layouts, phantom
from segsweep.data.config import PhantomConfig

from .test_pipeline import TINY, snakemake

pytestmark = pytest.mark.slow


BINARY = {".pt", ".png", ".pdf", ".zip"}
DATA_URI = re.compile(rb"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


def all_blobs(root: Path):
    """(label, bytes); a "[binary]" label tells `scan` that 3-letter folder keys (RVSC "P01") would match
    there by chance (pixel/weight bytes, base64), so only the longer planted values are searched in it."""
    for label, data in output_blobs(root):
        suffix = Path(label.split(":")[0].split("[")[0]).suffix
        if suffix in BINARY:
            yield f"{label}[binary]", data
        elif suffix == ".html":
            yield f"{label}[binary]", data  # embedded base64 figures
            yield f"{label}:text", DATA_URI.sub(b"data:", data)
        else:
            yield label, data
        if label.endswith(".pt") and data[:2] == b"PK":  # torch checkpoints are zip archives
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    yield f"{label}:member-name", name.encode()
                    # tensor storages are raw numbers; the pickle (names, strings) is searched fully
                    yield f"{label}:{name}" + ("" if name.endswith(".pkl") else "[binary]"), zf.read(name)
        if label.endswith(".pdf") and shutil.which("pdftotext"):
            text = subprocess.run(["pdftotext", "-layout", label, "-"], capture_output=True).stdout
            assert text.strip(), f"pdftotext read nothing from {label}"
            yield f"{label}:text", text


N_PATIENTS = 6


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, phantom_phi):
    """The tiny study on a phantom written as a user's RVSC download (a real data root, read in place)."""
    tmp_path = tmp_path_factory.mktemp("real")
    raw = tmp_path / "download" / "TrainingSet"
    phantom.generate(
        PhantomConfig(patients=N_PATIENTS, slices=4, rows=96, cols=80, layout="rvsc", seed=11), raw, phi=phantom_phi
    )
    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"] = {"source": "rvsc", "root": str(raw), "pseudonym_key": "e2e-secret"}
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(wd)
    return wd, raw


def test_planted_phi_reaches_no_output(real_run, phantom_phi):
    wd, raw = real_run
    assert (wd / "reports" / "report.pdf").exists()
    n = N_PATIENTS

    words = needles(phantom_phi, n)
    raw_keys = {a for r in layouts.discover("rvsc", raw) for a in (r.key, *r.aliases)}
    blobs = []
    for sub in ("results", "reports", "logs"):
        blobs += list(all_blobs(wd / sub))
    kinds = {Path(label.split(":")[0].split("[")[0]).suffix for label, _ in blobs}
    assert {".pt", ".npz", ".pdf", ".html", ".csv", ".json", ".svg", ".png", ".log"} <= kinds, kinds
    hits = scan(blobs, words, raw_keys)
    assert not hits, hits[:20]


def test_data_root_is_watched(real_run):
    """A touched file with the same content reruns nothing; an added file reruns ingest (then the cells with
    the new data); the id does not depend on how the root path is spelled."""
    wd, raw = real_run
    some = sorted(raw.rglob("*.dcm"))[0]
    some.touch()
    dry = snakemake(wd, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]

    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["data"]["root"] = str(raw) + "/"
    cfg["data"]["strict"] = False
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(wd, "-n")
    assert "rule train" not in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]

    (raw / "README.txt").write_text("notes the user added to the download\n")
    dry = snakemake(wd, "-n")
    out = dry.stdout + dry.stderr
    assert "rule ingest" in out and "rule train" in out, out[-3000:]
