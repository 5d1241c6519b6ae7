"""Paired comparisons: Wilcoxon signed-rank, bootstrap CI, Holm, small-n wording."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_results import built_fixture
from scipy import stats as sps

from segsweep.analysis.stats import (
    bootstrap_mean_ci,
    compare,
    compare_study,
    holm,
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
