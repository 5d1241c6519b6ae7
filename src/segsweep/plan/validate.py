"""Plan-time checks: every distinct loss, schedule, optimizer, regulariser and model spec of a plan, once.

The schema checks each value's type and range; the variants' *specifications* check what only they know
(focal alpha in [0, 1], Nesterov needs momentum, a loss parameter the loss does not read, a nested
``schedule.rate`` axis value the schema does not see, a U-Net too deep for the image size, a binary-only loss
for a multi-class target, a pretrained file whose shapes do not fit the encoder...). Running them here makes
such a value fail when the plan is built (``snakemake -n``), naming the study and the config key, instead of
in a training job hours later: ``study 'losses': config key 'loss': focal alpha must lie in [0, 1], got 1.5``.

None of this imports torch: losses, optimizers and regularisers are constructed or checked by their torch-free
specifications (their modules import torch lazily, `segsweep.lazy`), models by `ModelSpec.check` without
building a network, pretrained files by reading their names and shapes only (`segsweep.training.pretrained`).
Each kind runs once per distinct spec (a memo keyed by the fields it reads), so a plan of 3,000 cells with 10
distinct losses builds 10 losses.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Protocol

from segsweep.errors import ConfigError
from segsweep.study import Study
from segsweep.training.losses import binary_only_error, build_loss
from segsweep.training.model import MODELS
from segsweep.training.optim import optimizer_factory
from segsweep.training.params import CellParams
from segsweep.training.regularizers import check_regularizer, settings_of
from segsweep.training.schedules import lr_at


class Cell(Protocol):
    """``segsweep.plan.cells.Cell`` (which imports this module): only its parameters are read."""

    params: CellParams


def _checks(
    n_outputs: int = 1, image_size: Sequence[int] | None = None
) -> dict[str, tuple[Callable[[CellParams], Hashable], Callable[[CellParams], object]]]:
    """kind → (memo key of a cell's spec of that kind, check). ``n_outputs``: the model's output channels
    (1 for a binary target, background + classes for a multi-class one); ``image_size``: the network's input."""
    return {
        "loss": (lambda p: p.loss, lambda p: _check_loss(p, n_outputs)),
        "schedule": (lambda p: (p.schedule, p.lr, p.epochs), lambda p: lr_at(p.schedule, p.lr, 0, 1, p.epochs)),
        "optimizer": (lambda p: (p.optimizer, p.lr, p.weight_decay, p.momentum, p.nesterov), optimizer_factory),
        "regularizer": (
            lambda p: (p.regularizer, p.reg_lambda, tuple(settings_of(p).items()), p.reg_on),
            lambda p: check_regularizer(p.regularizer, p.reg_lambda, p.reg_on, **settings_of(p)),
        ),
        # once per distinct architecture (+ pretrained file): no network is built
        "model": (
            # + batch_size: a batch of one image under a 1×1 BatchNorm bottleneck (`ModelSpec.min_batch`)
            lambda p: (p.model, p.pretrained, p.batch_size, tuple(MODELS[p.model].architecture(p).items())),
            lambda p: MODELS[p.model].check(p, n_outputs, image_size),
        ),
    }


def _check_loss(p: CellParams, n_outputs: int) -> None:
    """Build the loss (its values are checked); a binary-only (sigmoid) loss such as focal, wce or combo is
    refused for softmax outputs."""
    loss = build_loss(p.loss)
    if n_outputs > 1:
        for term, part in zip(p.loss, loss.losses):
            if getattr(part, "binary_only", False):
                exc = binary_only_error(term.name, n_outputs)
                raise ConfigError(f"{exc} (data.target has {n_outputs - 1} classes + background)")


def check_cells(
    cells: Mapping[str, Cell],
    where: Mapping[str, str],
    n_classes: int | Mapping[str, int] = 2,
    image_size: Sequence[int] | None = None,
) -> None:
    """Check each distinct spec of every cell once; raise ConfigError naming the study and the key.

    ``where`` maps a cell id to the study named in the error (the first study that holds the cell);
    ``n_classes``: label values of the data target, background included (`segsweep.data.config.N_CLASSES`),
    or per cell id (cells of data sets with different targets); ``image_size``: the network's input (H, W).
    """
    by_outputs: dict[int, dict] = {}
    seen: dict[str, set] = {}
    for cid, cell in cells.items():
        n = n_classes.get(cid, 2) if isinstance(n_classes, Mapping) else n_classes
        n_out = 1 if n <= 2 else n
        if n_out not in by_outputs:
            by_outputs[n_out] = _checks(n_out, image_size)
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
    """Every ``init_from`` source is a cell of the plan with the fine-tuned cell's architecture (the model and
    the values of its ``arch_fields``, which decide the parameter names and shapes)."""
    from segsweep.plan.finetune import check_sources

    check_sources(cells, where, lambda p: MODELS[p.model].architecture(p))


def check_plan(
    cells: Mapping[str, Cell],
    studies: Mapping[str, Study],
    n_classes: int | Mapping[str, int] = 2,
    image_size: Sequence[int] | None = None,
) -> None:
    """`check_cells` with each cell attributed to the first study (in config order) that holds it."""
    where: dict[str, str] = {}
    for name, study in studies.items():
        for sc in study.cells:
            where.setdefault(sc.cell_id, name)
    check_cells(cells, where, n_classes, image_size)
