"""One name per configuration (issue 24): every table, figure and sentence of a built report names a
configuration as `ConfigNames` does — a training fraction by its real size everywhere, never by its requested
value in one table and its size in another."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from fixtures_results import render
from test_report_tables import build

from segsweep.analysis.configs import config_groups
from segsweep.analysis.runs import read_cells_csv
from segsweep.labels import ConfigNames


def test_config_names_by_hand():
    names = ConfigNames({"fraction": {"0.2": "17 % (2 of 12 patients)"}})
    assert names.name({"optimizer": "adam", "fraction": "0.2"}) == "optimizer=adam, fraction=17 % (2 of 12 patients)"
    assert names.name([("fraction", "1.0"), ("lr", "0.01")]) == "fraction=1.0, lr=0.01"  # not in the map: as written
    assert names.name({}) == "base"
    assert ConfigNames.of_table({"axis_labels": {"fraction": {"0.2": "x"}}}).value("fraction", "0.2") == "x"
    assert ConfigNames.of_table({}).name({"lr": "0.1"}) == "lr=0.1"  # a table.json without axis_labels


class _ConfigCells(HTMLParser):
    """Per table (by its class), the texts of the columns headed "configuration" or "other configuration"."""

    def __init__(self):
        super().__init__()
        self.found: dict[str, list[str]] = {}
        self._table = self._col = None
        self._cols: list[int] = []
        self._i = -1
        self._text: str | None = None
        self._head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table, self._cols = (a.get("class") or "").replace("sortable", "").strip(), []
        elif tag == "thead":
            self._head = True
        elif tag == "tbody":
            self._head = False
        elif tag == "tr":
            self._i = -1
        elif tag in ("th", "td") and self._table is not None:
            self._i += 1
            self._text = ""

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._text is not None:
            text = " ".join(self._text.split())
            if self._head and text in ("configuration", "other configuration"):
                self._cols.append(self._i)
            elif not self._head and self._i in self._cols:
                self.found.setdefault(self._table, []).append(text)
            self._text = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._text is not None:
            self._text += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    results, studies, config = build(root)
    return results, studies, render(root / "report" / "report.html", config, studies, results, root)


def test_every_table_names_a_configuration_the_same_way(report):
    results, studies, html = report
    names = set()
    for s in studies:
        d = results / "studies" / s.name
        table = json.loads((d / "table.json").read_text())
        groups = config_groups(s, read_cells_csv(d / "cells.csv", s.axes))
        names |= {ConfigNames.of_table(table).name(g["labels"]) for g in groups}
    # the grid study's fractions: n_train(12, 0.2) = 2 → 17 %, n_train(12, 0.4) = 5 → 42 %
    assert "optimizer=adam, fraction=42 % (5 of 12 patients), lr=0.001" in names
    p = _ConfigCells()
    p.feed(html)
    # the summary's top table, the statistics, the secondary metrics, the failures and the per-run table
    assert {"top", "stats", "secondary", "failures", "runs"} <= set(p.found), sorted(p.found)
    for table, texts in p.found.items():
        assert texts and set(texts) <= names, (table, sorted(set(texts) - names))
    # every sentence and the stats' reference too: no fraction by its requested value anywhere
    assert not re.search(r"fraction[ =]0\.[24]\b", html)
    best = re.search(r"The best configuration is ([^:]+):", html).group(1)
    assert best in names
    # the model card of the grid study names its selected configuration the same way
    card = re.search(r"<dt>configuration</dt><dd>([^:]+): cell", html).group(1)
    assert card == best


def test_figures_name_configurations_the_same_way(report):
    results, _, _ = report
    svgs = " ".join(p.read_text() for p in (results / "studies").glob("*/figures/*.svg"))
    assert svgs and not re.search(r"fraction[ =]0\.[24]\b", svgs)
