"""CONTRIBUTING's recipes, all at once, from the plan to the report: a copy of the workflow (Snakefile, rules, scripts,
package) gets the toy variant of every kind whose code CONTRIBUTING shows, performed as written (`recipes.py`), and the
real Snakefile of the copy runs a tiny phantom study that uses them all. The finished report must name each toy and
hold numbers in range. A new kind is one entry of `RECIPES` (its code) and, when a study uses it, of `TOYS`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from recipes import (
    ROOT,
    add_cell_key,
    add_file_block,
    add_layout,
    add_schedule_key,
    append,
    recipe_blocks,
    table_examples,
)

pytestmark = pytest.mark.slow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW = ("Snakefile", "rules", "workflow", "config", "envs", "src", "pyproject.toml")  # what a run reads


def _python_block(heading: str, add):
    """The first python block under ``## <heading>``, performed by ``add(pkg, code)`` (`recipes.py`)."""
    return lambda pkg: add(pkg, next(c for lang, c in recipe_blocks(heading) if lang == "python"))


def _heading_block(heading: str, file: str):
    """The first python block under ``## <heading>``, appended to ``file`` of the package (the file the heading's
    text names)."""
    return _python_block(heading, lambda pkg, code: append(pkg / file, code))


def _table_blocks(pkg: Path) -> None:
    """Every block of "Add a schedule, optimizer, regulariser or model", each into the file its first line names,
    and poly's schema key."""
    files, schema_line = table_examples()
    for code in files.values():
        add_file_block(pkg, code)
    add_schedule_key(pkg, schema_line)


# kind(s) → how the recipe is performed in the package copy (CONTRIBUTING's code, never retyped here)
RECIPES = {
    "loss": _heading_block("Add a loss", "training/losses.py"),
    "schedule, optimizer, regulariser, post-processing, model, fine-tuning mode": _table_blocks,
    "search mode": _heading_block("Add a search mode", "plan/search.py"),
    "pruner": _heading_block("Add a pruner", "plan/pruning.py"),
    "figure": _heading_block("Add a figure", "report/plots.py"),
    "hyperparameter": _python_block("Add a hyperparameter (a new cell axis)", add_cell_key),
    "data layout": _python_block("Add a data layout", add_layout),
}

# cell key → (a built-in value, the toy): the study's axes, each value once across its points
TOYS = {
    "loss": ("dice + bce", "log_cosh_dice"),
    "schedule": ("none", "poly"),
    "optimizer": ("adam", "nadam"),
    "regularizer": ("none", "l3"),
    "model": ("unet", "tiny_net"),
    "finetune": ("full", "freeze_first_epoch"),
    "label_smoothing": (0, 0.1),
}

