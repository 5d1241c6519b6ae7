"""Areas and volumes of predicted masks, and the LV function of a cine series (volumes.csv, series.json).

* **Area** of a structure on a slice: ``A = n · Δrow · Δcol`` mm², ``n`` its pixels on the native grid and
  ``(Δrow, Δcol)`` the image's PixelSpacing (1.0 mm where it has none, as ingest assumes).
* **Slice spacing** ``d`` (mm), the first that applies: ``image_position``: the median of the gaps between
  the distinct positions along the slice normal (`geometry.distinct_positions`), with a
  ``predict_irregular_spacing`` warning when the gaps differ by more than 0.1 mm + 1 %; else
  ``spacing_between_slices`` (SpacingBetweenSlices); else ``slice_thickness`` (SliceThickness); else none
  (areas only, ``predict_no_spacing``). Which one was used is written beside the value.
* **Phases**: slice and phase of each image by the cine grouping rule of `geometry.assign_phases`; volumes
  exist only when the phases are even (every slice holds every phase once; else ``predict_phases_uneven``).
* **Volume** of a structure in a phase: ``V = Σ A_i · d / 1000`` mL over the phase's slices (the summation
  of discs; no correction for partial volume or the basal slice).
* **LV function** (`function`), with two or more phases and an LV cavity segment: end-diastole (ED) = the
  phase of the largest cavity volume, end-systole (ES) = the phase of the smallest (volume-based, as when
  the ECG trigger is unreliable; Schulz-Menger et al., "Standardized image interpretation and
  post-processing in CMR", JCMR 2020, pick ED/ES by the largest/smallest blood pool); EDV, ESV,
  stroke volume ``SV = EDV − ESV`` and ejection fraction ``EF = 100 · SV / EDV`` %.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from segsweep.apply.geometry import Phases, distinct_positions

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
    "ef_percent",
    "note",
)
CAVITY = "lv_cavity"


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
    phase_rule: str = "none"

    @property
    def function(self) -> dict | None:
        return function(self.volumes, self.structures)

    def to_json(self) -> dict:
        return {
            "structures": list(self.structures),
            "slice_spacing_mm": self.spacing.spacing_mm,
            "spacing_source": self.spacing.source,
            "spacing_irregular": self.spacing.irregular,
            "phase_rule": self.phase_rule,
            "n_phases": None if self.volumes is None else len(self.volumes),
            "volumes_ml": self.volumes,
            "function": self.function,
        }


def function(volumes: Sequence[Mapping[str, float]] | None, structures: Sequence[str]) -> dict | None:
    """ED/ES phases, EDV, ESV, SV (mL) and EF (%) from the cavity volumes per phase (module docstring);
    None with fewer than two phases, no cavity segment or an empty cavity at ED."""
    if not volumes or len(volumes) < 2 or CAVITY not in structures:
        return None
    v = [float(x[CAVITY]) for x in volumes]
    ed, es = int(np.argmax(v)), int(np.argmin(v))
    if v[ed] <= 0:
        return None
    return {
        "structure": CAVITY,
        "ed_phase": ed,
        "es_phase": es,
        "edv_ml": v[ed],
        "esv_ml": v[es],
        "sv_ml": v[ed] - v[es],
        "ef_percent": 100.0 * (v[ed] - v[es]) / v[ed],
        "rule": "ED = phase of the largest LV cavity volume, ES = of the smallest",
    }


def measure(
    masks: Sequence[np.ndarray],
    labels: Mapping[str, int],
    pixel_spacings: Sequence[Sequence[float]],
    phases: Phases,
    spacing: SliceSpacing,
) -> SeriesVolumes:
    """Areas and volumes of label masks (one per image, in the order of ``phases``); ``labels``: structure →
    value."""
    areas = [{s: area_mm2(m == v, sp) for s, v in labels.items()} for m, sp in zip(masks, pixel_spacings)]
    volumes = None
    if phases.even and spacing.spacing_mm is not None:
        volumes = [
            {s: sum(a[s] for a, p in zip(areas, phases.phase) if p == k) * spacing.spacing_mm / 1000.0 for s in labels}
            for k in range(phases.n_phases)
        ]
    return SeriesVolumes(tuple(labels), areas, list(phases.phase), list(phases.slice), spacing, volumes, phases.rule)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def volumes_csv(v: SeriesVolumes, locations: Sequence[float | None]) -> str:
    """volumes.csv: a ``slice`` row per image and structure (area), then a ``series`` row per phase and
    structure (volume), then, where `function` gives them, ``end_diastole`` / ``end_systole`` (volume,
    phase) and ``ejection_fraction`` (``ef_percent``) rows; spacing and its source on every row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(VOLUME_COLUMNS)
    sp, src = _num(v.spacing.spacing_mm), v.spacing.source
    for i, a in enumerate(v.areas):
        ph = "" if v.phase is None else v.phase[i]
        sl = "" if v.slice is None else v.slice[i]
        for s in v.structures:
            w.writerow(["slice", i, ph, sl, _num(locations[i]), s, _num(a[s]), "", sp, src, "", ""])
    for k, vol in enumerate(v.volumes or []):
        for s in v.structures:
            w.writerow(["series", "", k, "", "", s, "", _num(vol[s]), sp, src, "", ""])
    f = v.function
    if f is not None:  # LV function: ED, ES volumes and the EF, with how ED/ES were picked
        w.writerow(["end_diastole", "", f["ed_phase"], "", "", CAVITY, "", _num(f["edv_ml"]), sp, src, "", f["rule"]])
        w.writerow(["end_systole", "", f["es_phase"], "", "", CAVITY, "", _num(f["esv_ml"]), sp, src, "", f["rule"]])
        w.writerow(["ejection_fraction", "", "", "", "", CAVITY, "", "", sp, src, _num(f["ef_percent"]), f["rule"]])
    return buf.getvalue()
