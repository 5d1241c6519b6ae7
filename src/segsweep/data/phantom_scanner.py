"""Unlabelled phantom cine DICOM in the layouts and with the header quirks of real scanners (for ``predict``).

`generate_scanner_series` writes one root with a case per layout or quirk, so that every one of them is
tested offline (docs/predict.md):

* ``cine``: one series holding every slice position × cardiac phase (the RVSC / Sunnybrook layout), phases
  told apart by TriggerTime;
* ``per_position``: one series per slice position, each holding every phase (a common vendor layout);
* ``quirks``: one cine series (phases by TemporalPositionIdentifier) with the header values that broke
  ``predict`` on real data: PatientBirthDate ``00000000`` and StudyDate ``20120000``, UIDs with
  leading-zero components, a FrameOfReferenceUID per image, an oblique orientation with 1e-6 jitter between
  images, no SliceThickness / SpacingBetweenSlices, MONOCHROME1, rescale slope 2 / intercept −100, and
  JPEG-LS lossless pixel data;
* ``multiframe``: an Enhanced MR image, every slice × phase a frame of one file (geometry and timing in
  its functional groups).

The images are drawn as `phantom.generate` draws a patient, with the LV cavity contracting over the phases
(radius × ``1 − 0.4 sin²(π t)``, t = phase / phases: end-diastole at phase 0, end-systole mid-cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydicom.uid import EnhancedMRImageStorage, JPEGLSLossless

from segsweep.data import phantom as ph
from segsweep.data.config import PhantomConfig

CASES = ("cine", "per_position", "quirks", "multiframe")
QUIRK_PHI = {"PatientBirthDate": "00000000", "StudyDate": "20120000"}


def contraction(phase: int, phases: int) -> float:
    """Cavity radius factor of a phase: ``1 − 0.4 sin²(π · phase / phases)`` (1 at end-diastole)."""
    return 1.0 - 0.4 * float(np.sin(np.pi * phase / phases)) ** 2


def _leading_zero_uid(*parts) -> str:
    """A UID with a leading-zero component ("…​.099.0…"), as some anonymisers write (invalid VR UI)."""
    return ph._uid(*parts)[:40] + ".099." + "0" + ph._uid(*parts)[-10:]


def _oblique() -> tuple[np.ndarray, np.ndarray]:
    """Row and column directions of an oblique short-axis plane (rotation about x by 30°, then z by 20°)."""
    a, b = np.radians(30.0), np.radians(20.0)
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    m = rz @ rx
    return m[:, 0], m[:, 1]


def _ds_list(values) -> list[str]:
    return [f"{v:.7f}" for v in values]


def generate_scanner_series(
    cfg: PhantomConfig, root: str | Path, phases: int = 4, phi: Mapping[str, str] | None = None
) -> dict:
    """Write ``case_<layout>/…`` under ``root`` (module docstring) and return a manifest: per case its
    files, series UIDs, and per image (in slice, phase order) SOP Instance UID, slice and phase."""
    root = Path(root)
    rows, cols = cfg.rows, cfg.cols
    Y, X = np.mgrid[0:rows, 0:cols].astype(np.float32)
    manifest = {"generator": "segsweep.phantom_scanner", "config": asdict(cfg), "phases": phases, "cases": {}}
    for p, case in enumerate(CASES, start=1):
        rng = np.random.default_rng([cfg.seed, p, 11])
        params = ph._patient_params(rng, rows, cols)
        values = {k: ph._fill(v, p) for k, v in {**ph.PHI_DEFAULTS, **(phi or {})}.items()}
        if case == "quirks":
            values.update(QUIRK_PHI)
        bg = ph._background(params, rows, cols, X, Y, rng)
        geoms = [ph._slice_geometry(params, k, cfg.slices, rng) for k in range(cfg.slices)]
        ds = ph._template(cfg, p, params, values, series=500 + p, desc=f"cine {case} (phantom)")
        # UIDs of their own: a root may also hold `phantom.generate_series` output of the same seed
        ds.StudyInstanceUID = ph._uid("scanner", cfg.seed, p, "study")
        ds.SeriesInstanceUID = ph._uid("scanner", cfg.seed, p, "series")
        ds.FrameOfReferenceUID = ph._uid("scanner", cfg.seed, p, "frame")
        ds.CardiacNumberOfImages = phases
        ds.NominalInterval = 1000
        r_dir, c_dir = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
        if case == "quirks":
            r_dir, c_dir = _oblique()
            ds.StudyInstanceUID = _leading_zero_uid("scanner", cfg.seed, p, "study")
            ds.SeriesInstanceUID = _leading_zero_uid("scanner", cfg.seed, p, "series")
            del ds.SliceThickness, ds.SpacingBetweenSlices
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
        normal = np.cross(r_dir, c_dir)
        entry = {"case": case, "files": [], "series_uids": [], "images": []}
        jitter = np.random.default_rng([cfg.seed, p, 13])
        frames = []
        for k, g in enumerate(geoms):
            for t in range(phases):
                gt = {**g, "R": g["R"] * contraction(t, phases), "T": g["T"] / contraction(t, phases) ** 0.5}
                stored = ph._acquire(ph.render(params, gt, bg, X, Y), params, rng)
                frames.append((k, t, stored))
        if case == "multiframe":
            _write_multiframe(ds, root / "case_multiframe" / "MF0001.dcm", frames, entry, cfg, p)
            manifest["cases"][case] = entry
            continue
        order = np.random.default_rng([cfg.seed, p, 7]).permutation(len(frames))  # file names say nothing
        for n, (k, t, stored) in enumerate(frames):
            if case == "per_position":
                ds.SeriesInstanceUID = ph._uid("scanner", cfg.seed, p, "series", k)
                ds.SeriesNumber = 600 + k
            uid = ph._uid("scanner", cfg.seed, p, "image", k, t)
            if case == "quirks":
                uid = _leading_zero_uid("scanner", cfg.seed, p, "image", k, t)
                ds.FrameOfReferenceUID = ph._uid("scanner", cfg.seed, p, "frame", k, t)
                ds.TemporalPositionIdentifier = t + 1
                jr = r_dir + jitter.normal(0, 1e-6, 3)
                jc = c_dir + jitter.normal(0, 1e-6, 3)
                ds.ImageOrientationPatient = _ds_list([*jr, *jc])
            else:
                ds.ImageOrientationPatient = _ds_list([*r_dir, *c_dir])
            ds.TriggerTime = f"{1000.0 * t / phases + 3.7 * k:.2f}"  # slices acquired at slightly other delays
            location = -10.0 * k
            folder = f"SAX_{k + 1:02d}" if case == "per_position" else "CINE"
            path = root / f"case_{case}" / folder / f"IM{int(order[n]) + 1:04d}.dcm"
            px = stored if case != "quirks" else (4095 - stored)  # MONOCHROME1: high stored value = dark
            ph._write_dicom(ds, path, px, n + 1, location, uid)
            ds.ImagePositionPatient = _ds_list(normal * location + np.array([-40.0, -30.0, 0.0]))
            if case == "quirks":
                ds.PixelData = px.astype("<u2").tobytes()
                ds.compress(
                    JPEGLSLossless, px.astype(np.uint16), encoding_plugin="pyjpegls", generate_instance_uid=False
                )
            ds.save_as(path, enforce_file_format=True)
            entry["files"].append(path.relative_to(root).as_posix())
            entry["images"].append({"sop_uid": uid, "slice": k, "phase": t, "file": entry["files"][-1]})
            if str(ds.SeriesInstanceUID) not in entry["series_uids"]:
                entry["series_uids"].append(str(ds.SeriesInstanceUID))
            if case == "quirks":  # the next image starts from the uncompressed template
                ds.file_meta.TransferSyntaxUID = ph.ExplicitVRLittleEndian
        manifest["cases"][case] = entry
    return manifest


def _write_multiframe(ds, path: Path, frames, entry: dict, cfg: PhantomConfig, p: int) -> None:
    """An Enhanced MR image (PS3.3 A.36.2): every slice × phase a frame; geometry in the functional groups
    (shared: pixel measures, orientation; per frame: position, temporal position, trigger delay)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(**kw) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.NumberOfFrames = len(frames)
    shared = item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=ds.PixelSpacing, SliceThickness="8")]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        item(
            PlanePositionSequence=Sequence([item(ImagePositionPatient=["-40", "-30", f"{-10.0 * k:.3f}"])]),
            FrameContentSequence=Sequence(
                [item(TemporalPositionIndex=t + 1, StackID="1", InStackPositionNumber=k + 1)]
            ),
            CardiacSynchronizationSequence=Sequence(
                [item(NominalCardiacTriggerDelayTime=1000.0 * t / len({f[1] for f in frames}))]
            ),
        )
        for k, t, _ in frames
    )
    for kw in ("PixelSpacing", "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices", "TriggerTime"):
        if kw in ds:
            delattr(ds, kw)
    uid = ph._uid("scanner", cfg.seed, p, "enhanced")
    path.parent.mkdir(parents=True, exist_ok=True)
    ph._write_dicom(ds, path, np.stack([f[2] for f in frames]), 1, 0.0, uid)
    del ds.ImagePositionPatient, ds.SliceLocation  # per frame only (_write_dicom writes single-frame images)
    ds.save_as(path, enforce_file_format=True)
    rel = path.relative_to(path.parents[1]).as_posix()
    entry["files"].append(rel)
    entry["series_uids"].append(str(ds.SeriesInstanceUID))
    entry["images"] = [
        {"sop_uid": uid, "frame": i + 1, "slice": k, "phase": t, "file": rel} for i, (k, t, _) in enumerate(frames)
    ]
