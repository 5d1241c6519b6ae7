"""What a study's numbers can and cannot show, said once, up front (its finding in the report's summary):
how many pairs its paired comparisons have, whether the Wilcoxon test can reach significance with them at
all, and about how many seeds (or validation patients) would detect the gap between its best configuration
and the runner-up (`segsweep.analysis.stats.pairs_needed`; docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segsweep.analysis.intervals import patient_values
from segsweep.analysis.ranking import ranked
from segsweep.analysis.stats import ALPHA, MIN_UNITS, POWER, min_pairs_for, pairs, pairs_needed
from segsweep.labels import fmt

MAX_SHOWN = 1000  # beyond this many seeds or patients the number says only "not within reach"


def _alpha_text(m: int) -> str:
    return f"two-sided α = {ALPHA:g}" + (f"/{m} (Holm, {m} comparisons)" if m > 1 else "")


def _about(n: int) -> str:
    return f"about {n}" if n <= MAX_SHOWN else f"more than {MAX_SHOWN}"


def patient_differences(best: Mapping, other: Mapping, cells_dir: Path, value: str) -> np.ndarray:
    """Per validation patient, best − other for the first (seed, fold) both ran, from the runs' per-patient
    values (`aggregate.patient_values`; empty when either run has none)."""
    a = {(r["repeat"], r["fold"]): r for r in best["runs"] if r["value"] is not None}
    b = {(r["repeat"], r["fold"]): r for r in other["runs"] if r["value"] is not None}
    shared = sorted(set(a) & set(b), key=lambda k: tuple(-1 if x is None else x for x in k))
    if not shared:
        return np.array([])
    ra, rb = a[shared[0]], b[shared[0]]
    pa = patient_values(Path(cells_dir) / ra["cell"], value, ra["value"])
    pb = patient_values(Path(cells_dir) / rb["cell"], value, rb["value"])
    if pa is None or pb is None:
        return np.array([])
    xa = {i: v for i, v, w in zip(pa["ids"], pa["values"], pa["weights"]) if w > 0}
    xb = {i: v for i, v, w in zip(pb["ids"], pb["values"], pb["weights"]) if w > 0}
    return np.array([xa[i] - xb[i] for i in sorted(set(xa) & set(xb))], dtype=float)


def evidence(
    groups: Sequence[dict],
    *,
    higher_is_better: bool,
    value: str,
    cells_dir: Path,
    unit: str = "seeds",
) -> list[str]:
    """Sentences for the study's finding in the summary, "What this study can show" (none with fewer than two
    finished configurations).

    The comparisons of a study are Holm-corrected over the m finished configurations other than the best, so
    the estimate uses Holm's strictest level α/m. ``unit`` names a pair: "seeds", "folds" or "seeds/folds".
    The number of seeds needs at least `MIN_UNITS` pairs (their spread); with fewer, the number of validation
    patients that would separate the two networks of the first pair is given instead (paired by patient).
    """
    r = ranked(groups, higher_is_better)
    if len(r) < 2:
        return []
    best, second = r[0], r[1]
    m = len(r) - 1
    alpha = ALPHA / m
    floor = min_pairs_for(alpha)
    _, d = pairs(best, second)
    n_max = max(len(pairs(best, g)[0]) for g in r[1:])
    power = f"{100 * POWER:.0f} % power"
    if d.size >= 2:
        cannot = ", so no difference here can be shown, nor ruled out" if n_max < floor else ""
        out = [
            f"Each comparison with the best pairs at most {n_max} runs ({unit}); at {_alpha_text(m)} the Wilcoxon "
            f"test needs ≥ {floor}{cannot}."
        ]
    else:
        out = [
            "One run per configuration: no paired test, and no measure of seed-to-seed noise, so the ranking may "
            f"be noise; a test at {_alpha_text(m)} needs ≥ {floor} seeds per configuration (repeats)."
        ]
    if d.size >= MIN_UNITS:  # a spread from fewer pairs says nothing
        sd = float(d.std(ddof=1))
        need = pairs_needed(float(d.mean()), sd, alpha)
        if need is None:
            out.append(f"The gap to the runner-up is 0 on average over {d.size} pairs: nothing to detect.")
        else:
            out.append(
                f"The gap to the runner-up, {fmt(abs(float(d.mean())), value)} (sd {fmt(sd, value)} over {d.size} "
                f"pairs), would take {_about(need)} {unit} per configuration to detect ({power}; docs/statistics.md)."
            )
        return out
    # too few pairs to measure the seed spread: how many patients would separate the two trained networks
    dp = patient_differences(best, second, cells_dir, value)
    if dp.size >= MIN_UNITS:
        need = pairs_needed(float(dp.mean()), float(dp.std(ddof=1)), alpha)
        if need is not None:
            which = (
                f"{d.size} pairs do not measure their spread; between one pair of trained networks"
                if d.size >= 2
                else "Between these two trained networks"
            )
            out.append(
                f"{which} alone, the gap to the runner-up, "
                f"{fmt(abs(float(dp.mean())), value)} (sd {fmt(float(dp.std(ddof=1)), value)} over {dp.size} "
                f"validation patients), would take {_about(need)} validation patients to detect ({power}, paired "
                "by patient)."
            )
    return out
