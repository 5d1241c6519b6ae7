"""Keras-style weight regularisers: a penalty added to the training loss.

``penalty(model, kind, lam, l1_ratio, on)`` sums over the selected parameters ``w``:

* ``l1``      ``λ · Σ|w|``                          (Keras ``regularizers.L1(λ)``)
* ``l2``      ``λ · Σw²``                           (Keras ``regularizers.L2(λ)``: no ½ factor)
* ``elastic`` ``λ · (r · Σ|w| + (1 − r) · Σw²)``    (``r = l1_ratio``; Keras ``L1L2(λr, λ(1−r))``;
  Zou & Hastie, "Regularization and variable selection via the elastic net", JRSS-B 2005)

``on`` selects *kernels* (the ``weight`` of Conv/ConvTranspose/Linear layers, i.e. Keras'
``kernel_regularizer``) and/or *biases* (their ``bias``). Normalisation layers (BatchNorm, GroupNorm, ...)
and any other parameters are never penalised. Unlike optimizer weight decay, the penalty is part of the
loss, so its gradient goes through the optimizer's adaptive scaling (Adam, RMSprop).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from segsweep.errors import ConfigError

__all__ = ["penalty", "regularized_parameters", "KINDS", "TARGETS"]

KINDS = ("none", "l1", "l2", "elastic")
TARGETS = ("kernel", "bias")
# _ConvNd is the common base of Conv1d/2d/3d and ConvTranspose1d/2d/3d (and their lazy variants).
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def regularized_parameters(model: nn.Module, on: Sequence[str]) -> list[Tensor]:
    """The kernels and/or biases of the model's Conv/ConvTranspose/Linear layers, each once, in model order."""
    bad = sorted(set(on) - set(TARGETS))
    if bad:
        raise ConfigError(f"config key 'reg_on': unknown target(s) {', '.join(bad)} (known: kernel, bias)")
    want = [name for name, key in (("weight", "kernel"), ("bias", "bias")) if key in on]
    out, seen = [], set()
    for module in model.modules():
        if isinstance(module, _LAYER_TYPES):
            for attr in want:
                p = getattr(module, attr, None)
                if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
                    seen.add(id(p))  # a shared (tied) parameter is penalised once
                    out.append(p)
    return out


def penalty(model: nn.Module, kind: str, lam: float, l1_ratio: float | None, on: Sequence[str]) -> Tensor:
    """The regularisation term for ``model`` as a 0-dim tensor on the model's device (see module doc).

    ``kind == "none"`` (or ``lam == 0``) returns a constant zero without building any graph. The sums use
    ``torch._foreach_norm`` (one multi-tensor kernel per norm on CUDA) instead of one kernel per parameter.
    """
    if kind not in KINDS:
        raise ConfigError(f"config key 'regularizer': unknown kind '{kind}' (known: {', '.join(KINDS)})")
    lam = float(lam)
    if lam < 0:
        raise ConfigError(f"config key 'reg_lambda': must be >= 0, got {lam}")
    if kind == "elastic" and (l1_ratio is None or not 0.0 <= float(l1_ratio) <= 1.0):
        raise ConfigError(f"config key 'reg_l1_ratio': elastic net needs a value in [0, 1], got {l1_ratio}")
    if kind != "none" and not on:
        raise ConfigError("config key 'reg_on': choose at least one of kernel, bias")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if kind == "none" or lam == 0.0:
        return torch.zeros((), device=device)
    params = regularized_parameters(model, on)
    if not params:  # e.g. reg_on=[bias] on a model whose convolutions have no bias
        return torch.zeros((), device=device)

    def l1() -> Tensor:
        return torch.stack(torch._foreach_norm(params, 1)).sum()

    def l2() -> Tensor:
        # Σw² = Σ‖w‖₂²; the norm's backward is defined as 0 at w = 0, so the gradient 2w stays finite.
        return torch.stack(torch._foreach_norm(params, 2)).square().sum()

    if kind == "l1":
        return lam * l1()
    if kind == "l2":
        return lam * l2()
    r = float(l1_ratio)
    if r == 1.0:
        return lam * l1()
    if r == 0.0:
        return lam * l2()
    return lam * (r * l1() + (1.0 - r) * l2())
