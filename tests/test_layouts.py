"""Layout discovery on generated trees of every layout and on the real Sunnybrook subset."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from segsweep.data import ingest, layouts
from segsweep.data.config import DataConfig
from segsweep.data.layouts import base
from segsweep.errors import ConfigError, DataError
from segsweep.plan import config as plan_config

OPTIONS: dict = {}  # no layout option given: layouts.resolve fills in each layout's defaults


def items_with(rec, *fields):
    return [it for it in rec.items if all(getattr(it, f) is not None for f in fields)]


@pytest.mark.parametrize("layout", layouts.LAYOUT_NAMES)
def test_discover_matches_the_phantom_manifest(phantom_trees, layout):
    root = phantom_trees[layout]
    manifest = json.loads((root / "MANIFEST.json").read_text())
    recs = [layouts.resolve(layout, r, OPTIONS) for r in layouts.discover(layout, root)]
    assert len(recs) == manifest["n_patients"] == 3
    assert [r.key for r in recs] == sorted(r.key for r in recs)
    for rec, info in zip(sorted(recs, key=lambda r: r.key), manifest["patients"]):
        assert len(items_with(rec, "image")) == info["images"]
        contoured = [it for it in rec.items if it.image and (it.inner or it.outer)]
        assert len(contoured) == info["contoured"]
        assert sum(1 for it in rec.items if it.inner and not it.outer) == info["inner_only"]
        for it in contoured:  # the contour file names carry the image's number
            if isinstance(it.inner, Path):
                assert f"{it.number:04d}" in it.inner.name
        assert all(a for a in rec.aliases)
        if layout in ("rtstruct", "nifti"):  # pairing by content: read in resolve
            assert [it.number for it in rec.items] == list(range(info["images"]))
        if layout == "sunnybrook":  # the localizer series is reported, not paired
            assert {n.reason for n in rec.notes} == {"series_not_selected"}
            assert all("IM-0004-" in it.image.name for it in items_with(rec, "image"))
        else:
            assert rec.notes == []


def test_detect_recognises_each_layout(phantom_trees, tmp_path):
    for layout, root in phantom_trees.items():
        assert layouts.detect(root) == layout
        bare = tmp_path / layout
        shutil.copytree(root, bare)
        (bare / "MANIFEST.json").unlink()  # names alone
        assert layouts.detect(bare) == layout


def test_real_sunnybrook_sample(phantom_sunnybrook_sample):
    recs = layouts.discover("sunnybrook_flat", phantom_sunnybrook_sample)
    assert [r.key for r in recs] == ["SCD0000101", "SCD0000201"]
    a, b = recs
    assert a.aliases == ("SCD0000101", "SC-HF-I-1")
    assert [it.number for it in a.items] == [59, 68, 79]
    assert [it.number for it in items_with(a, "image", "inner", "outer")] == [59, 79]
    assert [it.number for it in b.items] == [60, 67, 80]
    assert a.items[0].image.name == "59.dcm" and a.items[0].inner.name == "IM-0001-0059-icontour-manual.txt"
    assert a.notes == b.notes == []


@pytest.mark.parametrize("layout", layouts.LAYOUT_NAMES)
def test_missing_empty_and_file_roots_raise_data_error(tmp_path, layout):
    with pytest.raises(DataError, match="does not exist") as err:
        layouts.discover(layout, tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and layout in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        layouts.discover(layout, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        layouts.discover(layout, tmp_path / "file")


@pytest.mark.parametrize(
    "configured, actual",
    [
        ("rvsc", "sunnybrook_flat"),
        ("sunnybrook_flat", "rvsc"),
        ("sunnybrook", "rvsc"),
        ("rvsc", "sunnybrook"),
        ("nifti", "rvsc"),
        ("nifti", "rtstruct"),
        ("sunnybrook_flat", "nifti"),
    ],
)
def test_root_of_another_layout_is_named_in_the_error(phantom_trees, configured, actual):
    with pytest.raises(DataError) as err:
        layouts.discover(configured, phantom_trees[actual])
    msg = str(err.value)
    assert str(phantom_trees[actual]) in msg
    assert layouts.expected(configured) in msg
    assert f"looks like a '{actual}' tree" in msg


def test_schema_enums_match_the_layout_registry():
    """data.source offers "phantom" plus every registered layout; data.phantom.layout every layout."""
    data = plan_config.schema()["properties"]["data"]["properties"]  # filled from LAYOUTS at load
    names = set(layouts.LAYOUTS.names())
    assert names == set(layouts.LAYOUT_NAMES) and len(names) >= 3
    assert data["source"]["enum"] == ["phantom", *layouts.LAYOUTS.names()]
    assert data["phantom"]["properties"]["layout"]["enum"] == list(layouts.LAYOUTS.names())


def _documented_codes() -> dict[str, str]:
    """code -> severity of every row of docs/qc.md's reason tables (``| `code` | severity | meaning |``)."""
    doc = (Path(__file__).parents[1] / "docs" / "qc.md").read_text()
    return dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", doc, re.M))


