"""LR schedules: closed forms at chosen steps, torch's schedulers over whole runs, LRSchedule on an optimizer."""

import math

import pytest
import torch

from segsweep.errors import ConfigError
from segsweep.training.params import ScheduleParams, parse_schedule
from segsweep.training.schedules import SCHEDULES, LRSchedule, lr_at

torch.set_num_threads(1)

LR0 = 0.01


def spec(name, **kw):
    return parse_schedule({"name": name, **kw})


def test_per_step_decays_at_step_250():
    # steps_per_epoch / epochs do not matter for these; step 250 with decay_steps 100 is 2.5 periods
    assert lr_at(spec("exponential", rate=0.96, decay_steps=100), LR0, 250, 7, 50) == pytest.approx(LR0 * 0.96**2.5)
    assert lr_at(spec("staircase", rate=0.96, decay_steps=100), LR0, 250, 7, 50) == pytest.approx(LR0 * 0.96**2)
    assert lr_at(spec("staircase", rate=0.96, decay_steps=100), LR0, 299, 7, 50) == pytest.approx(LR0 * 0.96**2)
    assert lr_at(spec("staircase", rate=0.96, decay_steps=100), LR0, 300, 7, 50) == pytest.approx(LR0 * 0.96**3)
    # inverse time: lr0 / (1 + 0.5 · 250/100) = lr0 / 2.25
    assert lr_at(spec("inverse_time", rate=0.5, decay_steps=100), LR0, 250, 7, 50) == pytest.approx(LR0 / 2.25)
    assert lr_at(spec("none"), LR0, 12345, 7, 50) == LR0
    for name in ("exponential", "staircase", "inverse_time"):
        assert lr_at(spec(name), LR0, 0, 7, 50) == LR0


def test_step_is_per_epoch():
    s = spec("step", gamma=0.5, step_epochs=10)
    # 10 steps per epoch: step 99 is epoch 9 (lr0), step 100 epoch 10 (×0.5), step 250 epoch 25 (×0.25)
    assert lr_at(s, LR0, 99, 10, 40) == LR0
    assert lr_at(s, LR0, 100, 10, 40) == pytest.approx(LR0 * 0.5)
    assert lr_at(s, LR0, 250, 10, 40) == pytest.approx(LR0 * 0.25)


def test_delayed_step_example():
    # "×0.8 every 10 epochs after 50": constant for epochs 0-49, ×0.8 from epoch 50, ×0.64 from 60, ...
    s = spec("delayed_step", gamma=0.8, step_epochs=10, delay_epochs=50)
    spe = 4
    expected = {0: 1.0, 49: 1.0, 50: 0.8, 59: 0.8, 60: 0.64, 69: 0.64, 70: 0.512, 80: 0.4096}
    for epoch, factor in expected.items():
        for step in (epoch * spe, epoch * spe + spe - 1):  # first and last step of the epoch
            assert lr_at(s, LR0, step, spe, 100) == pytest.approx(LR0 * factor), (epoch, step)


def test_cosine_closed_form():
    s = spec("cosine", eta_min=1e-4)
    spe, epochs = 5, 8  # T = 40 steps
    assert lr_at(s, LR0, 0, spe, epochs) == LR0
    assert lr_at(s, LR0, 20, spe, epochs) == pytest.approx((LR0 + 1e-4) / 2)
    assert lr_at(s, LR0, 10, spe, epochs) == pytest.approx(1e-4 + (LR0 - 1e-4) * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(s, LR0, 40, spe, epochs) == pytest.approx(1e-4)
    assert lr_at(s, LR0, 55, spe, epochs) == pytest.approx(1e-4)  # stays at the floor past the end


def test_cosine_matches_torch_per_step():
    spe, epochs, eta_min = 3, 7, 2e-4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spe * epochs, eta_min=eta_min)
    for step in range(spe * epochs):
        ours = lr_at(spec("cosine", eta_min=eta_min), LR0, step, spe, epochs)
        assert ours == pytest.approx(ref.get_last_lr()[0], rel=1e-9)  # torch's recursive form drifts slightly
        opt.step()
        ref.step()


