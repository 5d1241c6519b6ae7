"""Paired comparison of the best configuration of a study against every other configuration.

Runs are paired by (training seed index, fold): two configurations trained with the same seed on the same
fold share initialisation and data order, so their difference removes that source of variation. For each
pair the difference ``d = x_best − x_other`` of the table value (e.g. best validation Dice) is taken.

* **Wilcoxon signed-rank test** (Wilcoxon 1945), two-sided, ``scipy.stats.wilcoxon`` (exact null
  distribution for small samples without ties or zero differences, normal approximation otherwise; zero
  differences are dropped — Wilcoxon's original treatment). With n pairs and no zeros the smallest
  two-sided exact p-value is ``2 / 2**n``; for n < 6 that is above 0.05, so the test *cannot* show a
  difference at the 5 % level whatever the data — the report says so instead of implying "no difference".
* **Bootstrap CI of the mean difference** (percentile bootstrap, Efron & Tibshirani 1993, ch. 13):
  resample the n differences with replacement ``n_boot`` times with a seeded generator, take the
  2.5 and 97.5 percentiles of the resampled means.
* p-values of one study are also adjusted for multiple comparisons with Holm's step-down method
  (Holm 1979): ``p_(i)^adj = max_{j ≤ i} min(1, (m − j + 1) · p_(j))`` over the sorted p-values. Every
  "difference / no difference" note uses the Holm-adjusted p and says so ("Holm-adjusted p = 0.078 over
  5 comparisons"); a raw p never decides a claim.

It also holds the interval of one configuration's mean (`bootstrap_interval`): a percentile bootstrap over
validation patients (and runs, when repeated), which never leaves the metric's range. Units, the two-level
scheme and what the intervals mean: docs/statistics.md.

Fold pairs share training patients, so fold differences are not independent; the p-values are descriptive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from segsweep.analysis.ranking import best_group
from segsweep.labels import fmt

MIN_PAIRS = 2
ALPHA = 0.05
METHOD = (
    "Paired by training seed and fold; difference = best − other. Two-sided Wilcoxon signed-rank test "
    "(scipy.stats.wilcoxon; zero differences dropped) and a seeded percentile bootstrap 95 % CI of the "
    "mean difference; Holm-adjusted p-values across the comparisons of a study, and only the Holm-adjusted p "
    "decides whether a difference is claimed."
)


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided exact Wilcoxon p-value reachable with n non-zero, untied differences: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def min_pairs_for(alpha: float = ALPHA) -> int:
    """Fewest pairs for which the Wilcoxon test can reach p < alpha at all (6 for alpha = 0.05)."""
    n = 1
    while min_wilcoxon_p(n) >= alpha:
        n += 1
    return n


def bootstrap_mean_ci(
    d: Sequence[float], seed: int | Sequence[int], n_boot: int = 10_000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``d`` (seeded, so reproducible)."""
    x = np.asarray(d, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


POWER = 0.8  # 1 − β of the sample-size estimate
WILCOXON_ARE = 3 / math.pi  # the signed-rank test's efficiency relative to the paired t-test, normal data


def pairs_needed(mean_diff: float, sd_diff: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """About how many pairs (seeds, folds or patients) the paired test needs to detect a mean difference
    ``mean_diff`` whose pairs spread with standard deviation ``sd_diff``, two-sided at ``alpha`` with
    probability ``power``.

    Normal approximation of the paired t-test (Chow, Shao & Wang 2008, *Sample Size Calculations in Clinical
    Research*, §3.1): ``n_t = ((z_{1−α/2} + z_{power}) · sd_d / d)²``, divided by the Wilcoxon signed-rank
    test's asymptotic relative efficiency 3/π ≈ 0.955 (Lehmann 1975, *Nonparametrics*, §2.5), rounded up, and
    never below `min_pairs_for` (alpha): fewer pairs cannot reach p < alpha at all. An estimate from the
    observed difference (a "post-hoc" power calculation): it says how much more data a difference of this
    size would take, not that it is real. None when the mean difference is 0 or not finite.
    """
    if not (math.isfinite(mean_diff) and math.isfinite(sd_diff)) or mean_diff == 0:
        return None
    from scipy import stats as sps  # 0.9 s: only the jobs that test or size import it

    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n_t = (z * sd_diff / mean_diff) ** 2
    return max(math.ceil(n_t / WILCOXON_ARE - 1e-9), min_pairs_for(alpha))  # 1e-9: float noise above an integer


# ------------------------------------------------------------------- intervals of a configuration's mean
MIN_UNITS = 3  # fewest resampling units (patients, or runs when there are no per-patient values)
N_BOOT = 10_000
INTERVAL_KEYS = ("ci_low", "ci_high", "ci_unit", "ci_runs", "ci_patients", "ci_sets", "ci_note")
# what each resampling unit is, in words
UNIT_WORDS = {"patients": "validation patients", "runs × patients": "runs × validation patients", "runs": "runs"}


def no_interval(note: str = "", runs: int = 0, patients: int = 0, sets: int = 0) -> dict:
    """The interval fields of a configuration without an interval (``note`` says why)."""
    return {
        "ci_low": None,
        "ci_high": None,
        "ci_unit": None,
        "ci_runs": runs,
        "ci_patients": patients,
        "ci_sets": sets,
        "ci_note": note,
    }


def bootstrap_interval(
    runs: Sequence[Mapping],
    *,
    seed: int | Sequence[int],
    n_boot: int = N_BOOT,
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
    patients_word: str = "validation patient",
) -> dict:
    """Percentile-bootstrap interval of a configuration's mean over its runs (docs/statistics.md).

    The one interval of the project: the tables' validation intervals and the Test set section's test
    intervals (`segsweep.analysis.testset`) both come from here; ``patients_word`` only names the patients in
    the "no interval" note ("test patient").

    Each run is ``{"value": x, "patients": None | {"ids": [...], "values": [...], "weights": [...]}}``: the
    run's value (e.g. its mean per-image validation Dice) and, where known, its per-patient values with their
    weights (slices), so that ``Σ w·v / Σ w`` over the patients is the run's value. One bootstrap replicate:

    * **runs × patients** (every run has per-patient values, ≥ 2 runs): draw R runs with replacement, then
      the patients with replacement — one draw per validation set, shared by the runs on that set (repeats
      validate on the same patients: drawing them anew for each run would treat them as new patients and
      shrink the interval by about √R) — and take the mean over the drawn runs of each run's weighted mean.
    * **patients** (one run with per-patient values): the same with R = 1.
    * **runs** (no per-patient values): the mean of R runs drawn with replacement.

    The interval is the (1 − confidence)/2 and (1 + confidence)/2 quantiles of the replicates (percentile
    method, Efron & Tibshirani 1993, ch. 13). A replicate is a weighted mean of observed values, so the
    interval lies within [min, max] of the data, hence within the metric's range; it is also clipped to
    ``bounds`` and to that hull, so rounding never moves it outside (a constant sample gives [x, x]).
    Fewer than MIN_UNITS patients (or, without per-patient values, fewer than MIN_UNITS runs): no interval,
    with ``ci_note`` saying why.
    """
    n_runs = len(runs)
    if n_runs == 0:
        return no_interval()
    with_patients = all(r.get("patients") is not None for r in runs)
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    if not with_patients:
        x = np.asarray([r["value"] for r in runs], dtype=float)
        if n_runs < MIN_UNITS:
            return no_interval(
                f"no interval: {_count(n_runs, 'run')} and no per-patient values, needs ≥ {MIN_UNITS} runs",
                runs=n_runs,
            )
        draws = rng.multinomial(n_runs, np.full(n_runs, 1 / n_runs), size=n_boot)
        reps = draws @ x / n_runs
        hull = (float(x.min()), float(x.max()))
        unit = "runs"
        n_patients = 0
    else:
        sets: dict[tuple, list[int]] = {}
        for i, r in enumerate(runs):
            sets.setdefault(tuple(sorted(map(str, r["patients"]["ids"]))), []).append(i)
        n_patients = len({p for key in sets for p in key})
        if n_patients < MIN_UNITS:
            return no_interval(
                f"no interval: {_count(n_patients, patients_word)}, needs ≥ {MIN_UNITS}",
                runs=n_runs,
                patients=n_patients,
                sets=len(sets),
            )
        run_draws = rng.multinomial(n_runs, np.full(n_runs, 1 / n_runs), size=n_boot) if n_runs > 1 else None
        per_run = np.empty((n_boot, n_runs))
        seen = []
        for key, members in sets.items():  # first-seen order of the validation sets: reproducible
            k = len(key)
            counts = rng.multinomial(k, np.full(k, 1 / k), size=n_boot).astype(float)
            for i in members:
                pv = runs[i]["patients"]
                order = {str(p): j for j, p in enumerate(pv["ids"])}
                v = np.zeros(k)
                w = np.zeros(k)
                for j, p in enumerate(key):
                    src = order[p]
                    vi, wi = float(pv["values"][src]), float(pv["weights"][src])
                    if wi > 0 and math.isfinite(vi):
                        v[j], w[j] = vi, wi
                        seen.append(vi)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_run[:, i] = (counts @ (w * v)) / (counts @ w)
        if run_draws is None:
            reps = per_run[:, 0]
        else:
            # a drawn run whose drawn patients all lack a value (possible for HD95) leaves the replicate NaN
            reps = (run_draws * np.where(run_draws > 0, per_run, 0.0)).sum(axis=1) / n_runs
        hull = (min(seen), max(seen)) if seen else (-math.inf, math.inf)
        unit = "runs × patients" if n_runs > 1 else "patients"
    n_sets = len(sets) if with_patients else 0
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return no_interval("no interval: no resample has a value", runs=n_runs, patients=n_patients, sets=n_sets)
    lo, hi = (float(q) for q in np.quantile(reps, [lo_q, hi_q]))
    floor, ceil = max(bounds[0], hull[0]), min(bounds[1], hull[1])
    lo, hi = min(max(lo, floor), ceil), max(min(hi, ceil), floor)
    return {
        "ci_low": lo,
        "ci_high": hi,
        "ci_unit": unit,
        "ci_runs": n_runs,
        "ci_patients": n_patients,
        "ci_sets": n_sets,
        "ci_note": "",
    }


def interval_units(g: Mapping) -> str:
    """'3 runs × 8 patients', '4 patients', '3 runs', '3 runs × 8 patients in 3 validation sets' (folds) —
    what an interval resampled ('' when none)."""
    unit = g.get("ci_unit")
    runs = _count(g.get("ci_runs") or 0, "run")
    patients = _count(g.get("ci_patients") or 0, "patient")
    sets = g.get("ci_sets") or 0
    if unit == "runs × patients" and sets > 1:
        return f"{runs} × {patients} in {sets} validation sets"
    return {"runs × patients": f"{runs} × {patients}", "patients": patients, "runs": runs}.get(unit, "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def wilcoxon(d: Sequence[float]) -> tuple[float | None, float | None, str]:
    """(statistic, p, variant) of a two-sided Wilcoxon signed-rank test; (None, 1.0, ...) when all d = 0."""
    x = np.asarray(d, dtype=float)
    nz = x[x != 0]
    if nz.size == 0:
        return None, 1.0, "all differences zero"
    from scipy import stats as sps

    res = sps.wilcoxon(x, zero_method="wilcox", alternative="two-sided", method="auto")
    # mirrors scipy's method="auto": exact without ties/zeros (n ≤ 50), else a full permutation (n ≤ 13)
    clean = np.unique(np.abs(nz)).size == nz.size and nz.size == x.size
    if x.size > 50:
        variant = "normal approximation"
    elif clean:
        variant = "exact"
    else:
        variant = "exact permutation" if x.size <= 13 else "normal approximation"
    return float(res.statistic), float(res.pvalue), variant


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are skipped and stay None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def pairs(ref: dict, other: dict) -> tuple[list[tuple], np.ndarray]:
    """Keys (repeat, fold) where both configurations have a value, and the differences ref − other."""
    a = {(r["repeat"], r["fold"]): r["value"] for r in ref["runs"] if r["value"] is not None}
    b = {(r["repeat"], r["fold"]): r["value"] for r in other["runs"] if r["value"] is not None}
    keys = sorted(set(a) & set(b), key=lambda k: (k[0] if k[0] is not None else -1, k[1] if k[1] is not None else -1))
    return keys, np.array([a[k] - b[k] for k in keys], dtype=float)


def compare(ref: dict, other: dict, *, seed: int | Sequence[int], value: str, n_boot: int = 10_000) -> dict:
    """One paired comparison (see module docstring) with a plain-language note."""
    keys, d = pairs(ref, other)
    out = {
        "reference": ref["config"],
        "other": other["config"],
        "other_status": other["status"],
        "n_pairs": len(keys),
        "mean_diff": None,
        "ci_low": None,
        "ci_high": None,
        "statistic": None,
        "p": None,
        "variant": None,
        "n_nonzero": None,
        "note": "",
    }
    n = len(keys)
    if n < MIN_PAIRS:
        out["note"] = f"not compared: {n} paired run{'s' if n != 1 else ''} in common (needs {MIN_PAIRS})"
        return out
    stat, p, variant = wilcoxon(d)
    lo, hi = bootstrap_mean_ci(d, seed=seed, n_boot=n_boot)
    out.update(mean_diff=float(d.mean()), ci_low=lo, ci_high=hi, statistic=stat, p=p, variant=variant)
    out["n_nonzero"] = int((d != 0).sum())
    # alone, a comparison is one test: its Holm-adjusted p is its p (compare_study rewrites the note)
    out["note"] = claim_note(out, p, 1, value)
    return out


def holm_text(p_holm: float, m: int) -> str:
    """'Holm-adjusted p = 0.078 over 5 comparisons' (the wording of every claim)."""
    p = describe_p(p_holm)
    return f"Holm-adjusted p {p if p.startswith('<') else '= ' + p} over {m} comparison{'s' if m != 1 else ''}"


def claim_note(c: Mapping, p_holm: float, m: int, value: str) -> str:
    """Plain-language note of a comparison: a difference is claimed only from the Holm-adjusted p."""
    n_nonzero = c["n_nonzero"]
    if n_nonzero < min_pairs_for(ALPHA):
        # the plain-language point: with this few pairs the test is powerless, not the difference absent
        return (
            f"too few pairs: with {n_nonzero} non-zero pair{'s' if n_nonzero != 1 else ''} p cannot "
            f"fall below {min_wilcoxon_p(n_nonzero):.3g}, so p < {ALPHA:g} is impossible "
            f"(needs ≥ {min_pairs_for(ALPHA)})"
        )
    if p_holm < ALPHA:
        return f"difference {fmt(c['mean_diff'], value)} ({holm_text(p_holm, m)})"
    return f"no difference shown at {ALPHA:g} ({holm_text(p_holm, m)})"


def compare_study(
    groups: Sequence[dict], *, higher_is_better: bool, value: str, seed: int = 0, n_boot: int = 10_000
) -> dict:
    """Compare the best configuration (see `ranking.best_group`) with every other configuration.

    ``groups`` are `configs.config_groups` dicts. Each comparison gets its own bootstrap stream
    (``[seed, i]``) so adding a configuration does not change the others' intervals.
    """
    best = best_group(groups, higher_is_better)
    res = {
        "method": METHOD,
        "value": value,
        "higher_is_better": higher_is_better,
        "alpha": ALPHA,
        "min_pairs_for_alpha": min_pairs_for(ALPHA),
        "seed": seed,
        "n_boot": n_boot,
        "reference": None if best is None else best["config"],
        "comparisons": [],
    }
    if best is None:
        return res
    comps = [
        compare(best, g, seed=[seed, i], value=value, n_boot=n_boot) for i, g in enumerate(groups) if g is not best
    ]
    adj = holm([c["p"] for c in comps])
    m = sum(a is not None for a in adj)
    for c, a in zip(comps, adj):
        c["p_holm"] = a
        if a is not None:
            c["note"] = claim_note(c, a, m, value)
    res["n_tested"] = m
    res["comparisons"] = comps
    return res


def describe_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
