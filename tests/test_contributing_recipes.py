"""CONTRIBUTING's "Add a loss" and "Add a schedule, optimizer, regulariser or model" (its examples: post-processing
and fine-tuning modes included), performed as written in a copy of the package: the files the recipe names are the
only ones edited, the schema takes the new name, the plan makes cells with it without importing torch, and a tiny
cell trains with it to finite metrics (a post-processing step: it changes a hand-made mask as computed by hand)."""

import json
import math
import subprocess
import sys

import pytest
from recipes import add_file_block, add_schedule_key, append, copy_package, edited, recipe_blocks, table_examples
from test_train import _write_dataset

from segsweep.analysis.postprocess import POSTPROCESSING
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan

# In the copy: plan a study over `axes` (torch must stay out), then train one tiny cell per `train` entry.
_SCRIPT = """
import json, math, sys
sys.path.insert(0, {pkg_root!r})
import segsweep
assert segsweep.__file__.startswith({pkg_root!r}), segsweep.__file__
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
study = {{"axes": {axes!r}, "table": {{"rows": [{row!r}], "cols": []}}}}
plan = build_plan(sc.prepare({{"studies": {{"s": study}}}}))
planned = [getattr(plan.cells[c.cell_id].params, {row!r}) for c in plan.studies["s"].cells]
torch_in_plan = "torch" in sys.modules
import torch
torch.set_num_threads(1)
from segsweep.plan.config import cell_params
from segsweep.training.loop import train_cell
base = {{"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 2, "lr": 0.01, "optimizer": "adam", "loss": "dice"}}
trained = []
for i, kw in enumerate({train!r}):
    rows = []
    m = train_cell(cell_params({{**base, **kw}}), {data!r}, {split!r}, {out!r} + f"/c{{i}}", on_epoch=rows.append)
    m = m.to_json()
    vals = [v for k, v in m.items() if k.startswith("val_") and isinstance(v, float)]
    trained.append({{"status": m["status"], "finite": bool(vals) and all(math.isfinite(v) for v in vals),
                    "losses": [r["train_loss"] for r in rows], "lrs": [r["lr"] for r in rows],
                    "lrs_encoder": [r["lr_encoder"] for r in rows]}})
print(json.dumps({{"planned": [str(v) for v in planned], "torch_in_plan": torch_in_plan, "trained": trained,
                  "modules": sorted(sys.modules)}}))
"""


def _copy(tmp_path):
    return copy_package(tmp_path / "pkg" / "segsweep")