def test_step_matches_torch_steplr_stepped_per_epoch():
    spe, epochs = 4, 25
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.3)
    s = spec("step", gamma=0.3, step_epochs=7)
    for epoch in range(epochs):
        for i in range(spe):
            assert lr_at(s, LR0, epoch * spe + i, spe, epochs) == pytest.approx(ref.get_last_lr()[0], rel=1e-12)
            opt.step()
        ref.step()


@pytest.mark.parametrize(
    "spe,epochs,factor,pct", [(7, 9, 10.0, 0.3), (10, 4, 5.0, 0.25), (1, 3, 10.0, 0.3), (3, 1, 2.0, 0.9)]
)
def test_one_cycle_matches_torch_over_a_full_run(spe, epochs, factor, pct):
    s = spec("one_cycle", max_lr_factor=factor, pct_start=pct)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR0 * factor, epochs=epochs, steps_per_epoch=spe, pct_start=pct, cycle_momentum=False
    )
    lrs = []
    for step in range(spe * epochs):
        lrs.append(lr_at(s, LR0, step, spe, epochs))
        assert lrs[-1] == pytest.approx(ref.get_last_lr()[0], rel=1e-12, abs=1e-15), step
        opt.step()
        ref.step()
    assert max(lrs) <= LR0 * factor * (1 + 1e-12)
    if pct * spe * epochs > 1:  # else torch (and we) start in the annealing phase already
        assert lrs[0] == pytest.approx(LR0 * factor / 25)
    assert lrs[-1] == pytest.approx(LR0 * factor / 25 / 1e4)
    assert lr_at(s, LR0, spe * epochs + 5, spe, epochs) == lrs[-1]  # held after the run


@pytest.mark.parametrize("name", sorted(SCHEDULES.names()))
def test_lrschedule_drives_a_real_optimizer(name):
    s = spec(
        name,
        **({"decay_steps": 3} if name in ("exponential", "staircase", "inverse_time") else {}),
        **({"step_epochs": 2} if name in ("step", "delayed_step") else {}),
        **({"delay_epochs": 3} if name == "delayed_step" else {}),
    )
    spe, epochs = 3, 6
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))  # float64: no cancellation
    opt = torch.optim.SGD([w], lr=123.0)  # the schedule must overwrite this at once
    sched = LRSchedule(s, opt, LR0, spe, epochs)
    seen = []
    for step in range(spe * epochs):
        expected = lr_at(s, LR0, step, spe, epochs)
        assert sched.lr == expected and opt.param_groups[0]["lr"] == expected
        before = w.detach().clone()
        opt.zero_grad()
        (w * torch.tensor([1.0, 3.0], dtype=torch.float64)).sum().backward()  # gradient [1, 3]
        opt.step()
        # plain SGD: the step moves w by exactly -lr · grad, so the optimizer really used this LR
        moved = before - w.detach()
        assert torch.allclose(moved, expected * torch.tensor([1.0, 3.0], dtype=torch.float64), rtol=1e-8, atol=0)
        sched.step()
        seen.append(expected)
    if name != "none":
        assert len(set(seen)) > 1  # the schedule really changes the LR within the run
    # resume: a fresh schedule loaded from the state continues at the same step
    again = LRSchedule(s, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), LR0, spe, epochs)
    again.load_state_dict(sched.state_dict())
    assert again.lr == sched.lr == lr_at(s, LR0, spe * epochs, spe, epochs)
    assert again.optimizer.param_groups[0]["lr"] == again.lr


def test_errors():
    with pytest.raises(ConfigError, match="'schedule'.*unknown schedule"):
        lr_at(ScheduleParams("warmup"), LR0, 0, 1, 1)
    with pytest.raises(ConfigError, match="'schedule'.*takes no parameter"):
        lr_at(ScheduleParams("exponential", (("gamma", 0.5),)), LR0, 0, 1, 1)
    with pytest.raises(ConfigError, match="'lr'"):
        lr_at(spec("none"), 0.0, 0, 1, 1)
    with pytest.raises(ValueError):
        lr_at(spec("none"), LR0, -1, 1, 1)
    with pytest.raises(ValueError):
        lr_at(spec("cosine"), LR0, 0, 0, 1)
