"""CONTRIBUTING's "Add a loss" and "Add a schedule, optimizer, regulariser or model" (its examples), performed as
written in a copy of the package: the files the recipe names are the only ones edited, the schema takes the new name, the
plan makes cells with it without importing torch, and a tiny cell trains with it to finite metrics."""

import json
import math
import shutil
import subprocess
import sys

import pytest
import yaml
from recipes import ROOT, recipe_blocks
from test_train import _write_dataset

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
                    "losses": [r["train_loss"] for r in rows], "lrs": [r["lr"] for r in rows]}})
print(json.dumps({{"planned": [str(v) for v in planned], "torch_in_plan": torch_in_plan, "trained": trained,
                  "modules": sorted(sys.modules)}}))
"""


def _copy(tmp_path):
    pkg = tmp_path / "pkg" / "segsweep"
    shutil.copytree(ROOT / "src" / "segsweep", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def _edited(pkg) -> list[str]:
    """The package files whose text differs from src/segsweep's."""
    src = ROOT / "src" / "segsweep"
    return sorted(
        str(f.relative_to(pkg))
        for f in pkg.rglob("*")
        if f.is_file()
        and (not (src / f.relative_to(pkg)).is_file() or f.read_bytes() != (src / f.relative_to(pkg)).read_bytes())
    )


def _append(path, code):
    path.write_text(path.read_text().rstrip("\n") + "\n\n\n" + code.strip("\n") + "\n")


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


def _table_examples() -> tuple[dict[str, str], str]:
    """The python blocks under the table of "Add a schedule, optimizer, regulariser or model", by the file their
    first line names, and the yaml block (the schema key)."""
    blocks = recipe_blocks("Add a schedule, optimizer, regulariser or model")
    files = {c.splitlines()[0].removeprefix("# "): c for lang, c in blocks if lang == "python"}
    ((schema_line),) = [c for lang, c in blocks if lang == "yaml"]
    return files, schema_line


def test_contributing_add_a_loss_recipe_works(tmp_path):
    """The loss block appended to training/losses.py, that file alone: the three spellings the recipe promises plan
    and train."""
    ((lang, code),) = recipe_blocks("Add a loss")
    assert lang == "python"
    spellings = ["log_cosh_dice", "0.5*log_cosh_dice + bce", [{"name": "log_cosh_dice", "smooth": 0.1}]]
    _not_yet_known({"loss": spellings[:1]})
    pkg = _copy(tmp_path)
    _append(pkg / "training" / "losses.py", code)
    assert _edited(pkg) == ["training/losses.py"]  # "Nothing else lists it"
    planned, _, _ = _run(tmp_path, pkg, {"loss": spellings}, "loss", [{"loss": s} for s in spellings])
    assert len(planned) == 3 and all("log_cosh_dice" in p for p in planned), planned


def test_contributing_add_a_schedule_optimizer_regulariser_recipe_works(tmp_path):
    """The table's examples (the blocks under it), each appended to the file its first line names, plus the one
    schema key `poly`'s new keyword needs: one file per kind, and each plans and trains."""
    files, schema_line = _table_examples()
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
    for rel, code in files.items():
        _append(pkg / rel, code)
    schema = pkg / "plan" / "config.schema.yaml"
    doc = yaml.safe_load(schema.read_text())
    doc["definitions"]["schedule"]["oneOf"][1]["properties"].update(yaml.safe_load(schema_line.strip()))
    schema.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert _edited(pkg) == sorted([*files, "plan/config.schema.yaml"])
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
    files, _ = _table_examples()
    spec, net = files["training/model.py"], files["training/tiny_net.py"]
    _not_yet_known({"model": ["tiny_net"]})
    pkg = _copy(tmp_path)
    _append(pkg / "training" / "model.py", spec)
    (pkg / "training" / "tiny_net.py").write_text(net.split("\n", 1)[1])
    assert _edited(pkg) == ["training/model.py", "training/tiny_net.py"]
    planned, _, modules = _run(tmp_path, pkg, {"model": ["unet", "tiny_net"]}, "model", [{"model": "tiny_net"}])
    assert sorted(planned) == ["tiny_net", "unet"]
    assert "segsweep.training.tiny_net" in modules and "segsweep.training.unet" not in modules  # it trained TinyNet
