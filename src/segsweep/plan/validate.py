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
    "model",
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


def _checks(
    dummy: nn.Module, n_outputs: int = 1
) -> dict[str, tuple[Callable[[CellParams], Hashable], Callable[[CellParams], object]]]:
    """kind → (memo key of a cell's spec of that kind, construction). ``n_outputs``: the model's output
    channels (1 for a binary target, background + classes for a multi-class one)."""
    return {
        "loss": (lambda p: p.loss, lambda p: _check_loss(p, n_outputs)),
        "schedule": (lambda p: (p.schedule, p.lr, p.epochs), lambda p: lr_at(p.schedule, p.lr, 0, 1, p.epochs)),
        "optimizer": (
            lambda p: (p.optimizer, p.lr, p.weight_decay, p.momentum, p.nesterov),
            optimizer_factory,  # checks the values; creating a torch optimizer would import torch._dynamo
        ),
        "regularizer": (
            lambda p: (p.regularizer, p.reg_lambda, p.reg_l1_ratio, p.reg_on),
            lambda p: penalty(dummy, p.regularizer, p.reg_lambda, p.reg_l1_ratio, p.reg_on),
        ),
        "model": (lambda p: tuple(getattr(p, f) for f in MODEL_FIELDS), lambda p: _build_model(p, n_outputs)),
        # once per distinct (encoder, weights file): names and shapes on the meta device, no tensor data read
        "pretrained": (lambda p: (p.model, p.in_channels, p.pretrained), _check_pretrained),
    }


def _build_model(p: CellParams, n_outputs: int = 1) -> nn.Module:
    with torch.device("meta"):
        return MODELS[p.model](p, n_classes=n_outputs)


def _check_loss(p: CellParams, n_outputs: int) -> nn.Module:
    """Build the loss; for softmax outputs also apply it once to a tiny one-hot case, so that a binary-only
    (sigmoid) loss such as focal, wce or combo names itself now rather than in every train job."""
    loss = build_loss(p.loss)
    if n_outputs > 1:
        target = torch.zeros(1, n_outputs, 2, 2)
        target[:, 0] = 1.0
        try:
            loss(torch.zeros(1, n_outputs, 2, 2), target)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (data.target has {n_outputs - 1} classes + background)") from None
    return loss


def _check_pretrained(p: CellParams) -> None:
    if p.pretrained is None:
        return
    from segsweep.training.backbones import adapt_state_dict, read_state_dict

    adapt_state_dict(_build_model(p), read_state_dict(p.pretrained.path, device="meta"), p.pretrained.path)


def check_cells(cells: Mapping[str, Cell], where: Mapping[str, str], n_classes: int | Mapping[str, int] = 2) -> None:
    """Construct each distinct spec of every cell once; raise ConfigError naming the study and the key.

    ``where`` maps a cell id to the study named in the error (the first study that holds the cell);
    ``n_classes``: label values of the data target, background included (`segsweep.data.config.N_CLASSES`),
    or per cell id (cells of data sets with different targets).
    """
    dummy = _Dummy()
    by_outputs: dict[int, dict] = {}
    seen: dict[str, set] = {}
    for cid, cell in cells.items():
        n = n_classes.get(cid, 2) if isinstance(n_classes, Mapping) else n_classes
        n_out = 1 if n <= 2 else n
        if n_out not in by_outputs:
            by_outputs[n_out] = _checks(dummy, n_out)
        checks = by_outputs[n_out]
        for kind, (key_of, build) in checks.items():
            key = (n_out, key_of(cell.params))
            if key in seen.setdefault(kind, set()):
                continue
            try:
                build(cell.params)
            except ConfigError as exc:
                raise ConfigError(f"study '{where.get(cid, '?')}': {exc}") from None
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"study '{where.get(cid, '?')}': config key '{kind}': {exc}") from None
            seen[kind].add(key)
    _check_init_from(cells, where)


def _check_init_from(cells: Mapping[str, Cell], where: Mapping[str, str]) -> None:
    """Every ``init_from`` source is a cell of the plan with the fine-tuned cell's architecture (parameter
    names and shapes compared on the meta device, once per distinct pair of model specs)."""
    from segsweep.plan.finetune import check_sources

    check_sources(cells, where, lambda p: _build_model(p).state_dict())


def check_plan(cells: Mapping[str, Cell], studies: Mapping[str, Study], n_classes: int | Mapping[str, int] = 2) -> None:
    """`check_cells` with each cell attributed to the first study (in config order) that holds it."""
    where: dict[str, str] = {}
    for name, study in studies.items():
        for sc in study.cells:
            where.setdefault(sc.cell_id, name)
    check_cells(cells, where, n_classes)
