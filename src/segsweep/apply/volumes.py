"""Areas and volumes of predicted masks (volumes.csv, series.json).

* **Area** of a structure on a slice: ``A = n · Δrow · Δcol`` mm², ``n`` its pixels on the native grid and
  ``(Δrow, Δcol)`` the image's PixelSpacing (1.0 mm where it has none, as ingest assumes).
* **Slice spacing** ``d`` (mm), the first that applies: ``image_position``: the median of the gaps between
  the distinct positions along the slice normal (`discover`; positions within 0.01 mm are one), with a
  ``predict_irregular_spacing`` warning when the gaps differ by more than 0.1 mm + 1 %; else
  ``spacing_between_slices`` (SpacingBetweenSlices); else ``slice_thickness`` (SliceThickness); else none
  (areas only, ``predict_no_spacing``). Which one was used is written beside the value.
* **Phases**: cine series hold several images per position. When every position holds the same number
  ``P`` of images, image ``k`` at a position (in TriggerTime / InstanceNumber order) belongs to phase ``k``;
  otherwise no volume is given (``predict_phases_uneven``).
* **Volume** of a structure in a phase: ``V = Σ A_i · d / 1000`` mL over the phase's slices (the summation
  of discs; no correction for partial volume or the basal slice).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VOLUME_COLUMNS = (
    "row",
    "index",
    "phase",
    "slice",
    "position_mm",
    "structure",
    "area_mm2",
    "volume_ml",
    "slice_spacing_mm",
    "spacing_source",
)
POSITION_TOL_MM = 0.01


@dataclass(frozen=True)
class SliceSpacing:
    spacing_mm: float | None
    source: str  # image_position | spacing_between_slices | slice_thickness | none
    irregular: bool = False
    gaps_mm: tuple[float, ...] = ()


def _positive(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def distinct_positions(locations: Sequence[float | None]) -> list[float]:
    vals = sorted(v for v in locations if v is not None)
    out: list[float] = []
    for v in vals:
        if not out or v - out[-1] > POSITION_TOL_MM:
            out.append(v)
    return out


def slice_spacing(locations: Sequence[float | None], between=None, thickness=None) -> SliceSpacing:
    """The slice spacing of a series (module docstring) from its images' positions along the normal and
    its SpacingBetweenSlices / SliceThickness header values."""
    pos = distinct_positions(locations) if all(v is not None for v in locations) else []
    if len(pos) >= 2:
        gaps = np.diff(pos)
        d = float(np.median(gaps))
        irregular = float(gaps.max() - gaps.min()) > 0.1 + 0.01 * d
        return SliceSpacing(d, "image_position", irregular, tuple(float(g) for g in gaps))
    if (d := _positive(between)) is not None:
        return SliceSpacing(d, "spacing_between_slices")
    if (d := _positive(thickness)) is not None:
        return SliceSpacing(d, "slice_thickness")
    return SliceSpacing(None, "none")


def phases(locations: Sequence[float | None]) -> tuple[list[int], list[int]] | None:
    """(phase, slice) of each image (images in series order: by position, then time), or None when the
    positions hold different numbers of images. Without positions every image is its own slice, phase 0."""
    if not all(v is not None for v in locations):
        return [0] * len(locations), list(range(len(locations)))
    pos = distinct_positions(locations)
    slice_of = [int(np.argmin([abs(v - p) for p in pos])) for v in locations]
    counts = np.bincount(slice_of, minlength=len(pos))
    if len(set(counts.tolist())) > 1:
        return None
    seen: dict[int, int] = {}
    phase = []
    for s in slice_of:
        phase.append(seen.get(s, 0))
        seen[s] = seen.get(s, 0) + 1
    return phase, slice_of


def area_mm2(mask: np.ndarray, pixel_spacing: Sequence[float]) -> float:
    return float(np.count_nonzero(mask)) * float(pixel_spacing[0]) * float(pixel_spacing[1])


@dataclass
class SeriesVolumes:
    """Per image: areas of each structure; per phase: volumes (None without spacing or phases)."""

    structures: tuple[str, ...]
    areas: list[dict[str, float]]  # per image, structure → mm²
    phase: list[int] | None
    slice: list[int] | None
    spacing: SliceSpacing
    volumes: list[dict[str, float]] | None  # per phase, structure → mL

    def to_json(self) -> dict:
        return {
            "structures": list(self.structures),
            "slice_spacing_mm": self.spacing.spacing_mm,
            "spacing_source": self.spacing.source,
            "spacing_irregular": self.spacing.irregular,
            "n_phases": None if self.volumes is None else len(self.volumes),
            "volumes_ml": self.volumes,
        }


def measure(
    masks: Sequence[np.ndarray],
    labels: Mapping[str, int],
    pixel_spacings: Sequence[Sequence[float]],
    locations: Sequence[float | None],
    spacing: SliceSpacing,
) -> SeriesVolumes:
    """Areas and volumes of label masks (one per image, in series order); ``labels``: structure → value."""
    areas = [{s: area_mm2(m == v, sp) for s, v in labels.items()} for m, sp in zip(masks, pixel_spacings)]
    ph = phases(locations)
    volumes = None
    if ph is not None and spacing.spacing_mm is not None:
        n = max(ph[0]) + 1 if ph[0] else 0
        volumes = [
            {s: sum(a[s] for a, p in zip(areas, ph[0]) if p == k) * spacing.spacing_mm / 1000.0 for s in labels}
            for k in range(n)
        ]
    return SeriesVolumes(
        tuple(labels), areas, None if ph is None else ph[0], None if ph is None else ph[1], spacing, volumes
    )


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def volumes_csv(v: SeriesVolumes, locations: Sequence[float | None]) -> str:
    """volumes.csv: a ``slice`` row per image and structure (area), then a ``series`` row per phase and
    structure (volume); spacing and its source on every row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(VOLUME_COLUMNS)
    sp, src = _num(v.spacing.spacing_mm), v.spacing.source
    for i, a in enumerate(v.areas):
        ph = "" if v.phase is None else v.phase[i]
        sl = "" if v.slice is None else v.slice[i]
        for s in v.structures:
            w.writerow(["slice", i, ph, sl, _num(locations[i]), s, _num(a[s]), "", sp, src])
    for k, vol in enumerate(v.volumes or []):
        for s in v.structures:
            w.writerow(["series", "", k, "", "", s, "", _num(vol[s]), sp, src])
    return buf.getvalue()