def _run(tmp_path, pkg, axes, row, train):
    data, split = _write_dataset(tmp_path / "data")
    script = _SCRIPT.format(
        pkg_root=str(pkg.parent),
        axes=axes,
        row=row,
        train=train,
        data=str(data),
        split=str(split),
        out=str(tmp_path / "cells"),
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["torch_in_plan"], "planning imported torch"
    for cell in got["trained"]:  # 2 epochs may still predict nothing ("collapsed"): a result, not an error
        assert cell["status"] in ("ok", "collapsed") and cell["finite"], cell
        assert all(math.isfinite(x) for x in cell["losses"]) and len(set(cell["losses"])) == 2, cell  # it learns
    return got["planned"], got["trained"], got["modules"]


def _not_yet_known(axes):
    with pytest.raises(ConfigError):
        build_plan(sc.prepare({"studies": {"s": {"axes": axes, "table": {"rows": [next(iter(axes))], "cols": []}}}}))


def test_contributing_add_a_loss_recipe_works(tmp_path):
    """The loss block appended to training/losses.py, that file alone: the three spellings the recipe promises plan
    and train."""
    ((lang, code),) = recipe_blocks("Add a loss")
    assert lang == "python"
    spellings = ["log_cosh_dice", "0.5*log_cosh_dice + bce", [{"name": "log_cosh_dice", "smooth": 0.1}]]
    _not_yet_known({"loss": spellings[:1]})
    pkg = _copy(tmp_path)
    append(pkg / "training" / "losses.py", code)
    assert edited(pkg) == ["training/losses.py"]  # "Nothing else lists it"
    planned, _, _ = _run(tmp_path, pkg, {"loss": spellings}, "loss", [{"loss": s} for s in spellings])
    assert len(planned) == 3 and all("log_cosh_dice" in p for p in planned), planned


def test_contributing_add_a_schedule_optimizer_regulariser_recipe_works(tmp_path):
    """The table's examples (the blocks under it), each appended to the file its first line names, plus the one
    schema key `poly`'s new keyword needs: one file per kind, and each plans and trains."""
    files, schema_line = table_examples()
    files = {
        f: c
        for f, c in files.items()
        if f in ("training/optim.py", "training/regularizers.py", "training/schedules.py")
    }
    assert len(files) == 3
    new = {"schedule": ["poly", {"name": "poly", "power": 2.0}], "optimizer": ["nadam"], "regularizer": ["l3"]}
    for key, values in new.items():
        _not_yet_known({key: values[:1]})
    pkg = _copy(tmp_path)
    for code in files.values():
        add_file_block(pkg, code)
    add_schedule_key(pkg, schema_line)
    assert edited(pkg) == sorted([*files, "plan/config.schema.yaml"])
    axes = {
        "schedule": new["schedule"],
        "optimizer": ["adam", "nadam"],
        "regularizer": ["none", "l3"],
        "reg_lambda": [1e-3],
    }
    train = [
        {"schedule": {"name": "poly", "power": 2.0}},
        {"optimizer": "nadam"},
        {"regularizer": "l3", "reg_lambda": 1e-3},
    ]
    planned, trained, _ = _run(tmp_path, pkg, axes, "schedule", train)
    assert trained[0]["lrs"][1] < trained[0]["lrs"][0], trained[0]  # poly decays the LR
    assert len(planned) == 2 * 2 * 2 and any("poly" in p for p in planned), planned


def test_contributing_add_a_model_recipe_works(tmp_path):
    """The model example: the spec appended to training/model.py, the network a new module (the two places the
    table names), and `model: tiny_net` plans without torch and trains."""
    files, _ = table_examples()
    _not_yet_known({"model": ["tiny_net"]})
    pkg = _copy(tmp_path)
    add_file_block(pkg, files["training/model.py"])
    add_file_block(pkg, files["training/tiny_net.py"])  # a new module: the block less its "# <file>" line
    assert edited(pkg) == ["training/model.py", "training/tiny_net.py"]
    planned, _, modules = _run(tmp_path, pkg, {"model": ["unet", "tiny_net"]}, "model", [{"model": "tiny_net"}])
    assert sorted(planned) == ["tiny_net", "unet"]
    assert "segsweep.training.tiny_net" in modules and "segsweep.training.unet" not in modules  # it trained TinyNet


def test_contributing_add_a_finetune_mode_recipe_works(tmp_path):
    """The fine-tuning mode example appended to training/finetune_modes.py, that file alone: `finetune:
    freeze_first_epoch` plans without torch, and its cell trains with the encoder frozen in epoch 1 only (its LR
    0, then the others'), where `full` trains it in both."""
    files, _ = table_examples()
    _not_yet_known({"finetune": ["freeze_first_epoch"]})
    pkg = _copy(tmp_path)
    add_file_block(pkg, files["training/finetune_modes.py"])
    assert edited(pkg) == ["training/finetune_modes.py"]
    axes = {"finetune": ["full", "freeze_first_epoch"]}
    planned, trained, _ = _run(tmp_path, pkg, axes, "finetune", [{"finetune": f} for f in axes["finetune"]])
    assert sorted(planned) == ["freeze_first_epoch", "full"]
    full, first_frozen = trained
    assert full["lrs_encoder"] == full["lrs"]
    assert first_frozen["lrs_encoder"] == [0.0, first_frozen["lrs"][1]] and first_frozen["lrs"][1] > 0


# In the copy: plan a study without torch, then post-process a mask with the new candidate.
_POST_SCRIPT = """
import json, sys
sys.path.insert(0, {pkg_root!r})
import numpy as np
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
build_plan(sc.prepare({{"studies": {{"s": {{"axes": {{"lr": [0.01]}}, "table": {{"rows": ["lr"], "cols": []}}}}}}}}))
torch_in_plan = "torch" in sys.modules
from segsweep.analysis import postprocess as pp
mask = np.array({mask!r}, dtype=np.uint8)
out = {{str(sp): pp.apply_postprocessing({name!r}, mask, sp).tolist() for sp in (None, (2.0, 2.0))}}
print(json.dumps({{"torch_in_plan": torch_in_plan, "names": pp.POSTPROCESSING.names(), "out": out,
                  "description": pp.describe({name!r})}}))
"""


def _grid(rows: str) -> list[list[int]]:
    return [[0 if ch == "." else int(ch) for ch in row] for row in rows.split()]


def test_contributing_add_a_postprocessing_recipe_works(tmp_path):
    """The post-processing example appended to analysis/postprocess.py, that file alone: it joins the candidates
    (after the built-in ones) without a config key, the plan stays torch-free, and it opens a hand-made mask as
    computed by hand: with 1 mm pixels its 2 mm radius is the 13-pixel disk, with 2 mm pixels the 5-pixel cross."""
    files, _ = table_examples()
    pkg = _copy(tmp_path)
    add_file_block(pkg, files["analysis/postprocess.py"])
    assert edited(pkg) == ["analysis/postprocess.py"]
    mask = _grid(
        """
        .........
        .11111...
        .11111...
        .11111...
        .11111...
        .11111...
        222......
        222.11111
        222......
        """
    )
    disk = """
        .........
        ...1.....
        ..111....
        .11111...
        ..111....
        ...1.....
        .........
        .........
        .........
        """  # the disk fits the 5×5 square only at its centre; the 3×3 square and the 1-pixel line go
    cross = """
        .........
        ..111....
        .11111...
        .11111...
        .11111...
        ..111....
        .2.......
        222......
        .2.......
        """  # each square loses its corners, the line goes; class 2 is opened on its own
    script = _POST_SCRIPT.format(pkg_root=str(pkg.parent), mask=mask, name="opening")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not got["torch_in_plan"], "planning imported torch"
    assert got["names"] == [*POSTPROCESSING.names(), "opening"]  # tried last, in registration order
    assert got["description"] == "morphological opening per slice (each class); radius_mm = 2"
    assert got["out"] == {"None": _grid(disk), "(2.0, 2.0)": _grid(cross)}
