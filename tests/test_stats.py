"""Paired comparisons: Wilcoxon signed-rank, bootstrap CI, Holm, small-n wording."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_results import built_fixture
from scipy import stats as sps

from segsweep.analysis.stats import (
    bootstrap_interval,
    bootstrap_mean_ci,
    compare,
    compare_study,
    holm,
    holm_text,
    interval_units,
    min_pairs_for,
    min_wilcoxon_p,
    wilcoxon,
)


def group(config, values, status="ok", folds=None):
    runs = [
        {
            "repeat": i,
            "fold": None if folds is None else folds[i],
            "cell": f"{config}{i}",
            "status": "ok" if v is not None else "diverged",
            "value": v,
        }
        for i, v in enumerate(values)
    ]
    ok = [v for v in values if v is not None]
    return {
        "config": config,
        "labels": {"x": config},
        "runs": runs,
        "status": status,
        "mean": float(np.mean(ok)) if ok else None,
        "n": len(ok),
    }


def test_smallest_reachable_p():
    assert min_wilcoxon_p(5) == pytest.approx(2 / 32)
    assert min_wilcoxon_p(6) == pytest.approx(2 / 64)
    assert min_pairs_for(0.05) == 6


def test_wilcoxon_exact_all_positive():
    d = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    stat, p, variant = wilcoxon(d)
    assert variant == "exact" and p == pytest.approx(2 / 64)  # every sign +: one of 2^6 outcomes, two-sided
    assert p == pytest.approx(sps.wilcoxon(d).pvalue)
    assert stat == 0.0


def test_wilcoxon_all_zero_and_ties():
    assert wilcoxon([0.0, 0.0, 0.0]) == (None, 1.0, "all differences zero")
    _, p, variant = wilcoxon([0.1, 0.1, 0.0, 0.2])
    assert variant == "exact permutation" and 0 < p <= 1


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = [0.01, 0.03, -0.02, 0.05, 0.02]
    a = bootstrap_mean_ci(d, seed=3)
    assert a == bootstrap_mean_ci(d, seed=3)
    assert a != bootstrap_mean_ci(d, seed=4)
    assert min(d) <= a[0] <= np.mean(d) <= a[1] <= max(d)
    assert bootstrap_mean_ci([0.02, 0.02], seed=0) == pytest.approx((0.02, 0.02))


def test_holm_by_hand():
    # sorted p: 0.01 (×3 = 0.03), 0.03 (×2 = 0.06), 0.04 (×1 = 0.04 → monotone 0.06)
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def test_pairs_by_seed_and_small_n_wording():
    best = group("a", [0.80, 0.82, 0.84, 0.83])
    other = group("b", [0.70, None, 0.75])  # seed 1 diverged: pairs are seeds 0 and 2
    c = compare(best, other, seed=0, value="best_val_dice")
    assert c["n_pairs"] == 2
    assert c["mean_diff"] == pytest.approx(((0.80 - 0.70) + (0.84 - 0.75)) / 2)
    assert c["p"] == pytest.approx(0.5)
    assert c["note"].startswith("too few pairs") and "0.5" in c["note"] and "≥ 6" in c["note"]


def test_not_compared_below_two_pairs():
    c = compare(group("a", [0.8]), group("b", [0.7]), seed=0, value="best_val_dice")
    assert c["p"] is None and c["mean_diff"] is None and c["note"].startswith("not compared: 1 paired run")


def test_enough_pairs_reports_significance():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.7, 0.8, 8)
    best = group("a", list(base + 0.05))
    other = group("b", list(base + rng.normal(0, 0.005, 8)))
    c = compare(best, other, seed=0, value="best_val_dice")
    assert c["n_pairs"] == 8 and c["p"] < 0.05 and c["note"].startswith("difference")
    assert c["ci_low"] > 0


def test_folds_pair_on_fold_index():
    best = group("a", [0.8, 0.9, 0.85], folds=[0, 1, 2])
    other = group("b", [0.7, 0.8, 0.75], folds=[0, 1, 2])
    assert compare(best, other, seed=0, value="best_val_dice")["mean_diff"] == pytest.approx(0.1)


def test_compare_study_reference_and_streams():
    gs = [group("a", [0.7, 0.72, 0.71]), group("b", [0.8, 0.82, 0.84]), group("c", [None, None, None], "diverged")]
    res = compare_study(gs, higher_is_better=True, value="best_val_dice", seed=0)
    assert res["reference"] == "b"
    assert [c["other"] for c in res["comparisons"]] == ["a", "c"]
    assert res["comparisons"][1]["note"].startswith("not compared: 0 paired runs")
    assert "Wilcoxon" in res["method"] and "bootstrap" in res["method"]
    low = compare_study(gs, higher_is_better=False, value="best_val_hd95_mm", seed=0)
    assert low["reference"] == "a"


def test_stats_json_of_the_fixture(tmp_path_factory):
    fx = built_fixture(tmp_path_factory)
    s = json.loads((fx.results / "studies" / "optimizer_lr" / "stats.json").read_text())
    assert s["reference"] == "optimizer=adam, lr=0.001"
    by = {c["other"]: c for c in s["comparisons"]}
    assert by["optimizer=sgd, lr=0.01"]["n_pairs"] == 0
    assert by["optimizer=adam, lr=0.01"]["n_pairs"] == 2
    assert by["optimizer=sgd, lr=0.001"]["mean_diff"] == pytest.approx(0.82 - 0.76 + 0.05 * 0.25, abs=1e-6)


# ---------------------------------------------------------------- bounded intervals (docs/statistics.md)
def run(value, patients=None, weights=None, ids=None):
    """A run for `bootstrap_interval`: its value and, optionally, per-patient values (equal weights)."""
    if patients is None:
        return {"value": value, "patients": None}
    ids = ids or [f"p{i}" for i in range(len(patients))]
    w = weights or [1.0] * len(patients)
    return {"value": value, "patients": {"ids": ids, "values": list(patients), "weights": w}}


def test_interval_one_run_three_patients_is_their_range():
    # all three draws hit the lowest patient with probability 1/27 = 3.7 % > 2.5 % (likewise the highest),
    # so the 2.5 / 97.5 percentiles are the smallest and largest patient: [0.6, 0.9]
    ci = bootstrap_interval([run(0.7666667, [0.6, 0.8, 0.9])], seed=0, bounds=(0.0, 1.0))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((0.6, 0.9))
    assert (ci["ci_unit"], ci["ci_runs"], ci["ci_patients"], ci["ci_note"]) == ("patients", 1, 3, "")


def test_interval_one_run_four_patients_by_enumeration():
    # means of 4 draws from {0.2, 0.4, 0.6, 1.0}: P(0.2) = 1/256, P(0.25) = 4/256 (cumulative 1.95 %), then
    # 0.3 (6/256 + 4/256): the 2.5 % quantile is 0.3. From the top: P(1.0) = 1/256, P(0.9) = 4/256 (1.95 %),
    # P(0.85) = 4/256 (3.5 %): the 97.5 % quantile is 0.85.
    ci = bootstrap_interval([run(0.55, [0.2, 0.4, 0.6, 1.0])], seed=0)
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((0.30, 0.85))


def test_interval_n1_without_patients_and_too_few_patients():
    assert bootstrap_interval([run(0.8)], seed=0)["ci_note"] == (
        "no interval: 1 run and no per-patient values, needs ≥ 3 runs"
    )
    few = bootstrap_interval([run(0.8, [0.7, 0.9]), run(0.85, [0.8, 0.9])], seed=0)
    assert few["ci_low"] is None and few["ci_note"] == "no interval: 2 validation patients, needs ≥ 3"
    assert bootstrap_interval([], seed=0)["ci_low"] is None


def test_interval_n2_runs():
    # two runs without per-patient values: a bootstrap would return their range (~50 % coverage): none
    two = bootstrap_interval([run(0.90), run(0.98)], seed=0, bounds=(0.0, 1.0))
    assert two["ci_low"] is None and two["ci_note"] == "no interval: 2 runs and no per-patient values, needs ≥ 3 runs"
    # two runs on the same 3 patients, identical per patient: the shared patient draw makes the replicate
    # the patients' mean whatever runs are drawn, so the interval is that of one run, [min, max] = [0.6, 0.9]
    # (independent draws per run would put the all-lowest replicate at 1/729 and narrow it)
    same = bootstrap_interval([run(0.7666667, [0.6, 0.8, 0.9])] * 2, seed=0, bounds=(0.0, 1.0))
    assert same["ci_unit"] == "runs × patients" and (same["ci_runs"], same["ci_patients"]) == (2, 3)
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((0.6, 0.9))
    assert interval_units(same) == "2 runs × 3 patients"


def test_interval_two_runs_by_three_patients_by_enumeration():
    """n = 2 runs × 3 patients, crossed: 4 equally likely run draws × 27 patient draws = 108 outcomes.

    Run A scores 0.9 on every patient, run B 0.0 / 0.6 / 0.9 (a seed that failed on one patient). Lowest
    replicates: both draws B and all three patients the first → 0.0 (1/108 = 0.93 %); both B, two draws of
    the first patient and one of the second → 0.2 (3/108, cumulative 3.7 %): the 2.5 % quantile is 0.2. A
    mixed draw is at least (0.9 + 0.0) / 2 = 0.45. The top value 0.9 has 27 + 2 + 1 = 30 of 108: the 97.5 %
    quantile is 0.9. Averaging the runs first (per-patient means 0.45, 0.75, 0.9) and bootstrapping patients
    would give their range, [0.45, 0.9]: it hides that one seed scores 0 on a patient.
    """
    runs = [run(0.9, [0.9, 0.9, 0.9]), run(0.5, [0.0, 0.6, 0.9])]
    ci = bootstrap_interval(runs, seed=0, bounds=(0.0, 1.0))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((0.2, 0.9))
    assert (ci["ci_unit"], ci["ci_runs"], ci["ci_patients"], ci["ci_sets"]) == ("runs × patients", 2, 3, 1)
    averaged_first = bootstrap_interval([run(0.7, [0.45, 0.75, 0.9])], seed=0, bounds=(0.0, 1.0))
    assert (averaged_first["ci_low"], averaged_first["ci_high"]) == pytest.approx((0.45, 0.9))
    few = bootstrap_interval([run(0.8, [0.7, 0.9])], seed=0, patients_word="test patient")
    assert few["ci_note"] == "no interval: 2 test patients, needs ≥ 3"


def test_interval_of_a_constant_sample_is_the_value():
    ci = bootstrap_interval([run(0.75, [0.75] * 5), run(0.75, [0.75] * 5)], seed=0, bounds=(0.0, 1.0))
    assert (ci["ci_low"], ci["ci_high"]) == (0.75, 0.75)
    flat = bootstrap_interval([run(1.0), run(1.0), run(1.0)], seed=0, bounds=(0.0, 1.0))
    assert (flat["ci_low"], flat["ci_high"]) == (1.0, 1.0)


def test_interval_weights_and_validation_sets():
    # patients weighted by slices: 0.5 (1 slice) and 1.0 (3 slices) pool to 0.875, the run's value
    ci = bootstrap_interval([run(0.875, [0.5, 1.0, 0.9], weights=[1, 3, 2])], seed=1)
    assert 0.5 <= ci["ci_low"] <= 0.875 <= ci["ci_high"] <= 1.0
    folds = [run(0.8, [0.7, 0.9], ids=["a", "b"]), run(0.6, [0.5, 0.7], ids=["c", "d"])]
    cv = bootstrap_interval(folds, seed=0)
    assert (cv["ci_unit"], cv["ci_patients"], cv["ci_sets"]) == ("runs × patients", 4, 2)
    assert interval_units(cv) == "2 runs × 4 patients in 2 validation sets"


def test_every_interval_stays_in_the_unit_interval():
    rng = np.random.default_rng(5)
    for k in range(60):
        n_runs, n_pat = int(rng.integers(1, 5)), int(rng.integers(3, 9))
        edge = rng.choice([0.0, 1.0])  # values piled at 0 or at 1: where t-intervals spill over
        runs = []
        for _ in range(n_runs):
            v = np.clip(edge + rng.normal(0, 0.05, n_pat) * (1 - 2 * edge), 0, 1)
            runs.append(run(float(v.mean()), list(v)))
        for rs in (runs, [run(r["value"]) for r in runs] * 2):
            ci = bootstrap_interval(rs, seed=[k], n_boot=2000, bounds=(0.0, 1.0))
            if ci["ci_low"] is not None:
                assert 0.0 <= ci["ci_low"] <= ci["ci_high"] <= 1.0, (k, ci)


def test_interval_is_seeded():
    rs = [run(0.7, [0.5, 0.7, 0.8, 0.8]), run(0.75, [0.6, 0.7, 0.8, 0.9])]
    a = bootstrap_interval(rs, seed=[3, 1])
    assert a == bootstrap_interval(rs, seed=[3, 1]) and a != bootstrap_interval(rs, seed=[4, 1])


# ------------------------------------------------------------------------------ claims use Holm's p
def test_holm_wording():
    assert holm_text(0.078, 5) == "Holm-adjusted p = 0.078 over 5 comparisons"
    assert holm_text(0.0004, 1) == "Holm-adjusted p < 0.001 over 1 comparison"


def test_raw_p_below_alpha_is_no_claim_after_holm():
    # 6 pairs, every difference positive and distinct: exact two-sided p = 2 / 2^6 = 0.03125 for each of the 5
    # comparisons; Holm: 5 × 0.03125 = 0.156 for the smallest, and monotone, so 0.156 for all — no claim
    best = group("best", [0.90, 0.91, 0.92, 0.93, 0.94, 0.95])
    others = [group(f"o{k}", [0.90 - 0.001 * (i + 1) - 0.01 * k for i in range(6)]) for k in range(5)]
    res = compare_study([best, *others], higher_is_better=True, value="best_val_dice", seed=0)
    assert res["n_tested"] == 5
    for c in res["comparisons"]:
        assert c["p"] == pytest.approx(0.03125) and c["p_holm"] == pytest.approx(0.15625)
        assert c["note"] == "no difference shown at 0.05 (Holm-adjusted p = 0.156 over 5 comparisons)"
    # one comparison of 8 positive pairs: p = 2 / 2^8 = 0.0078 = its Holm p; a difference, said with Holm
    one = compare_study(
        [group("a", [0.9] * 8), group("b", [0.9 - 0.001 * (i + 1) for i in range(8)])],
        higher_is_better=True,
        value="best_val_dice",
        seed=0,
    )["comparisons"][0]
    assert one["note"] == "difference 0.005 (Holm-adjusted p = 0.008 over 1 comparison)"
