"""Rendered tables equal table.csv cell by cell (labels included) in HTML and PDF; fractions show their real
size; Dice-like figure axes and intervals stay within [0, 1] (issue 13)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_results import built_fixture, render

from segsweep.data.splits import make_split
from segsweep.report import style
from segsweep.report.plots import make_study_figures
from segsweep.report.style import label_for
from segsweep.study import Study, StudyCell, TableLayout

N_PATIENTS, SLICES = 16, 3  # val_fraction 0.25 → 4 validation patients, a training pool of 12


# ------------------------------------------------------------------------------------ a small results tree
def _cell(cells: Path, cid: str, status: str, params: dict, dice_by_patient: dict | None) -> None:
    """metrics.json (+ per_image.csv whose mean is best_val_dice, as train_cell writes them)."""
    d = cells / cid
    d.mkdir(parents=True)
    value = None
    if dice_by_patient is not None:
        rows = [(p, s, x) for p, xs in dice_by_patient.items() for s, x in enumerate(xs)]
        pd.DataFrame(rows, columns=["patient", "slice", "dice"]).assign(iou=0.0, hd95_mm=1.0).to_csv(
            d / "per_image.csv", index=False
        )
        value = float(np.mean([x for *_, x in rows]))
    (d / "metrics.json").write_text(
        json.dumps(
            {"cell": cid, "status": status, "reason": "", "best_val_dice": value, "epochs_run": 4, "params": params}
        )
    )


def build(root: Path) -> tuple[Path, list[Study], dict]:
    """Two studies on one holdout split (4 validation patients, pool of 12), Dice values close to 1:

    * ``grid``: rows optimizer × fraction (axes not in alphabetical order: the JSON of table.json sorts
      them), columns lr; sgd @ lr 0.01 diverges, adam @ 0.01 seed 1 diverges (a partial cell);
    * ``losses``: loss dice / bce, 3 seeds each.
    """
    results = root / "results"
    cells = results / "cells"
    pids = [f"p{i:08x}" for i in range(N_PATIENTS)]
    split = make_split(pids, seed=0, val_fraction=0.25)
    (results / "splits").mkdir(parents=True)
    (results / "splits" / "seed0.json").write_text(json.dumps(split))
    val = split["val"]
    rng = np.random.default_rng(0)
    grid, losses = [], []
    k = 0
    for opt in ("adam", "sgd"):
        for frac in ("0.2", "0.4"):
            for lr in ("0.001", "0.01"):
                for rep in (0, 1):
                    cid = f"{k:012x}"
                    k += 1
                    bad = (opt == "sgd" and lr == "0.01") or (opt == "adam" and lr == "0.01" and rep == 1)
                    top = 0.99 if opt == "adam" else 0.95
                    dice = {p: list(np.clip(top - rng.uniform(0, 0.03, SLICES), 0, 1)) for p in val}
                    params = {"split_seed": 0, "fraction": float(frac), "fold": None, "seed": rep}
                    _cell(cells, cid, "diverged" if bad else "ok", params, None if bad else dice)
                    grid.append(StudyCell(cid, (("optimizer", opt), ("fraction", frac), ("lr", lr)), rep, None))
    for loss in ("dice", "bce"):
        for rep in range(3):
            cid = f"{k:012x}"
            k += 1
            dice = {p: list(np.clip(0.995 - rng.uniform(0, 0.01, SLICES), 0, 1)) for p in val}
            _cell(cells, cid, "ok", {"split_seed": 0, "fraction": 1.0, "fold": None, "seed": rep}, dice)
            losses.append(StudyCell(cid, (("loss", loss),), rep, None))
    studies = [
        Study(
            "grid",
            "Optimizer × fraction × lr",
            "",
            "grid",
            ("optimizer", "fraction", "lr"),
            TableLayout(rows=("optimizer", "fraction"), cols=("lr",), value="best_val_dice"),
            tuple(grid),
            {"optimizer": ("adam", "sgd"), "fraction": ("0.2", "0.4"), "lr": ("0.001", "0.01")},
        ),
        Study(
            "losses",
            "Losses",
            "",
            "grid",
            ("loss",),
            TableLayout(rows=("loss",), cols=(), value="best_val_dice"),
            tuple(losses),
            {"loss": ("dice", "bce")},
        ),
    ]
    from segsweep.analysis.aggregate import aggregate_study

    for s in studies:
        sd = results / "studies" / s.name
        aggregate_study(s, cells, sd, seed=7, splits=[results / "splits" / "seed0.json"])
        make_study_figures(s, sd, cells, sd / "figures")
    return results, studies, {"title": "Tables", "seed": 7}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    results, studies, config = build(root)
    out = root / "report"
    render(out / "report.html", config, studies, results, root, out / "report.pdf")
    return results, studies, out


@pytest.fixture(scope="module")
def fixture_html(tmp_path_factory):
    fx = built_fixture(tmp_path_factory)
    return fx, fx.render(tmp_path_factory.mktemp("tables-fx") / "report.html")


# ------------------------------------------------------------------------------------------- parsing
class _Tables(HTMLParser):
    """The layout tables of a report: per table, header rows (cell texts) and body rows of (tag, main text,
    note text) — a body cell's number or status word, and its note, kept apart."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._in = False
        self._part = None
        self._cell: dict | None = None
        self._note = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "layout" in (a.get("class") or "").split():
            self._in = True
            self.tables.append({"head": [], "body": []})
        elif self._in and tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif self._in and tag == "tr":
            self.tables[-1][self._part].append([])
        elif self._in and tag in ("th", "td"):
            self._cell = {"tag": tag, "main": "", "note": ""}
        elif self._in and tag == "span" and "cell-note" in (a.get("class") or ""):
            self._note = True

    def handle_endtag(self, tag):
        if tag == "table" and self._in:
            self._in = False
        elif self._in and tag in ("th", "td") and self._cell is not None:
            self.tables[-1][self._part][-1].append(self._cell)
            self._cell = None
        elif tag == "span":
            self._note = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["note" if self._note else "main"] += data


