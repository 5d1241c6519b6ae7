"""Deterministic synthetic short-axis cine MRI: real DICOM files + manual-contour text files (or what a
layout's ``PhantomPaths.write`` makes of the same slices: an RTSTRUCT per series, NIfTI volumes).

Each patient is a stack of short-axis slices from base to apex. An image is painted from smooth analytic
shapes in pixel coordinates (x = column, y = row; pixel centres at integer coordinates, as in
``segsweep.contours``):

- body: an ellipse of soft tissue with a bright subcutaneous-fat rim, two dark lungs, a spine, the
  descending aorta, and the liver, which enters the lower left of the field towards the apex;
- left ventricle: cavity boundary ``r_endo(θ) = R (1 + e cos 2(θ − φ) + Σ_{m=3,4} a_m cos(mθ + ψ_m))``, the
  epicardium ``r_epi(θ) = r_endo(θ) + T (1 + 0.15 cos(θ − φ_T))``; bright blood, dark myocardium, two
  papillary muscles inside the cavity (inside the inner contour, as in the Sunnybrook convention), and a
  partial ring of epicardial fat;
- right ventricle: a crescent (ellipse minus the LV) on the septal side with a thin wall;
- base → apex: R shrinks as ``1 − 0.6 f^1.3`` (f = slice / (slices − 1)), the RV fades out, the centre drifts;
- acquisition: a smooth multiplicative bias field ``exp(polynomial of degree 2)``, low-frequency texture,
  and Rician noise ``|s + n₁ + i n₂|`` with Gaussian n₁, n₂ (the magnitude of complex Gaussian noise).

Edges are anti-aliased over one pixel by the signed radial distance; the 0.5-level of the cavity and of the
epicardium is the analytic curve that the contour files sample (one point per ~1 px, 2 decimals), so the
files trace the painted boundaries (papillary muscles and the RV do not move them).

Every random choice comes from ``numpy.random.default_rng([seed, patient])``: a patient does not change
when others are added, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from segsweep.data.config import PhantomConfig
from segsweep.data.layouts import PhantomPatient, PhantomSlice, phantom_paths
from segsweep.errors import DataError

# Fake patient-identifying header values (overridable with ``phi``: a test plants distinctive strings and
# checks that none reaches any output). "{i}" is replaced by the patient number (1, 2, ...).
PHI_DEFAULTS = {
    "PatientName": "Phantom^Patient{i}",
    "PatientID": "PHANTOM-{i:04d}",
    "PatientBirthDate": "19700101",
    "StudyDate": "20200101",
    "InstitutionName": "Phantom General Hospital",
    "ReferringPhysicianName": "Doe^Referring",
}
_UID_ROOT = "segsweep-phantom-v1"


def _fill(template: str, i: int) -> str:
    """Replace ``{i}`` / ``{i:0Nd}`` by the patient number (other text, braces included, kept as is)."""
    return _PLACEHOLDER.sub(lambda m: f"{i:0{int(m.group(1))}d}" if m.group(1) else str(i), template)


_PLACEHOLDER = re.compile(r"\{i(?::0(\d)d)?\}")


# ----------------------------------------------------------------------------------------- anatomy
def _patient_params(rng: np.random.Generator, rows: int, cols: int) -> dict:
    m = min(rows, cols)
    return {
        "spacing": 150.0 / m * rng.uniform(0.9, 1.1),  # mm; ~0.7 mm at 216 columns (RVSC-like FOV)
        "centre": (cols * rng.uniform(0.46, 0.58), rows * rng.uniform(0.40, 0.52)),
        "R": m * rng.uniform(0.11, 0.16),  # endocardial radius at the base
        "T": m * rng.uniform(0.04, 0.055),  # wall thickness
        "ecc": rng.uniform(0.0, 0.12),
        "phi": rng.uniform(0, math.pi),
        "harm": rng.normal(0, 0.025, 2),
        "harm_phase": rng.uniform(0, 2 * math.pi, 2),
        "phi_t": rng.uniform(0, 2 * math.pi),
        "rv_dir": math.pi + rng.uniform(-0.6, 0.1),  # septal side: image left, a little anterior (up)
        "rv_size": rng.uniform(1.0, 1.35),
        "pap": rng.uniform(0, 2 * math.pi),
        "fat_arc": rng.uniform(0, 2 * math.pi),
        "body": (rng.uniform(0.46, 0.55) * rows, rng.uniform(0.52, 0.62) * cols),
        "body_c": (cols * rng.uniform(0.47, 0.53), rows * rng.uniform(0.50, 0.56)),
        "contrast": {
            "blood": rng.uniform(0.85, 1.0),
            "myo": rng.uniform(0.22, 0.34),
            "tissue": rng.uniform(0.32, 0.42),
            "fat": rng.uniform(0.75, 0.92),
            "lung": rng.uniform(0.03, 0.08),
            "liver": rng.uniform(0.40, 0.5),
        },
        "bias": rng.normal(0, 0.18, 5),
        "signal": rng.uniform(600, 1600),
        "noise": rng.uniform(0.02, 0.045),
        "rescale": [(1.0, 0.0), (1.0, 0.0), (2.0, 0.0), (0.5, 0.0)][int(rng.integers(4))],
        "drift": rng.normal(0, m * 0.006, (64, 2)).cumsum(axis=0),
    }


def _soft_ellipse(X, Y, cx, cy, a, b, angle=0.0):
    """Coverage in [0, 1] of an ellipse (semi-axes a along x, b along y, rotated), 1-px anti-aliased."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = X - np.float32(cx), Y - np.float32(cy)
    u = np.float32(c / a) * dx + np.float32(s / a) * dy
    v = np.float32(-s / b) * dx + np.float32(c / b) * dy
    d = (np.sqrt(u * u + v * v) - 1) * np.float32(min(a, b))  # ≈ signed distance in pixels
    return np.clip(0.5 - d, 0, 1)


