"""Keras-style weight regularisers: a penalty added to the training loss.

``penalty(model, kind, lam, on, **settings)`` sums over the selected parameters ``w``:

* ``l1``      ``λ · Σ|w|``                          (Keras ``regularizers.L1(λ)``)
* ``l2``      ``λ · Σw²``                           (Keras ``regularizers.L2(λ)``: no ½ factor)
* ``elastic`` ``λ · (r · Σ|w| + (1 − r) · Σw²)``    (``r = l1_ratio``; Keras ``L1L2(λr, λ(1−r))``;
  Zou & Hastie, "Regularization and variable selection via the elastic net", JRSS-B 2005)

``on`` selects *kernels* (the ``weight`` of Conv/ConvTranspose/Linear layers, i.e. Keras'
``kernel_regularizer``) and/or *biases* (their ``bias``). Normalisation layers (BatchNorm, GroupNorm, ...)
and any other parameters are never penalised. Unlike optimizer weight decay, the penalty is part of the
loss, so its gradient goes through the optimizer's adaptive scaling (Adam, RMSprop).

Each kind is one function registered in ``REGULARIZERS``: ``R(params, *, <keys>) -> Tensor``, the penalty
before the factor λ. Its keyword-only arguments with defaults are the cell keys it reads, prefixed ``reg_``
(elastic: ``l1_ratio`` ↔ ``reg_l1_ratio``); `CellParams.from_config` normalises the others away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from segsweep.errors import ConfigError
from segsweep.lazy import LazyModule
from segsweep.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["check_regularizer", "penalty", "settings_of", "regularized_parameters", "REGULARIZERS", "TARGETS"]

# The checks (`check_regularizer`, each kind's ``check=``) are torch-free: the plan runs them. The penalties
# reach torch here.
torch = LazyModule("torch")
nn = LazyModule("torch.nn")

REGULARIZERS: Registry[Callable[..., Tensor]] = Registry("regularizer", "regularizer")
TARGETS = ("kernel", "bias")


def _layer_types() -> tuple[type, ...]:
    # _ConvNd is the common base of Conv1d/2d/3d and ConvTranspose1d/2d/3d (and their lazy variants).
    return (nn.modules.conv._ConvNd, nn.Linear)


def regularized_parameters(model, on: Sequence[str]) -> list[Tensor]:
    """The kernels and/or biases of the model's Conv/ConvTranspose/Linear layers, each once, in model order."""
    _check_targets(on)
    layer_types = _layer_types()
    want = [name for name, key in (("weight", "kernel"), ("bias", "bias")) if key in on]
    out, seen = [], set()
    for module in model.modules():
        if isinstance(module, layer_types):
            for attr in want:
                p = getattr(module, attr, None)
                if isinstance(p, nn.Parameter) and p.requires_grad and id(p) not in seen:
                    seen.add(id(p))  # a shared (tied) parameter is penalised once
                    out.append(p)
    return out


# ---------------------------------------------------------------------------------- the penalties R(w)
# The sums use ``torch._foreach_norm`` (one multi-tensor kernel per norm on CUDA), not one kernel per tensor.
def _l1(params: Sequence[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(params, 1)).sum()


def _l2(params: Sequence[Tensor]) -> Tensor:
    # Σw² = Σ‖w‖₂²; the norm's backward is defined as 0 at w = 0, so the gradient 2w stays finite.
    return torch.stack(torch._foreach_norm(params, 2)).square().sum()


@REGULARIZERS.register("none")
def no_penalty(params: Sequence[Tensor]) -> Tensor:
    """No penalty (`penalty` returns a constant zero before calling this)."""
    return torch.zeros((), device=params[0].device if params else None)


@REGULARIZERS.register("l1")
def l1(params: Sequence[Tensor]) -> Tensor:
    """``Σ|w|``"""
    return _l1(params)


@REGULARIZERS.register("l2")
def l2(params: Sequence[Tensor]) -> Tensor:
    """``Σw²``"""
    return _l2(params)


def _check_l1_ratio(*, l1_ratio: float | None) -> None:
    if l1_ratio is None or not 0.0 <= float(l1_ratio) <= 1.0:
        raise ConfigError(f"config key 'reg_l1_ratio': elastic net needs a value in [0, 1], got {l1_ratio}")


@REGULARIZERS.register("elastic", check=_check_l1_ratio)
def elastic(params: Sequence[Tensor], *, l1_ratio: float = 0.5) -> Tensor:
    """``r · Σ|w| + (1 − r) · Σw²`` with ``r = l1_ratio`` (r = 1 is L1, r = 0 is L2)."""
    _check_l1_ratio(l1_ratio=l1_ratio)
    r = float(l1_ratio)
    if r == 1.0:
        return _l1(params)
    if r == 0.0:
        return _l2(params)
    return r * _l1(params) + (1.0 - r) * _l2(params)


def _check_targets(on: Sequence[str]) -> None:
    bad = sorted(set(on) - set(TARGETS))
    if bad:
        raise ConfigError(f"config key 'reg_on': unknown target(s) {', '.join(bad)} (known: kernel, bias)")


def settings_of(params) -> dict[str, Any]:
    """A cell's settings for its regulariser: each keyword argument ``k`` of the kind's function
    (``REGULARIZERS.params``) read from the cell key ``reg_<k>`` (elastic: ``l1_ratio`` ← ``reg_l1_ratio``).
    A kind whose keyword has no such cell key is a ConfigError naming both (the plan runs this)."""
    out = {}
    for k in REGULARIZERS.params(params.regularizer):
        if not hasattr(params, f"reg_{k}"):
            raise ConfigError(
                f"config key 'regularizer': {params.regularizer!r} reads {k!r}, but no cell key 'reg_{k}' exists "
                "(CONTRIBUTING.md, 'Add a hyperparameter')"
            )
        out[k] = getattr(params, f"reg_{k}")
    return out


def check_regularizer(kind: str, lam: float, on: Sequence[str], **settings: Any) -> dict:
    """Check a cell's regulariser values without torch (the plan calls this): ConfigError naming the key.
    ``settings`` are the kind's keyword arguments (`settings_of`); returns those the kind's function takes."""
    entry = REGULARIZERS.entry(kind)  # ConfigError naming 'regularizer' for an unknown kind
    if float(lam) < 0:
        raise ConfigError(f"config key 'reg_lambda': must be >= 0, got {float(lam)}")
    if kind != "none" and not on:
        raise ConfigError("config key 'reg_on': choose at least one of kernel, bias")
    _check_targets(on)
    kwargs = {k: settings.get(k, default) for k, default in REGULARIZERS.params(kind).items()}
    if "check" in entry.meta:
        entry.meta["check"](**kwargs)
    return kwargs


def penalty(model, kind: str, lam: float, on: Sequence[str], **settings: Any) -> Tensor:
    """The regularisation term ``λ · R(w)`` for ``model`` as a 0-dim tensor on the model's device.

    ``kind == "none"`` (or ``lam == 0``) returns a constant zero without building any graph. ``settings``
    (`settings_of`: e.g. ``l1_ratio``) go to the kinds that read them (``REGULARIZERS.params``).
    """
    kwargs = check_regularizer(kind, lam, on, **settings)
    fn, lam = REGULARIZERS[kind], float(lam)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if kind == "none" or lam == 0.0:
        return torch.zeros((), device=device)
    params = regularized_parameters(model, on)
    if not params:  # e.g. reg_on=[bias] on a model whose convolutions have no bias
        return torch.zeros((), device=device)
    return lam * fn(params, **kwargs)
