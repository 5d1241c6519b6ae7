"""No patient-identifying value reaches any ingest output.

Distinctive fake values are planted in the phantom headers (fixture phantom_phi, with the patient number
substituted); after ingest, every byte of every output file — raw npz bytes and each decoded array, qc.csv,
dataset.json — and everything printed is scanned for them, for their name components, for the dates in
other spellings, and for the raw patient keys (folder / case names)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from segsweep.data import ingest, layouts
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig


def needles(phi: dict, n_patients: int) -> set[str]:
    out = set()
    for i in range(1, n_patients + 1):
        for value in phi.values():
            v = value.replace("{i}", str(i))
            out.add(v)
            out.update(part for part in v.replace("^", " ").split() if len(part) >= 4)
    for date in (phi["PatientBirthDate"], phi["StudyDate"]):
        out.update({date, f"{date[:4]}-{date[4:6]}-{date[6:]}", f"{date[6:]}.{date[4:6]}.{date[:4]}"})
    return out


def output_blobs(out: Path):
    """(label, bytes) for every output file and, inside npz files, every member and decoded array."""
    for f in sorted(out.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        yield str(f), data
        if f.suffix == ".npz":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    yield f"{f}:member-name", name.encode()
                    yield f"{f}:{name}", zf.read(name)
            z = np.load(f)
            for key in z.files:
                yield f"{f}[{key}]", np.ascontiguousarray(z[key]).tobytes()


def scan(blobs, words: set[str], case_sensitive_words: set[str] = frozenset()):
    """Hits of ``words`` (any case, UTF-8 and UTF-16) and ``case_sensitive_words`` (raw keys) in the blobs.
    Raw keys shorter than 5 characters (RVSC "P01") are looked for in text only: three given bytes occur
    by chance in ~100 kB of float pixels with a probability of ~1 %."""
    hits = []
    for label, data in blobs:
        binary = label.endswith(".npz") or "[" in label or ".npy" in label
        low = data.lower()
        for w in words:
            for enc in ("utf-8", "utf-16-le"):
                if w.lower().encode(enc) in low:
                    hits.append((label, w, enc))
        for w in case_sensitive_words:
            if (len(w) >= 5 or not binary) and w.encode() in data:
                hits.append((label, w, "raw key"))
    return hits


@pytest.mark.parametrize("layout", layouts.LAYOUT_NAMES)
@pytest.mark.parametrize("target", ["endo", "multiclass"])
def test_planted_phi_never_reaches_outputs(phantom_trees, phantom_phi, tmp_path, capfd, caplog, layout, target):
    caplog.set_level("DEBUG")  # every log record of the run is scanned too (pydicom's included)
    root = phantom_trees[layout]
    data = DataConfig(layout, str(root), target, False, "phi-test", PhantomConfig(layout=layout))
    ds = ingest.run(data, PreprocessConfig(size=(48, 40)), tmp_path / "out", workers=1)
    assert ds["n_images"] > 0
    captured = capfd.readouterr()
    raw_keys = {a for r in layouts.discover(layout, root) for a in (r.key, *r.aliases)}
    blobs = list(output_blobs(tmp_path / "out")) + [
        ("stdout", captured.out.encode()),
        ("stderr", captured.err.encode()),
        ("log", caplog.text.encode()),
    ]
    assert len(blobs) > 10 and "ingest:" in caplog.text
    assert scan(blobs, needles(phantom_phi, 3), raw_keys) == []


def test_scanner_finds_a_planted_value(tmp_path, phantom_phi):
    # the scan must be able to fail: a value inside an npz array and one in a CSV are both found
    arr = np.frombuffer("Quartzfeld1".encode("utf-16-le"), dtype=np.uint8)
    ingest.write_npz(tmp_path / "p00000000.npz", {"image": arr})
    (tmp_path / "qc.csv").write_text("patient,file\np1,TrainingSet/patient01/x.dcm\n")
    hits = scan(output_blobs(tmp_path), needles(phantom_phi, 1), {"patient01"})
    assert {(w, enc) for _, w, enc in hits} >= {("Quartzfeld1", "utf-16-le"), ("patient01", "raw key")}


def test_real_sunnybrook_ids_and_dates_stay_out(phantom_sunnybrook_sample, tmp_path, capfd):
    data = DataConfig("sunnybrook_flat", str(phantom_sunnybrook_sample), "myo", False, "k", PhantomConfig())
    ingest.run(data, PreprocessConfig(), tmp_path / "out", workers=2)
    captured = capfd.readouterr()
    blobs = list(output_blobs(tmp_path / "out")) + [
        ("stdout", captured.out.encode()),
        ("stderr", captured.err.encode()),
    ]
    # PatientID/PatientName are the SCD numbers; case names are the raw keys of the contour folders
    assert scan(blobs, {"SCD0000101", "SCD0000201", "SC-HF-I-1", "SC-HF-I-2", "20120000"}) == []


def test_uid_named_files_are_pseudonymised_in_qc_paths(tmp_path):
    """Exporters name files after the SOP Instance UID; a UID identifies the study, so qc.csv gets a keyed hash."""
    from segsweep.data.ingest import _Namer

    uid = "1.2.840.113619.2.312.4120.8419438.12068.1592380116.839"
    namer = _Namer(tmp_path, ["P01"], "p1234abcd", key="secret")
    got = namer.path(tmp_path / "P01" / f"MR.{uid}.dcm")
    assert uid not in got and got.startswith("p1234abcd/MR.uid-") and got.endswith(".dcm")
    assert namer.path(tmp_path / "P01" / f"MR.{uid}.dcm") == got  # stable: rows of one file stay together
    assert _Namer(tmp_path, ["P01"], "p1234abcd", key="other").path(tmp_path / "P01" / f"MR.{uid}.dcm") != got
    assert uid not in namer.text(f"cannot read {uid}: truncated")
    assert namer.text("IM-0001-0020.dcm, 0.5 mm, v1.2") == "IM-0001-0020.dcm, 0.5 mm, v1.2"  # not UIDs