def test_docs_qc_md_lists_every_qc_reason_with_its_severity():
    """The registry against the doc, both ways: each layout's own codes (``Layout.reasons``, gathered in
    ``ingest.QC_REASONS`` with discovery's, ingest's and the readers'), and no row for a code nothing raises."""
    documented, owner = _documented_codes(), {c: e.name for e in layouts.LAYOUTS for c in e.obj.reasons}
    missing = [f"{c} (layout {owner[c]})" if c in owner else c for c in ingest.QC_REASONS if c not in documented]
    assert not missing, f"QC reason codes missing from docs/qc.md: {', '.join(missing)}"
    wrong = {c: (documented[c], sev) for c, (sev, _) in ingest.QC_REASONS.items() if documented[c] != sev}
    assert not wrong, f"docs/qc.md gives another severity (doc, code): {wrong}"
    assert not set(documented) - set(ingest.QC_REASONS), "docs/qc.md lists codes nothing raises"
    assert {"rtstruct_roi_unmapped", "nifti_label_unmapped", "series_ambiguous"} <= {*owner}  # declared by layouts


def _layout(name, options=(), reasons=None) -> layouts.Layout:
    rvsc = layouts.LAYOUTS["rvsc"]
    return layouts.Layout(name, rvsc.discover, rvsc.phantom, "x", options=options, reasons=reasons or {})


def test_a_layout_declaration_that_clashes_stops_the_import():
    """Option names share the `data` block and reason codes share qc.csv: a second owner is refused, naming it."""
    roi = layouts.LayoutOption("roi_map", {"type": "object"}, dict, default={})
    with pytest.raises(ValueError, match="option 'roi_map' is declared by 'rtstruct' too"):
        base.register(_layout("toy", options=(roi,)))
    with pytest.raises(ValueError, match="QC reason 'nifti_no_spacing' exists already"):
        base.register(_layout("toy", reasons={"nifti_no_spacing": ("warning", "x")}))
    with pytest.raises(ValueError, match="QC reason 'toy_odd' has severity 'bad'"):
        base.register(_layout("toy", reasons={"toy_odd": ("bad", "x")}))
    with_default = layouts.LayoutOption("toy_n", {"type": "integer", "default": 1}, int, default=1)
    with pytest.raises(ValueError, match="option 'toy_n' has its default in LayoutOption.default"):
        base.register(_layout("toy", options=(with_default,)))
    assert "toy" not in layouts.LAYOUTS and "toy_odd" not in layouts.REASONS


def test_a_registered_layout_brings_its_option_and_reason():
    """register: the option is a schema key of `data` and of each `datasets` entry, parsed for its layout only,
    its default filled in for resolve; the code is a QC reason with its severity (ingest.severity)."""

    def parse(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"config key 'data.toy_n': expected an integer >= 1, got {value!r}")
        return value

    opt = layouts.LayoutOption("toy_n", {"type": "integer", "minimum": 1}, parse, default=2)
    base.register(_layout("toy", options=(opt,), reasons={"toy_odd": ("warning", "an odd one")}))
    try:
        assert plan_config.schema()["properties"]["data"]["properties"]["toy_n"]["minimum"] == 1
        assert ingest.severity("toy_odd") == "warning"
        assert layouts.parse_options("toy", {"toy_n": 3}) == (("toy_n", 3),)
        assert layouts.parse_options("toy", {"toy_n": 2}) == ()  # the default: not part of the data identity
        assert layouts.option_values("toy") == {"toy_n": 2} and layouts.option_values("toy", {"toy_n": 5}) == {
            "toy_n": 5
        }
        with pytest.raises(ConfigError, match="config key 'data.toy_n': read by the toy layout only"):
            layouts.parse_options("rvsc", {"toy_n": 3})
        cfg = {"seed": 0, "data": {"source": "phantom", "phantom": {}}}
        cfg["datasets"] = {"b": {**cfg["data"], "root": "/d", "source": "toy", "toy_n": 0}}
        with pytest.raises(ConfigError, match="config key 'datasets.b.toy_n': expected an integer >= 1"):
            DataConfig.from_config(cfg, "b")
        with pytest.raises(ConfigError, match="config key 'datasets.b.toy_n'"):
            plan_config.validate({"datasets": {"b": {"source": "toy", "root": "/d", "toy_n": 0}}})
    finally:
        layouts.LAYOUTS.unregister("toy")
        del layouts.REASONS["toy_odd"]
    assert "toy_n" not in plan_config.schema()["properties"]["data"]["properties"]


