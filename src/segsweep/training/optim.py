"""Optimizer construction from a cell's parameters.

=========  ===============================================================================================
sgd        ``torch.optim.SGD(lr, momentum, nesterov, weight_decay)``: weight decay is coupled (added to the
           gradient, ``g + wd·w``; Robbins & Monro 1951; Nesterov as in Sutskever et al., ICML 2013)
rmsprop    ``torch.optim.RMSprop(lr, momentum, weight_decay)`` with torch's defaults ``alpha = 0.99``,
           ``eps = 1e-8`` (Keras uses rho = 0.9, eps = 1e-7); coupled weight decay (Hinton, lecture 6e)
adam       ``torch.optim.Adam(lr, weight_decay)``: coupled L2 (``g + wd·w`` enters the moment estimates;
           Kingma & Ba, ICLR 2015)
adamw      ``torch.optim.AdamW(lr, weight_decay)``: decoupled decay ``w ← w − lr·wd·w`` outside the
           adaptive step (Loshchilov & Hutter, ICLR 2019)
=========  ===============================================================================================

Weight decay applies to every trainable parameter (torch's default). Keras-style penalties restricted to
kernels/biases are ``segsweep.regularizers``. On the CPU all optimizers use the multi-tensor ``foreach``
implementation (measured faster than the per-tensor loop: Adam 0.80 vs 1.29 ms per step for a depth-3
U-Net's 46 tensors); on CUDA the ``fused`` one where torch has it (SGD, Adam, AdamW), else ``foreach``.

``torch._dynamo`` (1.6 CPU s to import here) is imported by every ``Optimizer.step`` call: torch wraps
``step`` in ``_use_grad_for_differentiable``, which runs ``import torch._dynamo`` unconditionally, and
``add_param_group`` in ``torch._disable_dynamo``. torch has no supported switch for either
(``TORCHDYNAMO_DISABLE`` still imports it), so a training process pays it once; a worker that trains many
cells pays it once for all of them.

Each optimizer is one builder registered in ``OPTIMIZERS``: ``f(*, lr, weight_decay, <keys>)`` checks the
values (``ConfigError`` naming the key) and returns ``trainable -> Optimizer``. Its keyword-only arguments
with defaults are the cell keys it reads (``OPTIMIZERS.params``: momentum, nesterov); `CellParams.from_config`
normalises the keys an optimizer does not read, so they do not split cells. The plan calls every distinct
builder once (``segsweep.plan.validate``) without creating the optimizer: torch's ``Optimizer.__init__``
imports ``torch._dynamo`` on first use (1.3 s), which planning need not pay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from segsweep.errors import ConfigError
from segsweep.lazy import LazyModule
from segsweep.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# The builders check values without torch (the plan calls them); the factories they return reach torch.
torch = LazyModule("torch")


class OptimizerSpec(Protocol):
    """What an optimizer is built from: a ``CellParams`` (whose module imports this one for OPTIMIZERS).

    The fields named by the builder's keyword parameters (momentum, nesterov) are read with ``getattr``.
    """

    optimizer: str
    lr: float
    weight_decay: float


__all__ = ["build_optimizer", "optimizer_factory", "OPTIMIZERS"]

OptimizerFactory = Callable[[Sequence["nn.Parameter"]], "torch.optim.Optimizer"]
OPTIMIZERS: Registry[Callable[..., OptimizerFactory]] = Registry("optimizer", "optimizer")


def _check_momentum(momentum: float) -> float:
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"config key 'momentum': must lie in [0, 1], got {momentum}")
    return momentum


def _torch_optimizer(cls_name: str, **kwargs) -> OptimizerFactory:
    """``trainable -> torch.optim.<cls_name>(trainable, **kwargs)`` with the fastest implementation torch
    offers for where the parameters are: ``fused`` (one kernel per step for all parameters) on CUDA for
    the classes that have it, else ``foreach``. On the CPU it is always ``foreach``, so CPU numbers do not
    depend on the torch build; fused and foreach differ in rounding only (measured in benchmarks/)."""

    def make(trainable):
        cls = getattr(torch.optim, cls_name)
        return cls(trainable, **kwargs, **_implementation(cls, trainable))

    make.cls_name, make.kwargs = cls_name, dict(kwargs)  # what the factory builds (tests, logs)
    return make


def _implementation(cls: type, trainable) -> dict:
    tensors = [p for g in trainable for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.is_cuda for p in tensors) and "fused" in inspect.signature(cls).parameters:
        return {"fused": True}
    return {"foreach": True}


@OPTIMIZERS.register("sgd")
def sgd(*, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False) -> OptimizerFactory:
    momentum = _check_momentum(momentum)
    if nesterov and momentum == 0.0:
        raise ConfigError("config key 'nesterov': Nesterov momentum needs momentum > 0")
    return _torch_optimizer("SGD", lr=lr, momentum=momentum, nesterov=bool(nesterov), weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(*, lr: float, weight_decay: float, momentum: float = 0.0) -> OptimizerFactory:
    momentum = _check_momentum(momentum)
    return _torch_optimizer("RMSprop", lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(*, lr: float, weight_decay: float) -> OptimizerFactory:
    return _torch_optimizer("Adam", lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(*, lr: float, weight_decay: float) -> OptimizerFactory:
    return _torch_optimizer("AdamW", lr=lr, weight_decay=weight_decay)


def optimizer_factory(params: OptimizerSpec) -> OptimizerFactory:
    """Check the cell's optimizer values and return ``trainable -> Optimizer`` (see module doc).

    The builder gets ``lr``, ``weight_decay`` and the cell fields named by its keyword parameters
    (``OPTIMIZERS.params``); a field that is None takes the builder's default.
    """
    lr, wd = float(params.lr), float(params.weight_decay)
    if not lr > 0:
        raise ConfigError(f"config key 'lr': must be > 0, got {lr}")
    if wd < 0:
        raise ConfigError(f"config key 'weight_decay': must be >= 0, got {wd}")
    builder = OPTIMIZERS[params.optimizer]
    keys = {k: getattr(params, k) for k in OPTIMIZERS.params(params.optimizer)}
    return builder(lr=lr, weight_decay=wd, **{k: v for k, v in keys.items() if v is not None})


def build_optimizer(params: OptimizerSpec, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer named by ``params.optimizer`` over the model's trainable parameters (see module doc)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    return optimizer_factory(params)(trainable)
