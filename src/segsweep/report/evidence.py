"""What a study's numbers can and cannot show, said once at the head of its page: how many pairs its paired
comparisons have, whether the Wilcoxon test can reach significance with them at all, and about how many
seeds (or validation patients) would detect the gap between its best configuration and the runner-up
(`segsweep.analysis.stats.pairs_needed`; docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from segsweep.analysis.aggregate import patient_values
from segsweep.analysis.ranking import ranked
from segsweep.analysis.stats import ALPHA, MIN_UNITS, POWER, min_pairs_for, pairs, pairs_needed
from segsweep.labels import ConfigNames, fmt

MAX_SHOWN = 1000  # beyond this many seeds or patients the number says only "not within reach"


def _alpha_text(m: int) -> str:
    return f"two-sided α = {ALPHA:g}" + (f"/{m} (Holm's first step over {m} comparisons)" if m > 1 else "")


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
    names: ConfigNames,
    cells_dir: Path,
    unit: str = "seeds",
) -> list[str]:
    """Sentences for the head of a study's page, "What this study can show" (none with fewer than two
    finished configurations).

    The comparisons of a study are Holm-corrected over the m finished configurations other than the best, so
    the estimate uses Holm's strictest level α/m. ``unit`` names a pair: "seeds", "folds" or "seeds/folds".
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
    gap = f"the gap between the best and the runner-up ({names.name(second['labels'])})"
    if d.size >= 2:
        sd = float(d.std(ddof=1))
        out = [
            f"Each comparison with the best configuration pairs at most {n_max} runs ({unit}); at {_alpha_text(m)} the Wilcoxon test needs at least {floor} pairs to reach significance"
            + (
                ", so no difference between these configurations can be shown here, and none ruled out."
                if n_max < floor
                else "."
            )
        ]
        need = pairs_needed(float(d.mean()), sd, alpha)
        if need is None:
            out.append(f"Over their {d.size} paired runs, {gap} is 0 on average: no difference to detect.")
        else:
            out.append(
                f"To detect {gap}, {fmt(abs(float(d.mean())), value)} on average with sd {fmt(sd, value)} over "
                f"the {d.size} pairs, {_about(need)} {unit} per configuration would be needed "
                f"({100 * POWER:.0f} % power at that α; normal approximation, docs/statistics.md)."
            )
        return out
    out = [
        "One run per configuration, so no paired test between configurations, and "
        "the seed-to-seed spread (what another training seed gives) is not measured: the ranking may be seed "
        f"noise. At {_alpha_text(m)} the Wilcoxon test needs at least {floor} seeds per configuration "
        "(study key repeats)."
    ]
    dp = patient_differences(best, second, cells_dir, value)
    if dp.size >= MIN_UNITS:  # a spread from fewer patients says nothing
        need = pairs_needed(float(dp.mean()), float(dp.std(ddof=1)), alpha)
        if need is not None:
            out.append(
                f"Between these two trained networks alone, {gap}, {fmt(abs(float(dp.mean())), value)} on average "
                f"with sd {fmt(float(dp.std(ddof=1)), value)} over {dp.size} validation patients, would need "
                f"{_about(need)} validation patients to be detected ({100 * POWER:.0f} % power at that α, paired "
                "by patient); this says nothing about another seed."
            )
    return out