def _paint(img, X, Y, value, cx, cy, a, b, angle=0.0, within=None):
    """Paint an ellipse of intensity ``value`` (array or scalar) into ``img``, on its bounding box only."""
    h, w = img.shape
    ox, oy = int(X[0, 0]), int(Y[0, 0])  # img may be a window of the full image
    r = max(a, b) + 2
    y0, y1 = max(0, int(cy - r) - oy), min(h, int(cy + r) + 2 - oy)
    x0, x1 = max(0, int(cx - r) - ox), min(w, int(cx + r) + 2 - ox)
    if y0 >= y1 or x0 >= x1:
        return
    sl = (slice(y0, y1), slice(x0, x1))
    cov = _soft_ellipse(X[sl], Y[sl], cx, cy, a, b, angle)
    if within is not None:
        cov = cov * within[sl]
    val = value[sl] if isinstance(value, np.ndarray) else value
    img[sl] = img[sl] * (1 - cov) + cov * val


def _radius_z(z, R, p, jitter):
    """r_endo(θ) from z = e^{iθ} (powers of z instead of trigonometric calls)."""
    z2 = z * z
    r = 1 + p["ecc"] * (z2 * np.exp(-2j * p["phi"])).real
    zm = z2
    for k in range(2):
        zm = zm * z  # z^3, z^4
        r = r + (p["harm"][k] + jitter[k]) * (zm * np.exp(1j * p["harm_phase"][k])).real
    return R * r


def _wall_z(z, T, p):
    return T * (1 + 0.15 * (z * np.exp(-1j * p["phi_t"])).real)


def _slice_geometry(p: dict, k: int, n: int, rng: np.random.Generator) -> dict:
    f = k / (n - 1) if n > 1 else 0.0
    drift = p["drift"][k % len(p["drift"])]
    return {
        "f": f,
        "cx": p["centre"][0] + drift[0],
        "cy": p["centre"][1] + drift[1],
        "R": p["R"] * (1 - 0.6 * f**1.3),
        "T": p["T"] * (1 + 0.2 * f),
        "jitter": rng.normal(0, 0.01, 2),
    }