# the study: the toy search mode and pruner; every point a tiny phantom cell (seconds on one core), trained long
# enough that some run finishes ok (2 epochs collapse to "all foreground"): the figure and the final evaluation
# need one
CONFIG = {
    "title": "segsweep recipes end-to-end test",
    "seed": 3,
    "data": {
        "source": "phantom",
        "phantom": {
            "patients": 6,
            "slices": 4,
            "rows": 64,
            "cols": 56,
            "layout": "casefolder",
            "no_contour_fraction": 0.25,
        },
    },
    "preprocess": {"size": [32, 32]},
    "splits": {"seed": 0, "val_fraction": 0.34, "test_fraction": 0.17, "folds": 3},
    "train": {"epochs": 6, "depth": 2, "base_width": 8, "batch_size": 2, "lr": 0.01, "reg_lambda": 0.001},
    "resources": {"train_threads": 1, "ingest_threads": 1},
    "studies": {
        "toys": {
            "title": "Every toy variant",
            "mode": "latin_hypercube",
            "n": 3,
            "sample_seed": 1,
            "pruner": {"name": "median", "rungs": [2, 6]},
            "axes": {k: list(v) for k, v in TOYS.items()},
            "table": {"rows": ["loss"], "cols": []},
        }
    },
}
# what the report shows of the study-wide toys, made by the pipeline (the config's own text is in the report too):
# the layout the phantom was written in and read back through (the model card), the search mode in the study's
# design, the post-processing step's description among the final evaluation's candidates, the figure's title
SHOWN = [
    "phantom (casefolder), target endo",
    "latin_hypercube; 3 configurations",
    "morphological opening per slice",
    "Dice against epochs run",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipes-e2e")
    repo = base / "repo"
    repo.mkdir()
    for name in WORKFLOW:
        src, dst = ROOT / name, repo / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
        else:
            shutil.copy(src, dst)
    pkg = repo / "src" / "segsweep"
    for perform in RECIPES.values():
        perform(pkg)
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    # "then regenerate the .rst captions" (Add a figure), with the copy's package
    captions = [sys.executable, "-m", "segsweep.report.plots", "--write-captions", "--root", str(repo)]
    subprocess.run(captions, check=True, env=env, cwd=repo, capture_output=True, timeout=120)
    wd = base / "run"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    cmd = [SNAKEMAKE, "-s", str(repo / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    t0 = time.monotonic()
    proc = subprocess.run([*cmd, "--cores", "2"], capture_output=True, text=True, env=env, timeout=900)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    print(f"snakemake ran for {seconds:.0f} s")
    return repo, wd


def _history(wd: Path, cells: pd.DataFrame, axis: str, toy: str) -> pd.DataFrame:
    (cell,) = cells.loc[cells[axis] == toy, "cell"]
    return pd.read_csv(wd / "results" / "cells" / cell / "history.csv")


def test_every_recipe_reaches_the_report(run):
    _, wd = run
    study = wd / "results" / "studies" / "toys"
    cells = pd.read_csv(study / "cells.csv", dtype=str)
    assert len(cells) == CONFIG["studies"]["toys"]["n"]
    for axis, values in TOYS.items():  # the toy search mode spreads each axis's values over its points
        assert sorted(set(cells[axis])) == sorted(map(str, values)), (axis, list(cells[axis]))
    assert set(cells["status"]) <= {"ok", "collapsed", "pruned"}
    ok = cells[cells["status"] == "ok"]
    assert len(ok), "no run finished ok: the figure and the final evaluation have nothing to show"
    assert all(0.0 <= float(v) <= 1.0 for v in ok["val_dice_patient"])
    # the toys trained as their code says: poly decays the LR; the encoder's LR is 0 in the frozen first epoch only
    poly = _history(wd, cells, "schedule", "poly")
    assert poly["lr"].is_monotonic_decreasing and poly["lr"].iloc[-1] < poly["lr"].iloc[0]
    frozen = _history(wd, cells, "finetune", "freeze_first_epoch")
    assert frozen["lr_encoder"].iloc[0] == 0.0 and (frozen["lr_encoder"].iloc[1:] == frozen["lr"].iloc[1:]).all()
    # the toy pruner decided after its first rung; the runs it stopped are the study's pruned runs
    stage = json.loads((study / "prune" / "stage0.json").read_text())
    assert stage["rule"] == "at or above each rung's median" and stage["budget"]["value"] == 2
    stopped = {c for d in stage["pruned"] for c in d["cells"]}
    assert set(cells.loc[cells["status"] == "pruned", "cell"]) == stopped
    table = json.loads((study / "table.json").read_text())
    means = [x["mean"] for line in table["cells"] for x in line if x["mean"] is not None]
    assert means and all(0.0 <= m <= 1.0 for m in means)
    candidates = {c["name"]: c for c in table["final"]["candidates"]}
    assert 0.0 <= candidates["opening"]["dice_patient"] <= 1.0  # the toy post-processing was evaluated
    figures = json.loads((study / "figures" / "figures.json").read_text())
    assert "dice_vs_epochs" in {f["kind"] for f in figures["figures"]}
    html = (wd / "reports" / "report.html").read_text()
    for text in [*(f"{axis}={toy}" for axis, (_, toy) in TOYS.items()), *SHOWN]:  # configuration names: axis=value
        assert text in html, text
    if stopped:  # the pruning figure gives the toy pruner's reason
        assert "below the median of rung 1 (epoch 2)" in html
    assert (wd / "reports" / "report.pdf").read_bytes().startswith(b"%PDF")
