"""Where the images of a series lie, and in which cardiac phase: tolerances and the cine grouping rule.

* **Tolerances** (one place: discovery and the SEG builder use the same ones). Two images share an
  orientation when every direction cosine of their ImageOrientationPatient differs by at most
  ``ORIENTATION_TOL`` (scanners write cosines rounded to about 6 decimals, and cos/sin rounding makes the
  slices of one stack differ by ~1e-6); they share a slice position when their positions along the slice
  normal differ by at most ``POSITION_TOL_MM``.
* **Cine grouping** (`assign_phases`). The location of an image is ``s = ImagePositionPatient · n`` (n = row
  × column direction). Images within ``POSITION_TOL_MM`` of each other are one *slice*. Within a slice the
  images are put in time order by, the first that every image of the series has:
  TemporalPositionIdentifier (rule ``temporal_position``), TriggerTime (``trigger_time``), InstanceNumber
  (``instance_number``); the file path breaks ties. The *phase* of an image is its TemporalPositionIdentifier
  rank among the series' identifiers (the same phase at every slice, also when a slice lacks some), else
  its rank within its slice. The phases are *even* when every slice holds every phase exactly once: only
  then do volumes per phase exist (a slice missing a phase would bias that phase's volume).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ORIENTATION_TOL = 1e-4
POSITION_TOL_MM = 0.01


def same_orientation(a: Sequence[float], b: Sequence[float], tol: float = ORIENTATION_TOL) -> bool:
    """Whether two ImageOrientationPatient values agree within ``tol`` in every direction cosine."""
    return bool(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))) <= tol)


def distinct_positions(locations: Sequence[float | None]) -> list[float]:
    """The slice positions of a series: sorted locations, those within ``POSITION_TOL_MM`` merged."""
    vals = sorted(v for v in locations if v is not None)
    out: list[float] = []
    for v in vals:
        if not out or v - out[-1] > POSITION_TOL_MM:
            out.append(v)
    return out


@dataclass(frozen=True)
class Phases:
    """Per image (input order): its slice index (0 = lowest location) and phase index; the rule used."""

    slice: tuple[int, ...]
    phase: tuple[int, ...]
    rule: str  # temporal_position | trigger_time | instance_number | none (no positions)
    even: bool  # every slice holds every phase once

    @property
    def n_phases(self) -> int:
        return max(self.phase) + 1 if self.phase else 0

    @property
    def n_slices(self) -> int:
        return max(self.slice) + 1 if self.slice else 0

    def order(self) -> list[int]:
        """Image indices in series order: by slice, then phase."""
        return sorted(range(len(self.slice)), key=lambda i: (self.slice[i], self.phase[i]))


def _time_rule(temporal, trigger) -> str:
    if all(t is not None for t in temporal):
        return "temporal_position"
    if all(t is not None for t in trigger):
        return "trigger_time"
    return "instance_number"


def assign_phases(
    locations: Sequence[float | None],
    temporal: Sequence[int | None],
    trigger: Sequence[float | None],
    instance: Sequence[int | None],
    tiebreak: Sequence[str],
) -> Phases:
    """Slice and phase of each image (module docstring). Without a location for every image, each image
    is its own slice in InstanceNumber order, all in phase 0 (rule ``none``)."""
    n = len(locations)
    inf = float("inf")

    def inst(i):
        return instance[i] if instance[i] is not None else inf

    if n == 0:
        return Phases((), (), "none", True)
    if not all(v is not None for v in locations):
        order = sorted(range(n), key=lambda i: (inst(i), tiebreak[i]))
        slices = [0] * n
        for rank, i in enumerate(order):
            slices[i] = rank
        return Phases(tuple(slices), (0,) * n, "none", True)
    pos = distinct_positions(locations)
    slice_of = [int(np.argmin([abs(v - p) for p in pos])) for v in locations]
    rule = _time_rule(temporal, trigger)
    if rule == "temporal_position":
        key = lambda i: (temporal[i], trigger[i] if trigger[i] is not None else inf, inst(i), tiebreak[i])  # noqa: E731
    elif rule == "trigger_time":
        key = lambda i: (trigger[i], inst(i), tiebreak[i])  # noqa: E731
    else:
        key = lambda i: (inst(i), tiebreak[i])  # noqa: E731
    phase = [0] * n
    by_slice: dict[int, list[int]] = {}
    for i in sorted(range(n), key=key):
        by_slice.setdefault(slice_of[i], []).append(i)
    ids = sorted({temporal[i] for i in range(n)}) if rule == "temporal_position" else []
    # identifiers name phases across slices, unless one slice repeats one (then ranks, as without them)
    use_ids = bool(ids) and all(len({temporal[i] for i in m}) == len(m) for m in by_slice.values())
    for members in by_slice.values():
        for rank, i in enumerate(members):
            phase[i] = ids.index(temporal[i]) if use_ids else rank
    n_phases = max(phase) + 1
    even = all(sorted(phase[i] for i in m) == list(range(n_phases)) for m in by_slice.values())
    return Phases(tuple(slice_of), tuple(phase), rule, even)