def layout_tables(html: str) -> list[dict]:
    p = _Tables()
    p.feed(html)
    return p.tables


def expected_header(study: Study, table: dict, head: list[list[dict]]) -> list[str]:
    """The table.csv header that the HTML header names (row axes, then one column per column combination)."""
    if table["col_axes"]:
        axes_row, values_row = head
        assert [c["main"] for c in axes_row] == [*table["row_axes"], ", ".join(table["col_axes"])]
        cols = [", ".join(f"{a}={v}" for a, v in zip(table["col_axes"], c["main"].split(", "))) for c in values_row]
        return [*table["row_axes"], *cols]
    (row,) = head
    n = len(table["row_axes"])
    assert [c["main"] for c in row[:n]] == table["row_axes"]
    assert [c["main"] for c in row[n:]] == [label_for(table["value"])]
    return [*table["row_axes"], table["value"]]


def assert_html_equals_csv(html: str, results: Path, studies: list[Study]) -> int:
    """Every layout table of the report equals its study's table.csv, header, labels and cells. Returns the
    number of cells compared."""
    tables = layout_tables(html)
    assert len(tables) == len(studies)
    n = 0
    for study, t in zip(studies, tables):
        d = results / "studies" / study.name
        csv = pd.read_csv(d / "table.csv", dtype=str, keep_default_na=False)
        table = json.loads((d / "table.json").read_text())
        assert expected_header(study, table, t["head"]) == list(csv.columns), study.name
        assert len(t["body"]) == len(csv), study.name
        k = len(table["row_axes"])
        for tr, (_, row) in zip(t["body"], csv.iterrows()):
            assert [c["tag"] for c in tr] == ["th"] * k + ["td"] * (len(tr) - k)
            assert [c["main"] for c in tr[:k]] == list(row.iloc[:k]), (study.name, row.to_dict())
            for c, want in zip(tr[k:], row.iloc[k:]):
                numeric = re.match(r"^\d", c["main"]) is not None
                got = c["main"] + (f"; {c['note']}" if c["note"] and numeric else "")
                assert got == want, (study.name, row.to_dict())
                n += 1
    return n


