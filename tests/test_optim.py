"""Optimizers: class and hyperparameters from CellParams; coupled vs decoupled weight decay on one step."""

import dataclasses

import pytest
import torch
from torch import nn

from segsweep.errors import ConfigError
from segsweep.plan.config import cell_params
from segsweep.training.optim import build_optimizer
from segsweep.training.params import CellParams

torch.set_num_threads(1)


def cell(**kw):
    return cell_params(kw)


def toy():
    """One parameter w = [1, -2] and the loss w·[1, 3] (gradient [1, 3])."""
    model = nn.Module()
    model.w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    return model


def one_step(params: CellParams) -> torch.Tensor:
    model = toy()
    opt = build_optimizer(params, model)
    (model.w * torch.tensor([1.0, 3.0], dtype=torch.float64)).sum().backward()
    opt.step()
    return model.w.detach()


def test_classes_and_hyperparameters():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].weight.requires_grad_(False)  # frozen parameters are left out
    sgd = build_optimizer(cell(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3), model)
    assert type(sgd) is torch.optim.SGD
    d = sgd.defaults
    assert (d["lr"], d["momentum"], d["nesterov"], d["weight_decay"], d["foreach"]) == (0.05, 0.8, True, 1e-3, True)
    assert sum(p.numel() for g in sgd.param_groups for p in g["params"]) == 2 * 9 + 2 + 2  # conv w, b; bn bias

    rms = build_optimizer(cell(optimizer="rmsprop", lr=1e-3, momentum=0.5, weight_decay=1e-4), model)
    assert type(rms) is torch.optim.RMSprop
    assert (rms.defaults["momentum"], rms.defaults["weight_decay"], rms.defaults["foreach"]) == (0.5, 1e-4, True)

    adam = build_optimizer(cell(optimizer="adam", lr=2e-4, weight_decay=1e-2), model)
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 1e-2 and adam.defaults["lr"] == 2e-4
    adamw = build_optimizer(cell(optimizer="adamw", lr=2e-4, weight_decay=1e-2), model)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 1e-2


def test_sgd_coupled_weight_decay_by_hand():
    # First SGD step (momentum buffer = gradient): w - lr·(g + wd·w) = [1, -2] - 0.1·([1, 3] + 0.5·[1, -2])
    #   = [1 - 0.15, -2 - 0.2] = [0.85, -2.2]
    w = one_step(cell(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.5))
    assert torch.allclose(w, torch.tensor([0.85, -2.2], dtype=torch.float64))


def test_adamw_differs_from_adam_with_weight_decay():
    # Adam's first step moves each coordinate by lr·ĝ/(|ĝ| + eps) ≈ lr·sign(ĝ).
    # Adam (coupled):  ĝ = g + wd·w = [1 + 0.5, 3 - 1] = [1.5, 2]  →  w = [1 - 0.1, -2 - 0.1] = [0.9, -2.1]
    # AdamW (decoupled): w·(1 - lr·wd) = [0.95, -1.9], then - lr·sign(g)  →  [0.85, -2.0]
    adam = one_step(cell(optimizer="adam", lr=0.1, weight_decay=0.5))
    adamw = one_step(cell(optimizer="adamw", lr=0.1, weight_decay=0.5))
    assert torch.allclose(adam, torch.tensor([0.9, -2.1], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(adamw, torch.tensor([0.85, -2.0], dtype=torch.float64), atol=1e-6)
    # without weight decay the two coincide
    assert torch.equal(one_step(cell(optimizer="adam", lr=0.1)), one_step(cell(optimizer="adamw", lr=0.1)))


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="'nesterov'"):
        build_optimizer(cell(optimizer="sgd", momentum=0.0, nesterov=True), toy())
    bad = dataclasses.replace(cell(optimizer="adam"), optimizer="lbfgs")
    with pytest.raises(ConfigError, match="'optimizer'"):
        build_optimizer(bad, toy())
