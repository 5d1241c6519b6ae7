"""Plan-time construction: build every distinct loss, schedule, optimizer, regulariser and model of a plan once.

The schema checks each value's type and range; the implementations check what only they know (focal alpha
in [0, 1], Nesterov needs momentum, a loss parameter the loss does not read, a nested ``schedule.rate`` axis
value the schema does not see...). Constructing each variant here makes such a value fail when the plan is
built, naming the study and the config key, instead of in a training job hours later:
``study 'losses': config key 'loss': focal alpha must lie in [0, 1], got 1.5``.

Each kind is built once per distinct spec (a memo keyed by the fields it reads), so a plan of 3,000 cells
with 10 distinct losses builds 10 losses. Models are built on the meta device: no memory, no weight init.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

import torch
from torch import nn

from segsweep.errors import ConfigError
from segsweep.study import Study
from segsweep.training.losses import build_loss
from segsweep.training.model import MODELS
from segsweep.training.optim import optimizer_factory
from segsweep.training.params import CellParams
from segsweep.training.regularizers import penalty
from segsweep.training.schedules import lr_at


class Cell(Protocol):
    """``segsweep.plan.cells.Cell`` (which imports this module): only its parameters are read."""

    params: CellParams


# The CellParams fields the model builder reads (the memo key of a model spec).
MODEL_FIELDS = (
    "in_channels",
    "depth",
    "base_width",
    "batch_norm",
    "dropout_down",
    "dropout_bottleneck",
    "dropout_up",
    "dropout_mode",
)


class _Dummy(nn.Module):
    """One conv (kernel + bias): a penalty on either target has something to sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)


def _checks(dummy: nn.Module) -> dict[str, tuple[Callable[[CellParams], Hashable], Callable[[CellParams], object]]]:
    """kind → (memo key of a cell's spec of that kind, construction)."""
    return {
        "loss": (lambda p: p.loss, lambda p: build_loss(p.loss)),
        "schedule": (lambda p: (p.schedule, p.lr, p.epochs), lambda p: lr_at(p.schedule, p.lr, 0, 1, p.epochs)),
        "optimizer": (
            lambda p: (p.optimizer, p.lr, p.weight_decay, p.momentum, p.nesterov),
            optimizer_factory,  # checks the values; creating a torch optimizer would import torch._dynamo
        ),
        "regularizer": (
            lambda p: (p.regularizer, p.reg_lambda, p.reg_l1_ratio, p.reg_on),
            lambda p: penalty(dummy, p.regularizer, p.reg_lambda, p.reg_l1_ratio, p.reg_on),
        ),
        "model": (lambda p: tuple(getattr(p, f) for f in MODEL_FIELDS), _build_model),
    }


def _build_model(p: CellParams) -> nn.Module:
    with torch.device("meta"):
        return MODELS["unet"](p, n_classes=1)


def check_cells(cells: Mapping[str, Cell], where: Mapping[str, str]) -> None:
    """Construct each distinct spec of every cell once; raise ConfigError naming the study and the key.

    ``where`` maps a cell id to the study named in the error (the first study that holds the cell).
    """
    checks = _checks(_Dummy())
    seen: dict[str, set] = {kind: set() for kind in checks}
    for cid, cell in cells.items():
        for kind, (key_of, build) in checks.items():
            key = key_of(cell.params)
            if key in seen[kind]:
                continue
            try:
                build(cell.params)
            except ConfigError as exc:
                raise ConfigError(f"study '{where.get(cid, '?')}': {exc}") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"study '{where.get(cid, '?')}': config key '{kind}': {exc}") from None
            seen[kind].add(key)


def check_plan(cells: Mapping[str, Cell], studies: Mapping[str, Study]) -> None:
    """`check_cells` with each cell attributed to the first study (in config order) that holds it."""
    where: dict[str, str] = {}
    for name, study in studies.items():
        for sc in study.cells:
            where.setdefault(sc.cell_id, name)
    check_cells(cells, where)
