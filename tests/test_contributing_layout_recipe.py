"""CONTRIBUTING's "Add a data layout", performed as written in a copy of the package: the recipe's module is the
only file added; `data.source: casefolder` with the option of the recipe's yaml block plans, a typo'd or misplaced
option is a ConfigError naming the key, and ingest of a tree the test writes in that layout (from the RVSC phantom)
gives the arrays and QC rows of the RVSC phantom, plus a row with the layout's own reason code; the layout's own
phantom gives them too."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from recipes import add_layout, copy_package, edited, recipe_blocks

from segsweep.data import ingest, layouts
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
from segsweep.errors import ConfigError
from segsweep.plan import config as sc

PREP = PreprocessConfig(size=(48, 40))
# the session's RVSC phantom (tests/conftest.py `phantom_trees`): the layout's own phantom is made alike
PHANTOM = {"patients": 3, "slices": 4, "rows": 64, "cols": 56, "no_contour_fraction": 0.25, "seed": 7}
STUDY = {"s": {"axes": {"lr": [0.01]}, "table": {"rows": ["lr"], "cols": []}}}

# In the copy: plan the yaml block's data (and two wrong spellings), ingest the test's tree and the layout's phantom.
_SCRIPT = """
import json, sys
sys.path.insert(0, {pkg_root!r})
import segsweep
assert segsweep.__file__.startswith({pkg_root!r}), segsweep.__file__
from segsweep.data import ingest, phantom
from segsweep.data.config import DataConfig, DataFolders, PhantomConfig, PreprocessConfig, SplitConfig
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
prep = PreprocessConfig(size=(48, 40))
cfg = sc.prepare({{"data": {data!r}, "studies": {study!r}}})
plan, data = build_plan(cfg), DataConfig.from_config(cfg)
errors = []
for wrong in {wrong!r}:
    try:
        DataConfig.from_config(sc.prepare({{"data": wrong, "studies": {study!r}}}))
    except ConfigError as exc:
        errors.append(str(exc))
ingest.run(data, prep, {out!r} + "/tree")
ph = PhantomConfig(**{phantom!r}, layout="casefolder")
phantom.generate(ph, {out!r} + "/phantom-raw")
ingest.run(DataConfig("phantom", {out!r} + "/phantom-raw", "endo", False, "k", ph), prep, {out!r} + "/phantom")
print(json.dumps({{"cells": len(plan.cells), "options": dict(data.options), "errors": errors,
                  "folder": DataFolders.of(data, prep, SplitConfig.from_config(cfg)).key}}))
