"""What a study can show, said once up front in the summary (issue 24): the sample-size estimate against
hand-computed values, the sentences for repeated and single runs, and the report's placement of them."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from segsweep.analysis.stats import min_pairs_for, pairs_needed
from segsweep.report.evidence import evidence

# z_{0.975} = 1.959964, z_{0.8} = 0.841621: sum 2.801585; z_{1-0.0125/2} = 2.497705: sum with z_{0.8} 3.339327.
# n = ((z sum) · sd / d)² · π/3 (the Wilcoxon test's efficiency 3/π), rounded up, at least min_pairs_for(α).


def test_pairs_needed_by_hand():
    # (2.801585 · 0.03 / 0.02)² = 4.202378² = 17.660; · π/3 = 18.49 → 19
    assert pairs_needed(0.02, 0.03) == 19
    assert pairs_needed(-0.02, 0.03) == 19  # the sign of the difference does not matter
    # (3.339327 · 0.02 / 0.01)² = 44.604; · π/3 = 46.71 → 47 (α = 0.05/4)
    assert pairs_needed(0.01, 0.02, alpha=0.0125) == 47
    # (2.801585 · 0.01 / 0.05)² = 0.314 → 1 pair, but the Wilcoxon test cannot reach 0.05 below 6
    assert min_pairs_for(0.05) == 6 and pairs_needed(0.05, 0.01) == 6
    assert min_pairs_for(0.0125) == 8 and pairs_needed(0.05, 0.0, alpha=0.0125) == 8  # 2/2^8 < 0.0125 ≤ 2/2^7
    assert pairs_needed(0.0, 0.1) is None


def _group(name: str, values: list[float], cells: list[str] | None = None) -> dict:
    runs = [
        {"repeat": i, "fold": None, "cell": (cells or [f"{name}{i}"] * len(values))[i], "status": "ok", "value": v}
        for i, v in enumerate(values)
    ]
    mean = sum(values) / len(values)
    return {"labels": {"loss": name}, "config": f"loss={name}", "runs": runs, "mean": mean, "status": "ok"}


def test_repeated_runs_say_how_many_seeds(tmp_path):
    # best − runner-up per seed: 0.01, 0.02, −0.01 → mean 0.00667, sd 0.015275; one comparison (α = 0.05):
    # (2.801585 · 0.015275 / 0.006667)² = 41.21; · π/3 = 43.15 → 44 seeds
    best, second = _group("dice", [0.80, 0.82, 0.84]), _group("bce", [0.79, 0.80, 0.85])
    out = evidence([second, best], higher_is_better=True, value="best_val_dice", cells_dir=tmp_path)
    text = " ".join(out)
    assert "pairs at most 3 runs (seeds); at two-sided α = 0.05 the Wilcoxon test needs ≥ 6" in text
    assert "so no difference here can be shown, nor ruled out" in text
    assert (
        "The gap to the runner-up, 0.007 (sd 0.015 over 3 pairs), would take about 44 seeds per configuration" in text
    )
    # with 6 pairs the test can reach 0.05: no "cannot be shown"
    best6, second6 = _group("dice", [0.80, 0.82, 0.84] * 2), _group("bce", [0.79, 0.80, 0.85] * 2)
    text6 = " ".join(evidence([best6, second6], higher_is_better=True, value="best_val_dice", cells_dir=tmp_path))
    assert "pairs at most 6 runs" in text6 and "can be shown" not in text6
    # a single configuration: nothing to say
    assert evidence([best], higher_is_better=True, value="best_val_dice", cells_dir=tmp_path) == []


def test_single_runs_say_how_many_patients(tmp_path):
    # one run each, 4 validation patients (one slice each): best − runner-up = 0.02, 0.01, 0.05, −0.02 →
    # mean 0.015, sd 0.028868; (2.801585 · 0.028868 / 0.015)² = 29.07; · π/3 = 30.44 → 31 patients
    for cell, dice in (("c_best", [0.90, 0.80, 0.85, 0.75]), ("c_second", [0.88, 0.79, 0.80, 0.77])):
        (tmp_path / cell).mkdir()
        pd.DataFrame({"patient": ["p1", "p2", "p3", "p4"], "slice": 0, "dice": dice}).to_csv(
            tmp_path / cell / "per_image.csv", index=False
        )
    best, second = _group("dice", [0.825], ["c_best"]), _group("bce", [0.81], ["c_second"])
    out = evidence([best, second], higher_is_better=True, value="best_val_dice", cells_dir=tmp_path)
    assert out[0].startswith("One run per configuration: no paired test") and "needs ≥ 6 seeds" in out[0]
    assert (
        "the runner-up, 0.015 (sd 0.029 over 4 validation patients), would take about 31 validation patients" in out[1]
    )


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    from fixtures_results import built_fixture

    return built_fixture(tmp_path_factory).render(tmp_path_factory.mktemp("evidence") / "report.html")


def test_report_says_it_once_in_the_summary_not_per_row(html):
    # once per study, in its summary finding (up front), with the number of seeds; nowhere else
    summary = html[html.index('<section id="summary"') : html.index('<section id="data"')]
    heads = re.findall(r'<p class="evidence"><strong>What this study can show\.</strong> ([^<]+)</p>', summary)
    assert len(heads) == 4 and html.count("What this study can show") == 4, heads
    assert "cannot fall below" not in html
    # optimizer_lr: 3 seeds, the best (adam 0.001: 0.80, 0.82, 0.84) vs the runner-up (adam 0.0001, 0.05 lower
    # in every seed: sd 0) → the Wilcoxon floor at 0.05/4: 8 seeds
    assert "pairs at most 3 runs (seeds); at two-sided α = 0.05/4 (Holm, 4 comparisons)" in heads[0]
    assert "about 8 seeds" in heads[0]
    # the statistics tables carry no per-row "too few pairs" note; one line above each table says it
    stats = html[html.index('<section id="statistics"') : html.index('<section id="secondary"')]
    assert "too few pairs:" not in stats
    assert re.search(r"\d+ of these \d+ comparisons have too few pairs for the Wilcoxon test", stats)


def test_two_pairs_give_the_patients_of_one_pair(tmp_path):
    # 2 seeds: too few pairs to measure their spread, so the patients of the first pair (as above: 31) instead
    for cell, dice in (("c_best", [0.90, 0.80, 0.85, 0.75]), ("c_second", [0.88, 0.79, 0.80, 0.77])):
        (tmp_path / cell).mkdir()
        pd.DataFrame({"patient": ["p1", "p2", "p3", "p4"], "slice": 0, "dice": dice}).to_csv(
            tmp_path / cell / "per_image.csv", index=False
        )
    best = _group("dice", [0.825, 0.83], ["c_best", "c_best_1"])
    second = _group("bce", [0.81, 0.70], ["c_second", "c_second_1"])
    out = evidence([best, second], higher_is_better=True, value="best_val_dice", cells_dir=tmp_path)
    assert out[0].startswith("Each comparison with the best pairs at most 2 runs (seeds)")
    assert out[1].startswith("2 pairs do not measure their spread; between one pair of trained networks alone")
    assert "would take about 31 validation patients" in out[1]