# ------------------------------------------------------------------------------------------------ tests
def test_two_row_keys_keep_their_order_and_fraction_labels_their_size(small):
    results, _, out = small
    csv = pd.read_csv(results / "studies" / "grid" / "table.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns) == ["optimizer", "fraction", "lr=0.001", "lr=0.01"]
    # n_train(12, 0.2) = round(2.4) = 2 patients: 2 / 12 = 17 %; n_train(12, 0.4) = round(4.8) = 5: 42 %
    assert csv[["optimizer", "fraction"]].values.tolist() == [
        ["adam", "17 % (2 of 12 patients)"],
        ["adam", "42 % (5 of 12 patients)"],
        ["sgd", "17 % (2 of 12 patients)"],
        ["sgd", "42 % (5 of 12 patients)"],
    ]
    t = json.loads((results / "studies" / "grid" / "table.json").read_text())
    assert t["rows"][0]["labels"] == {"optimizer": "adam", "fraction": "0.2"}  # the config's labels stay
    assert t["fractions"]["0.4"] == {"label": "42 % (5 of 12 patients)", "n_train": [5], "pool": [12], "share": 5 / 12}
    html = (out / "report.html").read_text()
    body = layout_tables(html)[0]["body"]
    assert [c["main"] for c in body[1][:2]] == ["adam", "42 % (5 of 12 patients)"]  # not "42 % … | adam"
    assert "0.2 → 17 % (2 of 12 patients), 0.4 → 42 % (5 of 12 patients)" in html  # the study's axis list
    assert re.search(
        r"The best configuration is optimizer=adam, fraction=(17|42) % \((2|5) of 12 patients\), lr=", html
    )
    svg = (results / "studies" / "grid" / "figures" / "fraction.svg").read_text()
    assert ">17 %<" in svg and ">(2 of 12)<" in svg and ">(5 of 12)<" in svg


def test_html_tables_equal_table_csv_cell_by_cell(small, fixture_html):
    results, studies, out = small
    assert assert_html_equals_csv((out / "report.html").read_text(), results, studies) == 2 * 4 + 2
    fx, html = fixture_html
    assert assert_html_equals_csv(html, fx.results, fx.studies) == 6 + 6 + 3 + 40


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils (pdftotext)")
def test_pdf_tables_carry_the_table_csv_values_in_order(small):
    results, studies, out = small
    text = subprocess.run(
        ["pdftotext", "-layout", str(out / "report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    lines = text.splitlines()
    for study in studies:
        csv = pd.read_csv(results / "studies" / study.name / "table.csv", dtype=str, keep_default_na=False)
        k = len(json.loads((results / "studies" / study.name / "table.json").read_text())["row_axes"])
        head = r"\s+".join(re.escape(c.split("=", 1)[-1]) for c in csv.columns[k:])
        assert any(re.search(head, ln) for ln in lines) or study.table.cols == (), (study.name, head)
        for _, row in csv.iterrows():
            # one line per table row: the labels, then each cell's number or status word, in the CSV's order
            cells = [v.split("; ", 1)[0] for v in row.iloc[k:]]
            pattern = r"\s+".join(re.escape(v) for v in [*row.iloc[:k], *cells])
            assert any(re.search(pattern, ln) for ln in lines), (study.name, pattern)
            for v in row.iloc[k:]:
                if "; " in v:  # a partial cell's note is printed under its number
                    assert v.split("; ", 1)[1] in text


def test_intervals_bounded_and_stated(small):
    results, _, out = small
    for name in ("grid", "losses"):
        t = json.loads((results / "studies" / name / "table.json").read_text())
        cells = [x for line in t["cells"] for x in line if x["mean"] is not None]
        assert cells and all(x["ci_low"] is not None for x in cells)
        for x in cells:
            assert 0.0 <= x["ci_low"] <= x["ci_high"] <= 1.0
    html = (out / "report.html").read_text()
    stats = html[html.index('<section id="statistics"') : html.index('<section id="secondary"')]
    assert "resampling unit is the validation\n<em>patient</em>" in stats
    assert "resampling runs × validation patients (2 runs × 4 patients)" in stats
    assert "optimisation noise" in stats and 'href="../docs/statistics.md"' in stats
    assert re.search(r"95 % bootstrap CI 0\.\d{3}–(0\.\d{3}|1\.000) over 2 runs × 4 patients", html)


def test_dice_axes_stay_within_unit_interval(small, tmp_path, monkeypatch):
    """Every axis (colour bars included) labelled with a Dice-like metric spans a subset of [0, 1], with the
    data close to 1 and error bars from the bootstrap intervals."""
    results, studies, _ = small
    seen: list[tuple[str, tuple[float, float]]] = []
    save = style.save

    def spy(fig, path, *a, **kw):
        for ax in fig.axes:
            for label, lim in ((ax.get_xlabel(), ax.get_xlim()), (ax.get_ylabel(), ax.get_ylim())):
                if re.search(r"Dice|IoU|NSD", label):
                    seen.append((f"{Path(path).name}: {label}", lim))
        return save(fig, path, *a, **kw)

    monkeypatch.setattr(style, "save", spy)
    for s in studies:
        sd = results / "studies" / s.name
        make_study_figures(s, sd, results / "cells", tmp_path / s.name)
    names = {n.split(":")[0] for n, _ in seen}
    assert {"loss.svg", "fraction.svg", "lr.svg", "heatmap.svg", "per_patient.svg"} <= names, names
    for name, (lo, hi) in seen:
        assert min(lo, hi) >= 0.0 and max(lo, hi) <= 1.0, (name, lo, hi)