def contour_points(p: dict, g: dict, kind: str) -> np.ndarray:
    """Polygon (x, y) of the inner (``"i"``) or outer (``"o"``) contour, ~1 px between points."""
    r_mean = g["R"] + (g["T"] if kind == "o" else 0.0)
    n = max(24, int(round(2 * math.pi * r_mean)))
    theta = np.linspace(0, 2 * math.pi, n, endpoint=False)
    z = np.exp(1j * theta)
    r = _radius_z(z, g["R"], p, g["jitter"])
    if kind == "o":
        r = r + _wall_z(z, g["T"], p)
    return np.stack([g["cx"] + r * np.cos(theta), g["cy"] + r * np.sin(theta)], axis=1)


def _background(p: dict, rows: int, cols: int, X, Y, rng) -> dict:
    """Per-patient static layers (computed once; slices reuse them)."""
    c = p["contrast"]
    by, bx = p["body"]
    bcx, bcy = p["body_c"]
    body = _soft_ellipse(X, Y, bcx, bcy, bx, by)
    inner = _soft_ellipse(X, Y, bcx, bcy, bx - 0.035 * cols, by - 0.035 * rows)
    # low-frequency texture: a coarse random grid, smoothly upsampled
    tex = cv2.resize(
        rng.normal(0, 1, (max(2, rows // 24), max(2, cols // 24))).astype(np.float32),
        (cols, rows),
        interpolation=cv2.INTER_CUBIC,
    )
    base = (body - inner) * np.float32(c["fat"]) + inner * np.float32(c["tissue"]) * (1 + 0.08 * tex)
    cx, cy = p["centre"]
    lung_l = _soft_ellipse(X, Y, cx - 0.36 * cols, cy - 0.05 * rows, 0.13 * cols, 0.26 * rows, 0.25)
    lung_r = _soft_ellipse(X, Y, cx + 0.33 * cols, cy - 0.08 * rows, 0.11 * cols, 0.24 * rows, -0.3)
    lungs = np.maximum(lung_l, lung_r) * inner
    base = base * (1 - lungs) + lungs * np.float32(c["lung"]) * (1 + 0.3 * tex)
    _paint(base, X, Y, 0.5 * c["tissue"], bcx, bcy + by * 0.8, 0.06 * cols, 0.05 * rows)  # spine
    _paint(base, X, Y, 0.9 * c["blood"], bcx + 0.05 * cols, bcy + by * 0.6, 0.03 * cols, 0.03 * cols)  # aorta
    u, v = (X / cols) * 2 - 1, (Y / rows) * 2 - 1
    b = p["bias"].astype(np.float32)
    bias = np.exp(b[0] * u + b[1] * v + b[2] * u * u + b[3] * v * v + b[4] * u * v)
    return {
        "base": base.astype(np.float32),
        "bias": bias.astype(np.float32),
        "tex": tex,
        "liver_centre": (bcx - 0.22 * cols, bcy + 0.28 * rows),
    }


def render(p: dict, g: dict, bg: dict, X, Y) -> np.ndarray:
    """One slice: float32 image (arbitrary units, 0..~1.2) before noise."""
    c = p["contrast"]
    img = bg["base"].copy()
    rows, cols = X.shape
    if g["f"] > 0.45:  # the liver appears in the inferior slices
        s = (g["f"] - 0.45) / 0.55
        lcx, lcy = bg["liver_centre"]
        _paint(
            img,
            X,
            Y,
            c["liver"] * (1 + 0.05 * bg["tex"]),
            lcx,
            lcy,
            0.2 * cols * (0.4 + s),
            0.15 * rows * (0.4 + s),
            0.3,
        )
    # the heart is painted inside its bounding box only
    R, T = g["R"], g["T"]
    amp = 1 + p["ecc"] + float(np.abs(p["harm"]).sum()) + 0.05
    rv_scale = p["rv_size"] * max(0.0, 1 - 1.1 * g["f"])
    reach = max((R * amp + 1.15 * T + 5), (0.75 + 1.25 * rv_scale) * (R + T) + 6)
    y0, y1 = max(0, int(g["cy"] - reach)), min(rows, int(g["cy"] + reach) + 2)
    x0, x1 = max(0, int(g["cx"] - reach)), min(cols, int(g["cx"] + reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return img * bg["bias"]
    sl = (slice(y0, y1), slice(x0, x1))
    Xw, Yw, win, tex = X[sl], Y[sl], img[sl], bg["tex"][sl]
    dx, dy = Xw - np.float32(g["cx"]), Yw - np.float32(g["cy"])
    rho = np.sqrt(dx * dx + dy * dy)
    z = (dx + 1j * dy) / np.maximum(rho, np.float32(1e-6))
    r_endo = _radius_z(z, R, p, g["jitter"]).astype(np.float32)
    r_epi = r_endo + _wall_z(z, T, p).astype(np.float32)
    blood = np.clip(r_endo - rho + 0.5, 0, 1)
    epi = np.clip(r_epi - rho + 0.5, 0, 1)
    if rv_scale > 0.05:
        # RV: an ellipse centred on the septal side that wraps around the LV; its cavity excludes the LV
        # (+2 px septum), so what remains is a crescent with a ~2.5 px wall
        d = 0.75 * (R + T)
        rcx, rcy = g["cx"] + d * math.cos(p["rv_dir"]), g["cy"] + d * math.sin(p["rv_dir"])
        a, b = 1.25 * (R + T) * rv_scale, 0.75 * (R + T) * rv_scale
        ang = p["rv_dir"] + math.pi / 2
        rv_out = _soft_ellipse(Xw, Yw, rcx, rcy, a + 2.5, b + 2.5, ang) * (1 - epi)
        lv_guard = np.clip(r_epi + 2.0 - rho + 0.5, 0, 1)
        rv_cav = _soft_ellipse(Xw, Yw, rcx, rcy, a, b, ang) * (1 - lv_guard)
        win[:] = win * (1 - rv_out) + rv_out * np.float32(c["myo"])
        win[:] = win * (1 - rv_cav) + rv_cav * np.float32(c["blood"] * 0.95)
    # epicardial fat on part of the circumference
    arc = np.clip((z * np.exp(-1j * p["fat_arc"])).real.astype(np.float32) * 2, 0, 1)
    fat = np.clip(r_epi + 3.0 - rho + 0.5, 0, 1) * (1 - epi) * arc
    win[:] = win * (1 - fat) + fat * np.float32(c["fat"])
    win[:] = win * (1 - epi) + epi * np.float32(c["myo"]) * (1 + 0.05 * tex)
    win[:] = win * (1 - blood) + blood * np.float32(c["blood"])
    # papillary muscles: dark blobs inside the cavity, near the wall
    for off in (0.0, 1.9):
        ang = p["pap"] + off
        pr = 0.62 * R
        _paint(
            win,
            Xw,
            Yw,
            c["myo"] * 1.2,
            g["cx"] + pr * math.cos(ang),
            g["cy"] + pr * math.sin(ang),
            0.16 * R + 0.5,
            0.13 * R + 0.5,
            ang,
            within=blood,
        )
    return img * bg["bias"]


def _acquire(img: np.ndarray, p: dict, rng) -> np.ndarray:
    """Signal scaling + Rician noise → stored uint16 (12 bits) given the patient's rescale slope/intercept."""
    s = p["signal"]
    sigma = p["noise"] * s
    re_ = img * np.float32(s) + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    im_ = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    mag = np.sqrt(re_ * re_ + im_ * im_)
    slope, intercept = p["rescale"]
    stored = np.rint((mag - intercept) / slope)
    return np.clip(stored, 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------------------------- DICOM
def _uid(*parts) -> str:
    """Deterministic UID: "2.25." + a 128-bit integer (the UUID-derived UID form of DICOM PS3.5 B.2),
    here taken from SHA-256 of the parts (pydicom's generate_uid(prefix=None) would be random)."""
    digest = hashlib.sha256("|".join([_UID_ROOT, *map(str, parts)]).encode()).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


def _template(cfg: PhantomConfig, p: int, params: dict, phi: Mapping[str, str], series: int, desc: str):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = phi["StudyDate"]
    ds.StudyTime = "101500"
    ds.Modality = "MR"
    ds.Manufacturer = "segsweep phantom"
    ds.InstitutionName = phi["InstitutionName"]
    ds.ReferringPhysicianName = phi["ReferringPhysicianName"]
    ds.SeriesDescription = desc
    ds.PatientName = phi["PatientName"]
    ds.PatientID = phi["PatientID"]
    ds.PatientBirthDate = phi["PatientBirthDate"]
    ds.PatientSex = "O"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SS"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = "8"
    ds.SpacingBetweenSlices = "10"
    ds.MagneticFieldStrength = "1.5"
    ds.StudyInstanceUID = _uid(cfg.seed, p, "study")
    ds.SeriesInstanceUID = _uid(cfg.seed, p, "series", series)
    ds.FrameOfReferenceUID = _uid(cfg.seed, p, "frame")
    ds.StudyID = "1"
    ds.SeriesNumber = series
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = cfg.rows
    ds.Columns = cfg.cols
    sp = f"{params['spacing']:.6f}"
    ds.PixelSpacing = [sp, sp]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    slope, intercept = params["rescale"]
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "US"
    return ds


def _write_dicom(ds: Dataset, path: Path, stored: np.ndarray, number: int, location: float, uid: str):
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = number
    ds.SliceLocation = f"{location:.3f}"
    ds.ImagePositionPatient = ["0", "0", f"{location:.3f}"]
    ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _write_contour(path: Path, pts: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in pts))


def _as_written(pts: np.ndarray) -> np.ndarray:
    """The polygon as a contour file holds it (the values of its 2-decimal text)."""
    return np.array([float(f"{v:.2f}") for v in pts.ravel()], dtype=np.float64).reshape(pts.shape)


# ------------------------------------------------------------------------------------------ generate
def _contour_plan(rng, n: int, no_contour_fraction: float) -> list[tuple[bool, bool]]:
    """(has_inner, has_outer) per slice: a share without contours, ~1 in 4 of the rest inner-only;
    at least one slice has both, so every target has data for every patient."""
    n_none = min(n - 1, int(round(no_contour_fraction * n)))
    none = set(rng.choice(n, size=n_none, replace=False).tolist()) if n_none else set()
    plan = []
    for k in range(n):
        if k in none:
            plan.append((False, False))
        else:
            plan.append((True, bool(rng.random() >= 0.25)))
    if not any(i and o for i, o in plan):
        k = next(k for k, (i, _) in enumerate(plan) if i)
        plan[k] = (True, True)
    return plan


MARKER = ".segsweep-phantom"  # not a Snakemake output: survives Snakemake deleting MANIFEST.json before a rerun


def _safe_to_replace(root: Path) -> bool:
    """Only an empty folder or an earlier phantom may be replaced (never a user's data)."""
    if not root.exists():
        return True
    return root.is_dir() and (
        (root / MARKER).is_file() or (root / "MANIFEST.json").is_file() or not any(root.iterdir())
    )


def generate(cfg: PhantomConfig, root: str | Path, phi: Mapping[str, str] | None = None) -> dict:
    """Write a phantom data set in ``cfg.layout`` under ``root`` (replacing an earlier phantom there).

    Returns the manifest (also written to ``root/MANIFEST.json``; it holds no header values). The tree is
    built in a sibling temporary folder and renamed into place, so an interrupted run leaves no half tree.
    """
    root = Path(root)
    unknown = set(phi or {}) - set(PHI_DEFAULTS)
    if unknown:
        raise ValueError(f"phi: unknown keys {sorted(unknown)} (known: {', '.join(PHI_DEFAULTS)})")
    if not _safe_to_replace(root):
        raise DataError(
            f"phantom root '{root}' exists and is not an earlier phantom (no MANIFEST.json); refusing to replace it"
        )
    paths = phantom_paths(cfg.layout)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    rows, cols = cfg.rows, cfg.cols
    Y, X = np.mgrid[0:rows, 0:cols].astype(np.float32)
    patients, index = [], []
    n_contours = 0
    try:
        for p in range(1, cfg.patients + 1):
            rng = np.random.default_rng([cfg.seed, p])
            params = _patient_params(rng, rows, cols)
            values = {k: _fill(v, p) for k, v in {**PHI_DEFAULTS, **(phi or {})}.items()}
            bg = _background(params, rows, cols, X, Y, rng)
            plan = _contour_plan(rng, cfg.slices, cfg.no_contour_fraction)
            ds = _template(cfg, p, params, values, series=400 + p, desc="cine SAX (phantom)")
            numbers, slices = [], []
            for k in range(cfg.slices):
                g = _slice_geometry(params, k, cfg.slices, rng)
                img = render(params, g, bg, X, Y)
                n = paths.number(p, k)
                stored, uid = _acquire(img, params, rng), _uid(cfg.seed, p, "image", k)
                image = paths.image(tmp, p, n) if paths.image is not None else None
                if image is not None:
                    _write_dicom(ds, image, stored, n + paths.instance_offset, -10.0 * k, uid)
                has_i, has_o = plan[k]
                drawn = {}
                for kind, has in (("i", has_i), ("o", has_o)):
                    if has:
                        pts = contour_points(params, g, kind)
                        if paths.contour is not None:
                            _write_contour(paths.contour(tmp, p, n, kind), pts)
                        if paths.write is not None:
                            drawn[kind] = _as_written(pts)
                        n_contours += 1
                numbers.append((n, has_i, has_o))
                if paths.write is not None:
                    slices.append(PhantomSlice(n, image, stored, -10.0 * k, uid, drawn.get("i"), drawn.get("o")))
            if paths.write is not None:  # the layout writes its own files (an RTSTRUCT, NIfTI volumes)
                paths.write(tmp, PhantomPatient(p, ds, slices, functools.partial(_uid, cfg.seed, p)))
            extra = paths.extra_images(tmp, p)
            if extra:  # a decoy series (localizer) the layout must not confuse with the cine series
                loc = _template(cfg, p, params, values, series=1, desc="localizer (phantom)")
                for j, path in enumerate(extra):
                    noise = np.clip(rng.normal(300, 60, (rows, cols)), 0, 4095).astype(np.uint16)
                    _write_dicom(loc, path, noise, j + 1, 0.0, _uid(cfg.seed, p, "localizer", j))
            index.append((p, numbers))
            patients.append(
                {
                    "patient": p,
                    "images": cfg.slices,
                    "contoured": sum(1 for _, i, _o in numbers if i or _o),
                    "inner_only": sum(1 for _, i, o in numbers if i and not o),
                    "pixel_spacing_mm": round(params["spacing"], 6),
                    "extra_images": len(extra),
                }
            )
        paths.finish(tmp, index)
        manifest = {
            "generator": "segsweep.phantom",
            "format": 1,
            "layout": cfg.layout,
            "config": asdict(cfg),
            "n_patients": cfg.patients,
            "n_images": cfg.patients * cfg.slices,
            "n_contours": n_contours,
            "patients": patients,
        }
        (tmp / MARKER).write_text("written by segsweep.phantom; this folder is replaced on regeneration\n")
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ------------------------------------------------------------------------------- unlabelled series
def generate_series(cfg: PhantomConfig, root: str | Path, phi: Mapping[str, str] | None = None, mixed: bool = False):
    """An unlabelled DICOM root for ``predict`` (docs/predict.md): ``caseNN/MR/IMxxxx.dcm``, one short-axis
    series per patient drawn exactly as `generate` draws it (same images, headers and UIDs for the same
    seed), no contours. File numbers are shuffled, so only ImagePositionPatient gives the slice order.

    ``mixed`` adds what a real export holds besides the cine stack: a CT series (``case01/CT``), an MR
    file cut short (an extra slice of patient 1's series, ``case01/MR/IM9999.dcm``), a non-image DICOM
    object (a Basic Text SR, ``case01/SR/SR0001.dcm``), a text file (``case01/notes.txt``) and, for
    patient 2 if any, a series whose images differ in size (``case02/MIXED``). Writes nothing else (no
    manifest: every file under the root is input) and returns, per series, the files written and, for the
    cine series, their SOP Instance UIDs in position order.
    """
    from pydicom.uid import BasicTextSRStorage, CTImageStorage

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows, cols = cfg.rows, cfg.cols
    Y, X = np.mgrid[0:rows, 0:cols].astype(np.float32)
    series = []
    for p in range(1, cfg.patients + 1):
        rng = np.random.default_rng([cfg.seed, p])
        params = _patient_params(rng, rows, cols)
        values = {k: _fill(v, p) for k, v in {**PHI_DEFAULTS, **(phi or {})}.items()}
        bg = _background(params, rows, cols, X, Y, rng)
        _contour_plan(rng, cfg.slices, cfg.no_contour_fraction)  # the same random stream as `generate`
        ds = _template(cfg, p, params, values, series=400 + p, desc="cine SAX (phantom)")
        names = np.random.default_rng([cfg.seed, p, 7]).permutation(cfg.slices)
        files, uids = [], []
        for k in range(cfg.slices):
            g = _slice_geometry(params, k, cfg.slices, rng)
            stored, uid = _acquire(render(params, g, bg, X, Y), params, rng), _uid(cfg.seed, p, "image", k)
            path = root / f"case{p:02d}" / "MR" / f"IM{int(names[k]) + 1:04d}.dcm"
            _write_dicom(ds, path, stored, k + 1, -10.0 * k, uid)
            files.append(path.relative_to(root).as_posix())
            uids.append(uid)
        entry = {"patient": p, "modality": "MR", "series_uid": str(ds.SeriesInstanceUID), "files": files}
        entry["sop_uids"] = uids
        if mixed and p == 1:  # one more slice of this series, cut short
            path = root / "case01" / "MR" / "IM9999.dcm"
            _write_dicom(ds, path, stored, cfg.slices + 1, -10.0 * cfg.slices, _uid(cfg.seed, p, "image", "cut"))
            data = path.read_bytes()
            path.write_bytes(data[: len(data) - stored.nbytes // 2])
            entry["truncated"] = path.relative_to(root).as_posix()
        series.append(entry)
        if not mixed:
            continue
        if p == 1:
            ct = _template(cfg, p, params, values, series=2, desc="CT (phantom)")
            ct.Modality, ct.SOPClassUID = "CT", CTImageStorage
            ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ct.RescaleIntercept, ct.RescaleSlope = "-1024", "1"
            ct_files = []
            for j in range(3):
                path = root / "case01" / "CT" / f"CT{j + 1:04d}.dcm"
                noise = np.clip(rng.normal(1000, 50, (rows, cols)), 0, 4095).astype(np.uint16)
                _write_dicom(ct, path, noise, j + 1, -5.0 * j, _uid(cfg.seed, p, "ct", j))
                ct_files.append(path.relative_to(root).as_posix())
            series.append({"patient": p, "modality": "CT", "series_uid": str(ct.SeriesInstanceUID), "files": ct_files})
            sr = Dataset()
            sr.file_meta = FileMetaDataset()
            sr.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
            sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID = _uid(cfg.seed, p, "sr")
            sr.SOPClassUID, sr.Modality = BasicTextSRStorage, "SR"
            for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "StudyInstanceUID"):
                setattr(sr, kw, getattr(ds, kw))
            sr.SeriesInstanceUID = _uid(cfg.seed, p, "series", "sr")
            path = root / "case01" / "SR" / "SR0001.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            sr.save_as(path, enforce_file_format=True)
            (root / "case01" / "notes.txt").write_text("not a DICOM file\n")
        if p == 2:
            mix = _template(cfg, p, params, values, series=3, desc="mixed sizes (phantom)")
            mix_files = []
            for j, (r, c) in enumerate(((rows, cols), (rows, cols), (rows // 2, cols // 2))):
                mix.Rows, mix.Columns = r, c
                path = root / "case02" / "MIXED" / f"IM{j + 1:04d}.dcm"
                img = np.clip(rng.normal(800, 60, (r, c)), 0, 4095).astype(np.uint16)
                _write_dicom(mix, path, img, j + 1, -10.0 * j, _uid(cfg.seed, p, "mixed", j))
                mix_files.append(path.relative_to(root).as_posix())
            series.append(
                {"patient": p, "modality": "MR", "series_uid": str(mix.SeriesInstanceUID), "files": mix_files}
            )
    return {"generator": "segsweep.phantom.generate_series", "config": asdict(cfg), "mixed": mixed, "series": series}
