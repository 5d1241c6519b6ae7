"""Learning-rate schedules as closed forms of the global optimizer step.

``lr_at(spec, lr0, step, steps_per_epoch, epochs)`` gives the LR used by optimizer step ``step``
(0-based; ``epoch = step // steps_per_epoch``; ``T = steps_per_epoch · epochs`` steps in the run).
Per-step schedules change every step, per-epoch ones at epoch boundaries. Each schedule is one function
registered in ``SCHEDULES``, ``f(lr0, steps_per_epoch, total_steps, *, <parameters>) -> (step -> lr)``; its
parameters are its keyword-only arguments, whose defaults are the config's defaults (``Registry.params``):

=============  ==========================================================================================
none           ``lr0``
inverse_time   ``lr0 / (1 + rate · step / decay_steps)``          (Keras ``InverseTimeDecay``)
exponential    ``lr0 · rate ^ (step / decay_steps)``              (Keras ``ExponentialDecay``)
staircase      ``lr0 · rate ^ floor(step / decay_steps)``         (``ExponentialDecay(staircase=True)``)
step           ``lr0 · gamma ^ floor(epoch / step_epochs)``       (``torch.optim.lr_scheduler.StepLR``)
delayed_step   ``lr0`` for ``epoch < E``; ``lr0 · gamma ^ (floor((epoch − E) / k) + 1)`` for ``epoch ≥ E``
               (``E = delay_epochs``, ``k = step_epochs``): the first multiplication happens at epoch E,
               the next ones every k epochs. "×0.8 every 10 after 50": epochs 0–49 lr0, 50–59 0.8·lr0,
               60–69 0.64·lr0, 70–79 0.512·lr0 (epochs 0-based). With E = 0 it is ``step`` times gamma.
cosine         ``eta_min + (lr0 − eta_min) · (1 + cos(π · min(step, T) / T)) / 2``, per step over the whole
               run without restarts (Loshchilov & Hutter, "SGDR", ICLR 2017; torch ``CosineAnnealingLR``
               closed form with ``T_max = T``). Step T−1, the last one, is just above eta_min.
one_cycle      torch ``OneCycleLR(max_lr = lr0 · max_lr_factor, total_steps = T, pct_start,
               anneal_strategy="cos", div_factor=25, final_div_factor=1e4, three_phase=False)``:
               cosine from ``max_lr/25`` up to ``max_lr`` over the steps ``0 … pct_start·T − 1``, then
               cosine down to ``max_lr/25/1e4`` at step ``T − 1`` (Smith & Topin, "Super-convergence",
               2019). Momentum is *not* cycled (``cycle_momentum=False``): only the LR changes. Steps
               past ``T − 1`` keep the final LR.
=============  ==========================================================================================

``LRSchedule`` applies a schedule to an optimizer; it is pure Python float math (no tensors, no syncs).
Invalid parameter values raise ``ConfigError`` naming the key ``schedule`` when the function is called; the
plan calls it once per distinct schedule (``segsweep.plan.validate``), so they fail at plan time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from segsweep.errors import ConfigError
from segsweep.registry import Registry


class ScheduleSpec(Protocol):
    """A schedule and its parameters (``segsweep.training.params.ScheduleParams``, which imports this module)."""

    name: str
    params: tuple[tuple[str, Any], ...]


__all__ = ["lr_at", "LRSchedule", "SCHEDULES", "ONE_CYCLE_DIV_FACTOR", "ONE_CYCLE_FINAL_DIV_FACTOR"]

LRFn = Callable[[int], float]
SCHEDULES: Registry[Callable[..., LRFn]] = Registry("schedule", "schedule")

ONE_CYCLE_DIV_FACTOR = 25.0  # torch OneCycleLR default: initial_lr = max_lr / 25
ONE_CYCLE_FINAL_DIV_FACTOR = 1e4  # torch default: min_lr = initial_lr / 1e4


def _params(spec: ScheduleSpec) -> dict[str, Any]:
    defaults = SCHEDULES.params(spec.name)  # ConfigError for an unknown name
    unknown = sorted(set(dict(spec.params)) - set(defaults))
    if unknown:
        raise ConfigError(f"config key 'schedule': schedule '{spec.name}' takes no parameter(s) {', '.join(unknown)}")
    return {**defaults, **dict(spec.params)}


def _cos_anneal(start: float, end: float, pct: float) -> float:
    # Same operation order as torch's OneCycleLR._annealing_cos, so the floats match bit for bit.
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _resolve(spec: ScheduleSpec, lr0: float, steps_per_epoch: int, epochs: int) -> LRFn:
    """Check the arguments once and return ``step -> lr`` for this schedule."""
    if not (lr0 > 0 and math.isfinite(lr0)):
        raise ConfigError(f"config key 'lr': must be a positive number, got {lr0}")
    if int(steps_per_epoch) < 1 or int(epochs) < 1:
        raise ValueError(f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}")
    spe, total = int(steps_per_epoch), int(steps_per_epoch) * int(epochs)
    p = _params(spec)
    return SCHEDULES[spec.name](lr0, spe, total, **p)


# ------------------------------------------------------------------------------------------ the schedules
# Arguments: the base LR, optimizer steps per epoch, steps in the run (T); keyword-only: the parameters.
@SCHEDULES.register("none")
def constant(lr0: float, steps_per_epoch: int, total_steps: int) -> LRFn:
    return lambda step: lr0


def _check_decay(name: str, rate: float, decay: float) -> None:
    if rate <= 0 or decay <= 0:
        raise ConfigError(f"config key 'schedule': {name} needs rate > 0 and decay_steps > 0")


@SCHEDULES.register("inverse_time")
def inverse_time(lr0: float, steps_per_epoch: int, total_steps: int, *, rate=0.5, decay_steps=100) -> LRFn:
    rate, decay = float(rate), float(decay_steps)
    _check_decay("inverse_time", rate, decay)
    return lambda step: lr0 / (1.0 + rate * step / decay)


@SCHEDULES.register("exponential")
def exponential(lr0: float, steps_per_epoch: int, total_steps: int, *, rate=0.96, decay_steps=100) -> LRFn:
    rate, decay = float(rate), float(decay_steps)
    _check_decay("exponential", rate, decay)
    return lambda step: lr0 * rate ** (step / decay)


@SCHEDULES.register("staircase")
def staircase(lr0: float, steps_per_epoch: int, total_steps: int, *, rate=0.96, decay_steps=100) -> LRFn:
    rate, decay = float(rate), float(decay_steps)
    _check_decay("staircase", rate, decay)
    return lambda step: lr0 * rate ** math.floor(step / decay)


def _check_step(name: str, gamma: float, k: int) -> None:
    if gamma <= 0 or k < 1:
        raise ConfigError(f"config key 'schedule': {name} needs gamma > 0 and step_epochs >= 1")


@SCHEDULES.register("step")
def step_decay(lr0: float, steps_per_epoch: int, total_steps: int, *, gamma=0.5, step_epochs=10) -> LRFn:
    gamma, k, spe = float(gamma), int(step_epochs), steps_per_epoch
    _check_step("step", gamma, k)
    return lambda step: lr0 * gamma ** ((step // spe) // k)


@SCHEDULES.register("delayed_step")
def delayed_step(
    lr0: float, steps_per_epoch: int, total_steps: int, *, gamma=0.8, step_epochs=10, delay_epochs=50
) -> LRFn:
    gamma, k, spe = float(gamma), int(step_epochs), steps_per_epoch
    _check_step("delayed_step", gamma, k)
    delay = int(delay_epochs)
    if delay < 0:
        raise ConfigError("config key 'schedule': delayed_step needs delay_epochs >= 0")

    def delayed(step: int) -> float:
        epoch = step // spe
        return lr0 if epoch < delay else lr0 * gamma ** ((epoch - delay) // k + 1)

    return delayed


@SCHEDULES.register("cosine")
def cosine(lr0: float, steps_per_epoch: int, total_steps: int, *, eta_min=0.0) -> LRFn:
    eta_min, total = float(eta_min), total_steps
    if eta_min < 0:  # eta_min > lr0 is allowed (an increasing ramp), as in torch
        raise ConfigError(f"config key 'schedule': cosine eta_min must be >= 0, got {eta_min}")
    return lambda step: eta_min + (lr0 - eta_min) * (1.0 + math.cos(math.pi * min(step, total) / total)) / 2.0


@SCHEDULES.register("one_cycle")
def one_cycle(lr0: float, steps_per_epoch: int, total_steps: int, *, max_lr_factor=10.0, pct_start=0.3) -> LRFn:
    factor, pct_start, total = float(max_lr_factor), float(pct_start), total_steps
    if factor <= 0 or not 0 < pct_start < 1:
        raise ConfigError("config key 'schedule': one_cycle needs max_lr_factor > 0 and 0 < pct_start < 1")
    max_lr = lr0 * factor
    initial = max_lr / ONE_CYCLE_DIV_FACTOR
    min_lr = initial / ONE_CYCLE_FINAL_DIV_FACTOR
    warm_end = float(pct_start * total) - 1  # last step of the warm-up phase, as torch computes it
    last = float(total - 1)

    def lr(step: int) -> float:
        step = min(step, total - 1)
        if step <= warm_end:
            # warm_end > 0 here unless pct_start·T == 1, where the warm-up is step 0 alone.
            return _cos_anneal(initial, max_lr, step / warm_end if warm_end > 0 else 0.0)
        span = last - warm_end
        return _cos_anneal(max_lr, min_lr, (step - warm_end) / span if span > 0 else 1.0)

    return lr


def lr_at(spec: ScheduleSpec, lr0: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning rate of global optimizer step ``step`` (0-based) under ``spec``; see the module table."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return _resolve(spec, lr0, steps_per_epoch, epochs)(int(step))


class LRSchedule:
    """Sets ``param_group['lr']`` of an optimizer from ``lr_at`` at every optimizer step; a group with an
    ``lr_factor`` entry gets ``lr_at × lr_factor`` (`segsweep.training.finetune`: the encoder's group).

    Usage: build after the optimizer (it sets the LR of step 0 at once), call ``step()`` right after every
    ``optimizer.step()``; ``lr`` is the LR the next/current optimizer step uses. ``state_dict`` /
    ``load_state_dict`` hold only the step count (the schedule itself comes from the config), so a resumed
    run continues the same closed form. ``steps_per_epoch`` must be the number of optimizer steps the
    training loop really takes per epoch, or the per-epoch schedules change at the wrong steps.
    """

    def __init__(self, spec: ScheduleSpec, optimizer: Any, lr0: float, steps_per_epoch: int, epochs: int):
        self.spec = spec
        self.optimizer = optimizer
        self._fn = _resolve(spec, lr0, steps_per_epoch, epochs)
        self.step_count = 0
        self._apply()

    @property
    def lr(self) -> float:
        return self._lr

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        self._lr = self._fn(self.step_count)
        for group in self.optimizer.param_groups:
            # a group's stored factor (discriminative fine-tuning: the encoder's) scales the scheduled LR
            group["lr"] = self._lr * group["lr_factor"] if "lr_factor" in group else self._lr

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
