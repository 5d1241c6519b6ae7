"""The HTML report: sections, figures, tables with status words, self-containment, provenance."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fixtures_results import LEAK_PROBE, SECRET_KEY, built_fixture, render

from segsweep.errors import DataError
from segsweep.report.plots import DATA_FIGURE_FILES, FIGURE_FILES
from segsweep.report.provenance import collect, git_info, redacted
from segsweep.report.render import inline_svg

SECTIONS = ("summary", "data", "statistics", "secondary", "failures", "provenance")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return built_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def html(fx, tmp_path_factory):
    return fx.render(tmp_path_factory.mktemp("report") / "report.html")


def _layout_table(html: str, anchor: str) -> str:
    sec = html[html.index(f'<section id="{anchor}"') :]
    return sec[sec.index('<table class="sortable layout">') : sec.index("</table>")]


def test_sections_and_contents(html, fx):
    for s in SECTIONS:
        assert f'<section id="{s}"' in html and f'href="#{s}"' in html
    for s in fx.studies:
        assert f'<section id="study-{s.name}"' in html and f'href="#study-{s.name}"' in html
    # the main part (summary, data, one section per study, test set, failures), then the appendix
    main = ("summary", "data", "study-optimizer_lr", "test-set", "failures")
    appendix = ("study-figures", "statistics", "secondary", "model-cards", "data-details", "provenance")
    order = [html.index(f'<section id="{s}"') for s in main] + [html.index('<div id="appendix"')]
    order += [html.index(f'<section id="{s}"') for s in appendix]
    assert order == sorted(order)
    assert re.findall(r'<h2><span class="secno">([A-Z])</span>', html) == list("ABCDEFG")  # with failure logs


def test_figure_count_matches_indices(html, fx):
    n = len(json.loads((fx.results / "figures" / "data" / "figures.json").read_text())["figures"])
    for s in fx.studies:
        n += len(json.loads((fx.results / "studies" / s.name / "figures" / "figures.json").read_text())["figures"])
    assert n == 22
    assert html.count("<figure ") == n
    assert html.count("<svg ") >= 16 and html.count('src="data:image/png;base64,') == 5
    assert "Figure 22." in html and "Figure 23." not in html


def test_self_contained(html):
    assert "<link" not in html and "@import" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "url(http" not in html
    assert "<style>" in html and "<script>" in html


def test_layout_table_values_and_status_words(html):
    t = _layout_table(html, "study-optimizer_lr")
    assert "0.820 ± 0.020 (3)" in t
    assert re.search(r'class="num st-ok best-row best-col best-all" data-sort="0\.82"><span class="v">0\.820', t)
    # all-diverged: the word, no number, empty sort key
    m = re.search(r'<td class="num st-diverged" data-sort="">(.*?)</td>', t)
    assert m and '<span class="status">diverged</span>' in m.group(1) and not re.search(r"\d\.\d", m.group(1))
    assert "1 of 3 diverged" in t and "1 of 3 failed" in t


def test_summary_sentences_from_data(html):
    summ = html[html.index('<section id="summary"') : html.index('<section id="data"')]
    # 3 seeds on a holdout of 2 validation patients: too few patients for an interval (the t-interval said
    # 0.770–0.870); the 3-fold study resamples runs × its 8 patients, each fold's set drawn on its own
    assert (
        "The best configuration is optimizer=adam, lr=0.001: mean best validation Dice 0.820 "
        "(n = 3; no interval: 2 validation patients, needs ≥ 3)." in summ
    )
    assert re.search(
        r"schedule=step: mean best validation Dice 0\.805 \(95 % bootstrap CI 0\.\d{3}–0\.\d{3} "
        r"over 3 runs × 8 patients in 3 validation sets\)\.",
        summ,
    )
    # claims rest on Holm's p, and say so
    assert "paired Wilcoxon over 3 seeds/folds, Holm-adjusted p = 1.000 over 4 comparisons" in summ
    assert "4 of 18 runs diverged, all with lr=0.01 (4 of the 6 runs with lr=0.01)." in summ
    assert "6 of 40 runs diverged: every run with lr ≥ 0.0364." in summ
    assert "too few pairs for the test to show any difference" in summ  # the numbers: the study pages


def test_data_section(html):
    data = html[html.index('<section id="data"') : html.index('<section id="study-')]
    assert re.search(r"33 files were checked during ingestion: \d+ ok, \d+ skipped", data), data
    assert "images</dt><dd>" in data and not re.search(r"\((\d+)–\1 per patient\)", data)  # "8–8 per patient"
    details = html[html.index('<section id="data-details"') :]  # the appendix: by reason, splits, figures
    assert "<code>no_contour</code>" in details and "<code>no_contour</code>" not in data
    assert "train @ 0.25" in details and "seed0-cv3" in details
    assert "Before and after CLAHE" in details or "before and after CLAHE" in details


def test_failures_with_log_lines(html):
    f = html[html.index('<section id="failures"') : html.index('<div id="appendix"')]
    logs = html[html.index('<section id="failure-logs"') : html.index('<section id="provenance"')]
    assert "no metrics (job failed)" in f and "RuntimeError: DataLoader worker" in logs
    assert "out of memory (RuntimeError)" in f
    assert "12 runs did not finish normally" in f


def test_provenance_and_no_secrets(html, fx):
    p = html[html.index('<section id="provenance"') :]
    assert "configuration hash" in p and "weasyprint" in p and "Fixture CPU @ 2.0GHz" in p
    assert SECRET_KEY not in html and "&lt;redacted&gt;" in p
    assert "77 runs" in p


def test_no_identifying_text(html, fx):
    assert LEAK_PROBE in (fx.results / "data" / "qc.csv").read_text()
    assert LEAK_PROBE not in html  # QC is reported as counts by reason, never as messages or file names
    ids = {p["id"] for p in json.loads((fx.results / "data" / "dataset.json").read_text())["patients"]}
    assert set(re.findall(r"\bp[0-9a-f]{8}\b", html)) <= ids


def test_missing_aggregate_names_the_file(fx, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(fx.results / "studies", res / "studies")
    (res / "studies" / "schedules" / "table.json").unlink()
    with pytest.raises(DataError, match="schedules/table.json"):
        render(tmp_path / "r.html", fx.config, fx.studies, res, tmp_path)


def test_inline_svg_prefixes_ids():
    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg xmlns="http://www.w3.org/2000/svg"><defs>'
        '<clipPath id="c1"><rect/></clipPath></defs><g clip-path="url(#c1)"><use xlink:href="#m0"/></g></svg>'
    )
    out = str(inline_svg(svg, "f3-"))
    assert out.startswith('<svg role="img" ')
    assert 'id="f3-c1"' in out and "url(#f3-c1)" in out and 'href="#f3-m0"' in out


def test_provenance_outside_git(tmp_path):
    assert git_info(tmp_path) is None
    p = collect({"data": {"pseudonym_key": "k"}, "seed": 1}, tmp_path)
    assert p["git"] is None and p["packages"]["numpy"] and p["python"]
    assert "<redacted>" in p["config_yaml"] and "k\n" not in p["config_yaml"]
    assert p["config_hash"] == collect({"seed": 1, "data": {"pseudonym_key": "k"}}, tmp_path)["config_hash"]
    assert p["config_hash"] != collect({"seed": 2, "data": {"pseudonym_key": "k"}}, tmp_path)["config_hash"]
    assert redacted({"a": 1}) == {"a": 1}


def test_source_date_epoch(monkeypatch, tmp_path):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert collect({}, tmp_path)["date"].startswith("1970-01-01T00:00:00")


@pytest.mark.parametrize(
    "caption", sorted((Path(__file__).parents[1] / "workflow" / "report").glob("*.rst")), ids=lambda p: p.name
)
def test_snakemake_captions_render(caption):
    """Render each caption as `snakemake --report` does (jinja2 without a loader, then docutils)."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    config = {"title": "Demo", "studies": {"a": {"title": "A", "axes": {"lr": [0.1]}}}}
    kinds = [Path(f).stem for f in FIGURE_FILES.values()] + [Path(f).stem for f in DATA_FIGURE_FILES.values()]
    for name in kinds:
        sm = SimpleNamespace(wildcards=SimpleNamespace(study="demo_study", name=name), config=config)
        text = env.from_string(caption.read_text()).render(snakemake=sm)
        html = publish_parts(text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5})
        body = html["html_body"]
        assert len(body) > 60
        if caption.name == "study_figures.rst" and name in [Path(f).stem for f in FIGURE_FILES.values()]:
            assert "demo_study" in body and f"demo_study: {name}." not in body  # a dedicated text per kind
        if caption.name == "data_figures.rst" and name in ("clahe", "intensity"):
            assert "CLAHE" in body


