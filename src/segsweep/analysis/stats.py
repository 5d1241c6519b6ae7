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
  (Holm 1979): ``p_(i)^adj = max_{j ≤ i} min(1, (m − j + 1) · p_(j))`` over the sorted p-values.

Fold pairs share training patients, so fold differences are not independent; the p-values are descriptive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

from segsweep.analysis.ranking import best_group
from segsweep.labels import fmt

MIN_PAIRS = 2
ALPHA = 0.05
METHOD = (
    "Paired by training seed and fold; difference = best − other. Two-sided Wilcoxon signed-rank test "
    "(scipy.stats.wilcoxon; zero differences dropped) and a seeded percentile bootstrap 95 % CI of the "
    "mean difference; Holm-adjusted p-values across the comparisons of a study."
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


def wilcoxon(d: Sequence[float]) -> tuple[float | None, float | None, str]:
    """(statistic, p, variant) of a two-sided Wilcoxon signed-rank test; (None, 1.0, ...) when all d = 0."""
    x = np.asarray(d, dtype=float)
    nz = x[x != 0]
    if nz.size == 0:
        return None, 1.0, "all differences zero"
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
        "note": "",
    }
    n = len(keys)
    if n < MIN_PAIRS:
        out["note"] = f"not compared: {n} paired run{'s' if n != 1 else ''} in common (needs {MIN_PAIRS})"
        return out
    stat, p, variant = wilcoxon(d)
    lo, hi = bootstrap_mean_ci(d, seed=seed, n_boot=n_boot)
    out.update(mean_diff=float(d.mean()), ci_low=lo, ci_high=hi, statistic=stat, p=p, variant=variant)
    n_nonzero = int((d != 0).sum())
    if n_nonzero < min_pairs_for(ALPHA):
        # the plain-language point: with this few pairs the test is powerless, not the difference absent
        out["note"] = (
            f"too few pairs: with {n_nonzero} non-zero pair{'s' if n_nonzero != 1 else ''} p cannot "
            f"fall below {min_wilcoxon_p(n_nonzero):.3g}, so p < {ALPHA:g} is impossible "
            f"(needs ≥ {min_pairs_for(ALPHA)})"
        )
    elif p < ALPHA:
        out["note"] = f"difference {fmt(float(d.mean()), value)} (p = {p:.3g})"
    else:
        out["note"] = f"no difference shown at {ALPHA:g} (p = {p:.3g})"
    return out


def compare_study(
    groups: Sequence[dict], *, higher_is_better: bool, value: str, seed: int = 0, n_boot: int = 10_000
) -> dict:
    """Compare the best configuration (see `ranking.best_group`) with every other configuration.

    ``groups`` are `aggregate.config_groups` dicts. Each comparison gets its own bootstrap stream
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
    for c, a in zip(comps, adj):
        c["p_holm"] = a
    res["comparisons"] = comps
    return res


def describe_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
