"""A look inside the network: activation maps, dead channels and weight histograms render from a tiny trained
study (the validation-selected cell's best.pt on its validation images), and dead channels are counted right."""

import json

import numpy as np
import torch
from test_train import _write_dataset

from segsweep.analysis.aggregate import aggregate_study
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.report import inspect as figs
from segsweep.report.plots import make_study_figures
from segsweep.training.inspect import inspect_study, summarise
from segsweep.training.loop import train_cell
from segsweep.training.model import MODELS

torch.set_num_threads(1)


def test_figures_render_from_a_tiny_trained_study(tmp_path):
    cfg = sc.prepare(
        {
            "train": {"epochs": 2, "depth": 2, "base_width": 4, "batch_size": 4, "lr": 0.01},
            "studies": {"m": {"axes": {"model": ["unet", "resnet18_unet"]}, "table": {"rows": ["model"], "cols": []}}},
        }
    )
    plan = build_plan(cfg)
    study = plan.studies["m"]
    data_dir, split = _write_dataset(tmp_path / "data", n_per_patient=3)
    cells = tmp_path / "cells"
    for cid in study.cell_ids:
        train_cell(plan.cells[cid].params, data_dir, split, cells / cid)
        mj = cells / cid / "metrics.json"  # selection needs an ok run; 2 epochs may not be enough to get one
        mj.write_text(json.dumps({**json.loads(mj.read_text()), "status": "ok"}))
    sdir = tmp_path / "studies" / "m"
    aggregate_study(study, cells, sdir)
    picked = inspect_study("m", tmp_path / "studies", cells, sdir / figs.INSPECT_FILE)
    assert picked in study.cell_ids
    made = make_study_figures(study, sdir, cells, sdir / "figures")
    names = {p.name for p in made}
    assert {"activations.png", "dead_channels.svg", "weight_hist.svg"} <= names
    index = json.loads((sdir / "figures" / "figures.json").read_text())["figures"]
    cap = next(f["caption"] for f in index if f["kind"] == "dead_channels")
    assert picked in cap and "{" not in cap
    d = figs.load(sdir / figs.INSPECT_FILE)
    model = plan.cells[picked].params.model
    assert str(d["model"]) == model and len(d["images"]) == 3
    assert len(d["levels"]) == (10 if model == "resnet18_unet" else 5)
    # any cell on request (rules inspect_cell + inspect_cell_figures): the same figures from its own file
    from segsweep.training.inspect import inspect_cell

    other = next(c for c in study.cell_ids if c != picked)
    inspect_cell(cells / other, tmp_path / "other" / "inspect.npz")
    drawn = figs.draw_all(tmp_path / "other" / "inspect.npz", tmp_path / "other" / "figures")
    assert {p.name for p in drawn} == {"activations.png", "dead_channels.svg", "weight_hist.svg"}
    # a study without a finished run: an empty file, and the figures do not apply
    for cid in study.cell_ids:
        mj = cells / cid / "metrics.json"
        mj.write_text(json.dumps({**json.loads(mj.read_text()), "status": "failed"}))
    aggregate_study(study, cells, sdir)
    assert inspect_study("m", tmp_path / "studies", cells, sdir / figs.INSPECT_FILE) == ""
    assert figs.load(sdir / figs.INSPECT_FILE) is None
    names = {p.name for p in make_study_figures(study, sdir, cells, sdir / "figures")}
    assert not names & {"activations.png", "dead_channels.svg", "weight_hist.svg"}


def test_dead_channels_are_channels_zero_everywhere():
    p = sc.cell_params({"depth": 1, "base_width": 4, "batch_norm": False})
    torch.manual_seed(0)
    net = MODELS["unet"](p)
    with torch.no_grad():  # kill two of enc0's four channels: bias −∞-ish, weights 0 → ReLU output 0
        conv = net.encoders[0][2]
        conv.weight[:2] = 0
        conv.bias[:2] = -1.0
    out = summarise(net, p, np.random.default_rng(0).random((5, 16, 16), dtype=np.float32), [0, 3], top_k=2)
    assert list(out["levels"]) == ["enc0", "bottleneck", "dec0"]
    assert out["dead_fraction"][0] == 0.5 and out["n_channels"][0] == 4
    assert out["mean_0"].shape == (2, 16, 16) and out["top_0"].shape == (2, 2, 16, 16)
    assert not set(out["topch_0"]) & {0, 1}  # dead channels are never the strongest