def test_snakemake_report_lists_the_studies():
    """`snakemake --report`'s front page (workflow.rst, rendered as Snakemake does: trim_blocks, lstrip_blocks,
    docutils) lists one item per study, not one run-on line; the report rule flags segsweep's own HTML and
    PDF for the zip, in category "report"."""
    import jinja2
    from docutils.core import publish_parts

    root = Path(__file__).parents[1]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    studies = {"a": {"title": "Study A", "axes": {"lr": [0.1]}}, "b": {"axes": {"optimizer": ["adam"], "lr": [1]}}}
    sm = type("Snakemake", (), {"config": {"title": "Demo", "studies": studies}})
    text = env.from_string((root / "workflow" / "report" / "workflow.rst").read_text()).render(snakemake=sm)
    body = publish_parts(text, writer="html")["html_body"]
    items = re.findall(r"<li>(.*?)</li>", body, re.S)
    assert len(items) == 2, body
    assert "Study A" in items[0] and "(a): axes lr" in items[0] and "(b): axes optimizer, lr" in items[1]
    rule = (root / "rules" / "report.smk").read_text()
    for out in ("html", "pdf"):
        assert re.search(rf'{out}=report\(REPORT_OUTPUTS\[\d\], category="report"', rule), rule


def test_study_where_nothing_finished(tmp_path):
    """No run wrote metrics and there is no data folder: the report still renders and says so plainly."""
    from segsweep.analysis.aggregate import aggregate_study
    from segsweep.report.plots import make_study_figures
    from segsweep.study import Study, StudyCell, TableLayout

    res = tmp_path / "results"
    cells = tuple(
        StudyCell(f"c{i}", (("lr", lr),), r, None)
        for i, (lr, r) in enumerate([("0.1", 0), ("0.1", 1), ("1", 0), ("1", 1)])
    )
    study = Study(
        "dead",
        "Dead study",
        "",
        "grid",
        ("lr",),
        TableLayout(rows=(), cols=("lr",), value="best_val_dice"),
        cells,
        {"lr": ("0.1", "1")},
    )
    sd = res / "studies" / "dead"
    aggregate_study(study, res / "cells", sd)
    assert {p.name for p in make_study_figures(study, sd, res / "cells", sd / "figures")} == set()
    html = render(tmp_path / "r.html", {"title": "T"}, [study], res, tmp_path)
    assert "No run of this study finished: 0 diverged, 4 failed." in html
    assert "No dataset.json was found." in html
    assert html.count('<span class="status">failed</span>') >= 2


