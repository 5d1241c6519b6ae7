"""Figures: which apply to which study, files and index, determinism, data figures."""

from __future__ import annotations

import json
import re
import shutil
import string
import xml.etree.ElementTree as ET

import pytest
from fixtures_results import built_fixture
from PIL import Image

from segsweep.report.plots import DATA_FIGURES, FIGURE_FILES, STUDY_FIGURES, make_data_figures, make_study_figures

EXPECTED = {
    "optimizer_lr": {"heatmap", "curves", "lr", "per_patient", "overlays"},
    "fraction_loss": {"heatmap", "curves", "fraction", "loss", "per_patient", "overlays"},
    "schedules": {"heatmap", "curves", "schedule", "per_patient", "overlays"},
    # 40 rows are too many for a heatmap; lr is the only numeric axis plotted
    "random_search": {"curves", "lr", "per_patient", "overlays"},
}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return built_fixture(tmp_path_factory)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figures_that_apply_and_only_those(fx, name):
    fig_dir = fx.results / "studies" / name / "figures"
    index = json.loads((fig_dir / "figures.json").read_text())["figures"]
    assert {f["kind"] for f in index} == EXPECTED[name]
    for kind, fname in FIGURE_FILES.items():
        assert (fig_dir / fname).exists() == (kind in EXPECTED[name]), fname
    for f in index:
        assert f["file"] == FIGURE_FILES[f["kind"]]
        assert f["title"] and len(f["caption"]) > 40
        p = fig_dir / f["file"]
        if p.suffix == ".svg":
            root = ET.parse(p).getroot()
            assert root.tag.endswith("svg")
        else:
            with Image.open(p) as im:
                assert im.info["dpi"][0] >= 150


def test_index_captions_are_the_registered_ones_filled_from_the_data(fx):
    indices = [(fx.results / "studies" / s.name / "figures" / "figures.json", STUDY_FIGURES) for s in fx.studies]
    indices.append((fx.results / "figures" / "data" / "figures.json", DATA_FIGURES))
    for index, reg in indices:
        for f in json.loads(index.read_text())["figures"]:
            meta = reg.entry(f["kind"]).meta
            assert f["file"] == meta["file"] and f["title"] == meta["title"]
            pattern = "".join(
                re.escape(text) + ("(.*)" if field is not None else "")
                for text, field, _, _ in string.Formatter().parse(meta["caption"])
            )
            assert re.fullmatch(pattern, f["caption"], re.DOTALL), (index, f["kind"])


def test_heatmap_names_statuses_as_words(fx):
    svg = (fx.results / "studies" / "optimizer_lr" / "figures" / "heatmap.svg").read_text()
    assert ">diverged<" in svg  # text kept as text (svg.fonttype none)
    assert "0.820" in svg


def test_deterministic_and_stale_figures_removed(fx, tmp_path):
    study = fx.study("optimizer_lr")
    sd = fx.results / "studies" / "optimizer_lr"
    out = tmp_path / "figs"
    out.mkdir()
    (out / "fraction.svg").write_text("<svg/>")  # left over from an earlier config with a fraction axis
    made = make_study_figures(study, sd, fx.results / "cells", out)
    assert not (out / "fraction.svg").exists()
    assert sorted(p.name for p in made) == sorted(FIGURE_FILES[k] for k in EXPECTED["optimizer_lr"])
    for name in ("heatmap.svg", "curves.svg", "lr.svg"):
        assert (out / name).read_bytes() == (sd / "figures" / name).read_bytes(), name


def test_curves_mark_diverged_runs(fx):
    index = json.loads((fx.results / "studies" / "optimizer_lr" / "figures" / "figures.json").read_text())
    curves = next(f for f in index["figures"] if f["kind"] == "curves")
    assert "One panel per optimizer" in curves["caption"]
    assert (
        ">collapsed / diverged / failed<"
        in (fx.results / "studies" / "optimizer_lr" / "figures" / "curves.svg").read_text()
    )


def test_overlays_show_the_best_configuration(fx):
    index = json.loads((fx.results / "studies" / "optimizer_lr" / "figures" / "figures.json").read_text())
    cap = next(f for f in index["figures"] if f["kind"] == "overlays")["caption"]
    assert "optimizer=adam, lr=0.001" in cap


def test_data_figures(fx, tmp_path):
    made = make_data_figures(fx.results / "data", tmp_path / "d")
    assert sorted(p.name for p in made) == ["clahe.png", "intensity.svg"]
    idx = json.loads((tmp_path / "d" / "figures.json").read_text())["figures"]
    assert [f["kind"] for f in idx] == ["clahe", "intensity"]
    with Image.open(tmp_path / "d" / "clahe.png") as im:
        assert im.info["dpi"][0] >= 150 and im.width > 400


def test_no_data_no_figures(tmp_path):
    assert make_data_figures(tmp_path / "empty", tmp_path / "out") == []
    assert json.loads((tmp_path / "out" / "figures.json").read_text()) == {"figures": []}


def test_study_without_histories_or_predictions(fx, tmp_path):
    """Figures that need per-cell files are skipped, the table-based ones still drawn."""
    study = fx.study("fraction_loss")
    sd = fx.results / "studies" / "fraction_loss"
    cells = tmp_path / "cells"
    for c in study.cell_ids:
        (cells / c).mkdir(parents=True)
        shutil.copy(fx.results / "cells" / c / "metrics.json", cells / c / "metrics.json")
    made = {p.name for p in make_study_figures(study, sd, cells, tmp_path / "figs")}
    assert made == {"heatmap.svg", "fraction.svg", "loss.svg"}