def test_layout_modules_import_only_base():
    """No import cycle: base imports no layout module, a layout module imports base only (not the package,
    not another layout), also not inside a function."""
    folder = Path(layouts.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        mods = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
            elif isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
        own = {m for m in mods if m.startswith("segsweep.data.layouts")}
        assert own == (set() if path.name == "base.py" else {"segsweep.data.layouts.base"}), path.name
        assert path.stem in layouts.LAYOUTS or path.name == "base.py", f"{path.name} registers no layout"


def test_unknown_layout_name():
    with pytest.raises(DataError, match="unknown data layout 'minc'"):
        layouts.discover("minc", ".")


def test_stray_files_become_notes_not_crashes(phantom_copy):
    root = phantom_copy("rvsc")
    pdir = root / "TrainingSet" / "patient01"
    (pdir / "P01dicom" / "notes.txt").write_text("scanner notes")
    (pdir / "P01dicom" / ".DS_Store").write_bytes(b"\x00\x01")
    (pdir / "P01contours-manual" / "P01-0001-icontour-auto.txt").write_text("1 2\n")
    (pdir / "extra").mkdir()
    with open(pdir / "P01list.txt", "a") as fh:
        fh.write(".\\patient01\\P01contours-manual\\P01-0099-icontour-manual.txt\r\n")
    rec = next(r for r in layouts.discover("rvsc", root) if r.key == "TrainingSet/patient01")
    notes = {(n.path.name, n.reason) for n in rec.notes}
    assert notes == {
        ("notes.txt", "unexpected_file"),
        (".DS_Store", "unexpected_file"),
        ("P01-0001-icontour-auto.txt", "unexpected_file"),
        ("extra", "unexpected_file"),
        ("P01-0099-icontour-manual.txt", "listed_contour_missing"),
    }


def test_rvsc_patient_folders_directly_under_root(phantom_copy, tmp_path):
    src = phantom_copy("rvsc")
    flat = tmp_path / "flat"
    shutil.copytree(src / "TrainingSet", flat)
    recs = layouts.discover("rvsc", flat)
    assert [r.key for r in recs] == ["patient01", "patient02", "patient03"]
    assert recs[0].aliases == ("patient01", "P01")


def test_rvsc_missing_image_folder(phantom_copy):
    root = phantom_copy("rvsc")
    shutil.rmtree(root / "TrainingSet" / "patient02" / "P02dicom")
    rec = next(r for r in layouts.discover("rvsc", root) if r.key.endswith("patient02"))
    assert [n.reason for n in rec.notes] == ["image_folder_missing"]
    assert all(it.image is None for it in rec.items) and rec.items


def test_sunnybrook_series_choice_and_override(phantom_copy):
    root = phantom_copy("sunnybrook")
    case = next((root / "challenge_training").iterdir())
    # a second full copy of the cine images under another series number: a tie
    for f in sorted(case.glob("IM-0004-*.dcm")):
        shutil.copy(f, case / f.name.replace("IM-0004-", "IM-0009-"))
    rec = next(r for r in layouts.discover("sunnybrook", root) if r.key == case.name)
    assert "series_ambiguous" in {n.reason for n in rec.notes}
    assert all(it.image.name.startswith("IM-0004-") for it in items_with(rec, "image"))
    (root / "series_map.csv").write_text(f"case,series\n{case.name},9\n")
    rec = next(r for r in layouts.discover("sunnybrook", root) if r.key == case.name)
    assert all(it.image.name.startswith("IM-0009-") for it in items_with(rec, "image"))
    assert "series_ambiguous" not in {n.reason for n in rec.notes}
    (root / "series_map.csv").write_text("patient\nfoo\n")
    with pytest.raises(DataError, match="series_map.csv"):
        layouts.discover("sunnybrook", root)


def test_sunnybrook_padded_contour_case_matches_unpadded_image_case(phantom_trees):
    recs = layouts.discover("sunnybrook", phantom_trees["sunnybrook"])
    for rec in recs:
        assert len(rec.aliases) == 2  # "SC-HF-I-1" (images) and "SC-HF-I-01" (contours)
        prefix, num = rec.key.rsplit("-", 1)
        assert set(rec.aliases) == {f"{prefix}-{int(num)}", f"{prefix}-{int(num):02d}"}


def test_flat_unlinked_folders_become_their_own_patients(phantom_sunnybrook_sample):
    root = phantom_sunnybrook_sample
    (root / "link.csv").write_text("patient_id,original_id\nSCD0000101,SC-HF-I-1\n")
    recs = {r.key: r for r in layouts.discover("sunnybrook_flat", root)}
    assert set(recs) == {"SCD0000101", "SCD0000201", "contours:SC-HF-I-2"}
    assert all(it.inner is None for it in recs["SCD0000201"].items)
    assert all(it.image is None for it in recs["contours:SC-HF-I-2"].items)
    (root / "link.csv").write_text("patient_id,original_id\nSCD0000101,\n")
    with pytest.raises(DataError, match="link.csv line 2"):
        layouts.discover("sunnybrook_flat", root)