def test_qc_counts_from_dataset_json_without_qc_csv(fx, tmp_path):
    res = tmp_path / "results"
    shutil.copytree(fx.results / "studies", res / "studies")
    (res / "data").mkdir()
    shutil.copy(fx.results / "data" / "dataset.json", res / "data" / "dataset.json")
    html = render(tmp_path / "r.html", fx.config, fx.studies, res, tmp_path)
    data = html.split('<section id="data"')[1].split("</section>")[0]
    details = html.split('<section id="data-details"')[1].split("</section>")[0]
    assert '<code>no_contour</code></td><td class="num">8</td>' in details
    assert "33 files were checked" in data


def test_table_1_says_when_two_studies_share_the_runs(fx):
    """Table 1: a configuration two studies share is one set of runs (the same cell ids), said in its note;
    its mean and interval are one column each (the units are said once, in the caption)."""
    import dataclasses

    from segsweep.report.render import load_study, top_rows, top_units

    study = next(s for s in fx.studies if s.name == "optimizer_lr")
    view = load_study(study, fx.results)
    twin = dataclasses.replace(view, study=dataclasses.replace(study, name="twin", title="Twin study"))
    rows = top_rows([view, twin], top_n=20)
    by_study = {}
    for r in rows:
        by_study.setdefault(r["study"], []).append(r)
    firsts = {r["config"] for r in rows if "the same runs as" not in r["note"]}
    assert len(by_study[study.title]) == len(by_study["Twin study"]) == len(rows) // 2
    for r in rows:
        if "the same runs as" in r["note"]:
            assert r["note"].endswith(f"the same runs as {study.title if r['study'] == 'Twin study' else 'Twin study'}")
            assert r["config"] in firsts
    assert sum("the same runs as" in r["note"] for r in rows) == len(rows) // 2
    for r in rows:
        assert re.fullmatch(r"0\.\d{3}", r["mean_text"]) or r["mean_text"] in ("diverged", "failed", "collapsed")
        if r["units"]:
            assert re.fullmatch(r"0\.\d{3}–(0\.\d{3}|1\.000)", r["ci_text"]), r
        else:
            assert r["ci_text"].startswith("no interval"), r
    units = {r["units"] for r in rows if r["units"]}
    assert top_units(rows) == (units.pop() if len(units) == 1 else None)
