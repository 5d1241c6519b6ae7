"""The figure registries: one caption per figure, and the snakemake --report captions generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from segsweep.report import plots

ROOT = Path(__file__).parents[1]
REGISTRIES = {"study": plots.STUDY_FIGURES, "data": plots.DATA_FIGURES}


@pytest.mark.parametrize("kind", sorted(plots.CAPTION_FILES))
def test_checked_in_captions_are_generated_from_the_registry(kind):
    path = ROOT / plots.CAPTION_FILES[kind]
    assert path.read_text() == plots.captions_rst(kind), (
        f"{plots.CAPTION_FILES[kind]} is not what the figure registry generates: a figure or caption in "
        f"src/segsweep/report/plots.py changed. Regenerate it from the project root with "
        f"`.venv/bin/{plots.REGENERATE}` and commit the result."
    )


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_figure_has_file_title_and_a_caption_whose_fields_are_filled(kind):
    reg = REGISTRIES[kind]
    files = [e.meta["file"] for e in reg]
    assert files and len(set(files)) == len(files)
    assert len({Path(f).stem for f in files}) == len(files)  # the {name} wildcard of the report() patterns
    for e in reg:
        assert Path(e.meta["file"]).suffix in (".svg", ".png"), e.name
        assert e.meta["title"] and not e.meta["title"].endswith("."), e.name
        assert len(e.meta["caption"]) > 40, e.name
        fields = plots.caption_fields(e.meta["caption"])
        missing = fields - set(plots.GENERIC_FIELDS) - set(e.meta["generic"])
        assert not missing, f"{e.name}: caption fields {sorted(missing)} have no generic text for snakemake --report"
        assert not set(e.meta["generic"]) - fields, f"{e.name}: generic text for fields the caption lacks"
        generic = e.meta["caption"].format(**{**plots.GENERIC_FIELDS, **e.meta["generic"]})
        assert "{{" not in generic and "{%" not in generic and "{#" not in generic  # Jinja syntax
        assert f'{Path(e.meta["file"]).stem}" %}}' in plots.captions_rst(kind)


def test_file_maps_follow_the_registries():
    assert {e.name: e.meta["file"] for e in plots.STUDY_FIGURES} == plots.FIGURE_FILES
    assert {e.name: e.meta["file"] for e in plots.DATA_FIGURES} == plots.DATA_FIGURE_FILES
    report_order = [
        "heatmap",
        "curves",
        "fraction",
        "lr",
        "schedule",
        "loss",
        "per_patient",
        "overlays",
        "val_vs_test",  # shown in the report's Test set section
        "activations",  # the validation-selected cell inside (segsweep.report.inspect)
        "dead_channels",
        "weight_hist",
        "pruning",  # pruned studies only (segsweep.report.adaptive)
        "optuna_history",  # mode optuna only (segsweep.report.adaptive)
        "optuna_importance",
        "optuna_slices",
        "optuna_contour",
        "optuna_parallel",
        "optuna_trials",
    ]  # these keep their report order; a new figure may go anywhere between them
    assert [n for n in plots.FIGURE_FILES if n in report_order] == report_order


def test_write_captions_and_check(tmp_path, capsys):
    assert plots.main(["--check", "--root", str(tmp_path)]) == 1
    (tmp_path / "workflow" / "report").mkdir(parents=True)
    assert plots.main(["--write-captions", "--root", str(tmp_path)]) == 0
    for kind, rel in plots.CAPTION_FILES.items():
        assert (tmp_path / rel).read_text() == plots.captions_rst(kind)
    assert plots.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / plots.CAPTION_FILES["data"]).write_text("old\n")
    assert plots.main(["--check", "--root", str(tmp_path)]) == 1
    assert "--write-captions" in capsys.readouterr().out


def contributing_block(heading: str) -> str:
    """The first ```python block under ``## <heading>`` in CONTRIBUTING.md."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_contributing_add_a_figure_recipe_works(tmp_path):
    """CONTRIBUTING's "Add a figure", as written: register its example, regenerate the captions, find it there."""
    code = contributing_block("Add a figure")
    names = {e.name for e in plots.STUDY_FIGURES}
    try:
        exec(compile(code, "CONTRIBUTING.md", "exec"), dict(vars(plots)))
        (new,) = {e.name for e in plots.STUDY_FIGURES} - names
        (tmp_path / "workflow" / "report").mkdir(parents=True)
        assert plots.main(["--write-captions", "--root", str(tmp_path)]) == 0
        rst = (tmp_path / plots.CAPTION_FILES["study"]).read_text()
        assert f'name == "{new}" %}}' in rst and "against the epochs each run trained (all runs)" in rst
    finally:
        for n in {e.name for e in plots.STUDY_FIGURES} - names:
            plots.STUDY_FIGURES.unregister(n)
    without_generic = code.replace('    generic={"n": "all"},', "")
    assert without_generic != code
    with pytest.raises(ValueError, match=r"figure 'dice_vs_epochs': caption field\(s\) n need generic= text"):
        exec(compile(without_generic, "CONTRIBUTING.md", "exec"), dict(vars(plots)))
    assert "dice_vs_epochs" not in plots.STUDY_FIGURES
