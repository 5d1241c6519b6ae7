"""Small wording and layout promises of the report (issue 24): a fold column only where some run has a fold."""

from __future__ import annotations

import re

import pytest
from fixtures_results import built_fixture, render
from test_report_tables import build


def _table(html: str, cls: str) -> str:
    return re.search(rf'<table class="sortable {cls}">(.*?)</table>', html, re.S).group(1)


@pytest.fixture(scope="module")
def without_folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("wording")
    results, studies, config = build(root)  # holdout only; sgd @ lr 0.01 diverges
    return render(root / "report.html", config, studies, results, root)


def test_no_fold_column_without_folds(without_folds):
    for cls in ("failures", "runs"):
        t = _table(without_folds, cls)
        assert "diverged" in t  # the table is there, with its diverged runs
        assert '<th class="num">fold</th>' not in t, cls


def test_fold_column_with_its_folds(tmp_path_factory):
    fx = built_fixture(tmp_path_factory)  # schedules: 3-fold CV, cosine fold 2 failed
    html = fx.render(tmp_path_factory.mktemp("wording-cv") / "r.html")
    t = _table(html, "failures")
    assert '<th class="num">fold</th>' in t
    # the failed fold's row carries its fold number: the column is never empty
    assert re.search(r"schedule=cosine</td><td class=\"num\">\d</td><td class=\"num\">2</td>", t), t[:2000]