"""


def _write_tree(rvsc_root: Path, root: Path, suffix: dict) -> list[str]:
    """The RVSC phantom's patients in the recipe's layout: ``case<i>/<n>.dcm``, ``<n><suffix>.txt`` (the yaml
    block's suffixes), plus one contour file with a suffix in no list (the new reason code). Returns the case
    names in the RVSC patients' order."""
    cases = []
    for i, rec in enumerate(layouts.discover("rvsc", rvsc_root), 1):
        case = root / f"case{i}"
        case.mkdir(parents=True)
        for it in rec.items:
            for kind, path, name in (("image", it.image, ".dcm"), ("inner", it.inner, None), ("outer", it.outer, None)):
                if path is not None:
                    shutil.copy(path, case / f"{it.number}{name or suffix[kind] + '.txt'}")
        cases.append(case.name)
    first = next(it for it in layouts.discover("rvsc", rvsc_root)[0].items if it.inner is not None)
    shutil.copy(first.inner, root / "case1" / f"{first.number}-papillary.txt")
    return cases


def _arrays(out: Path, keys: list[str], pkey: str) -> list[dict]:
    return [dict(np.load(out / f"{ingest.pseudonym(pkey, k)}.npz")) for k in keys]


def _qc(out: Path, keys: list[str], pkey: str) -> list[Counter]:
    """Per patient (in ``keys`` order): how many rows of each (file kind, status, reason)."""
    order = {ingest.pseudonym(pkey, k): i for i, k in enumerate(keys)}
    rows = [Counter() for _ in keys]
    with open(out / "qc.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            rows[order[r["patient"]]][(Path(r["file"]).suffix, r["status"], r["reason"])] += 1
    return rows


def test_contributing_add_a_data_layout_recipe_works(phantom_trees, tmp_path):
    (code,) = [c for lang, c in recipe_blocks("Add a data layout") if lang == "python"]
    (usage,) = [c for lang, c in recipe_blocks("Add a data layout") if lang == "yaml"]
    data = yaml.safe_load(usage)["data"]
    assert data["source"] == "casefolder" and "contour_suffix" in data
    with pytest.raises(ConfigError, match="config key 'data.source'"):  # not known before the recipe
        sc.validate({"data": {"source": "casefolder"}})
    pkg = copy_package(tmp_path / "pkg" / "segsweep")
    assert add_layout(pkg, code) == "casefolder"
    assert edited(pkg) == ["data/layouts/casefolder.py"]  # "Nothing else is edited"

    rvsc_root = phantom_trees["rvsc"]
    cases = _write_tree(rvsc_root, tmp_path / "cases", data["contour_suffix"])
    data = {**data, "root": str(tmp_path / "cases")}
    typo = {**{k: v for k, v in data.items() if k != "contour_suffix"}, "contour_sufix": data["contour_suffix"]}
    misplaced = {"source": "rvsc", "root": str(rvsc_root), "contour_suffix": data["contour_suffix"]}
    out = tmp_path / "out"
    script = _SCRIPT.format(
        pkg_root=str(pkg.parent), data=data, study=STUDY, wrong=[typo, misplaced], out=str(out), phantom=PHANTOM
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])

    # plans, with its option (off its default: in the data identity), and names a wrong key
    assert got["cells"] == 1
    assert got["options"] == {"contour_suffix": [["inner", "-endo"], ["outer", "-epi"]]}
    assert got["errors"] == [
        "config key 'data.contour_sufix': unknown key (closest known: contour_suffix)",
        "config key 'data.contour_suffix': read by the casefolder layout only, and this data set's layout is rvsc: "
        "remove the key",
    ]

    # ingest: the RVSC phantom's arrays and QC rows, plus the stray contour's row with the new code
    ref = ingest.run(
        DataConfig("rvsc", str(rvsc_root), "endo", False, "segsweep", PhantomConfig()), PREP, tmp_path / "ref"
    )
    rvsc_keys = [r.key for r in layouts.discover("rvsc", rvsc_root)]
    ref_arrays, ref_qc = _arrays(tmp_path / "ref", rvsc_keys, "segsweep"), _qc(tmp_path / "ref", rvsc_keys, "segsweep")
    phantom_keys = [f"case{p:02d}" for p in range(1, 4)]  # the recipe's PhantomPaths
    for folder, keys, pkey in (("tree", cases, "segsweep"), ("phantom", phantom_keys, "k")):
        ds = json.loads((out / folder / "dataset.json").read_text())
        assert ds["layout"] == "casefolder" and ds["n_images"] == ref["n_images"] > 0
        for a, b in zip(ref_arrays, _arrays(out / folder, keys, pkey), strict=True):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"{folder}: {name}")
        qc = _qc(out / folder, keys, pkey)
        if folder == "tree":
            assert ds["qc_counts"] == {**ref["qc_counts"], "casefolder_contour_unknown": 1}
            assert qc[0] - ref_qc[0] == Counter({(".txt", "skipped", "casefolder_contour_unknown"): 1})
            qc[0][(".txt", "skipped", "casefolder_contour_unknown")] -= 1
        else:
            assert ds["qc_counts"] == ref["qc_counts"]
        assert [+c for c in qc] == ref_qc
    assert ingest.severity("contour_unused") == "info" and "casefolder_contour_unknown" not in ingest.QC_REASONS
