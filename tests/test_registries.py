"""Registries: schema enums equal the registered names, defaults come from the signatures, normalisation is
derived from the registries, bad values fail at plan time naming study and key, and a toy loss registered in
a test goes through plan → training → aggregation."""

import copy
import json

import pytest
import torch
from test_train import _write_dataset as write_dataset
from torch import nn

from segsweep.analysis.aggregate import aggregate_study
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
from segsweep.registry import Registry, keyword_defaults
from segsweep.training.finetune_modes import FINETUNE_MODES
from segsweep.training.loop import train_cell
from segsweep.training.losses import LOSSES, FocalLoss
from segsweep.training.model import MODELS
from segsweep.training.optim import OPTIMIZERS
from segsweep.training.params import cell_config_defaults, parse_loss, parse_schedule
from segsweep.training.regularizers import REGULARIZERS
from segsweep.training.schedules import SCHEDULES

torch.set_num_threads(1)


def _defs():
    return sc.schema()["definitions"]


# ------------------------------------------------------------------------------------ schema ↔ registry
def test_a_variant_registered_later_is_in_the_schema_at_once():
    """The enums are filled in from the registries at load (plan/config.py): no schema edit for a new name."""

    def toy_opt(*, lr, weight_decay):
        return lambda params: torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)

    study = {"s": _study({"lr": [1e-3]})}
    with pytest.raises(ConfigError, match=r"config key 'train\.optimizer'"):
        sc.prepare({"studies": study, "train": {"optimizer": "toy_opt"}})
    with OPTIMIZERS.registered("toy_opt", toy_opt):
        assert sc.prepare({"studies": study, "train": {"optimizer": "toy_opt"}})["train"]["optimizer"] == "toy_opt"
    assert "toy_opt" not in _defs()["cell"]["properties"]["optimizer"]["enum"]


def test_the_enum_table_is_checked_against_the_schema_file(monkeypatch):
    """A key the table fills must exist in the schema file and carry no hand-kept enum there."""
    raw = sc._schema_file()
    with_list = copy.deepcopy(raw)
    with_list["definitions"]["cell"]["properties"]["optimizer"]["enum"] = ["sgd"]
    monkeypatch.setattr(sc, "_schema_file", lambda: with_list)
    sc._schema_with.cache_clear()
    with pytest.raises(ValueError, match=r"lists the enum at .*'optimizer'.*remove it"):
        sc.schema()
    moved = copy.deepcopy(raw)
    del moved["definitions"]["cell"]["properties"]["regularizer"]
    monkeypatch.setattr(sc, "_schema_file", lambda: moved)
    sc._schema_with.cache_clear()
    with pytest.raises(KeyError, match="regularizer"):
        sc.schema()
    monkeypatch.undo()
    sc._schema_with.cache_clear()
    assert "enum" in sc.schema()["definitions"]["cell"]["properties"]["regularizer"]


def test_schema_enums_equal_registry_names():
    d = _defs()
    sched = d["schedule"]["oneOf"]
    assert set(sched[0]["enum"]) == set(SCHEDULES.names())
    assert set(sched[1]["properties"]["name"]["enum"]) == set(SCHEDULES.names())
    assert set(d["loss_term"]["properties"]["name"]["enum"]) == set(LOSSES.names())
    cell = d["cell"]["properties"]
    assert set(cell["optimizer"]["enum"]) == set(OPTIMIZERS.names())
    assert set(cell["regularizer"]["enum"]) == set(REGULARIZERS.names())
    assert set(cell["model"]["enum"]) == set(MODELS.names())
    assert set(cell["finetune"]["enum"]) == set(FINETUNE_MODES.names())


def test_every_variant_parameter_is_a_schema_key():
    d = _defs()
    sched_keys = set(d["schedule"]["oneOf"][1]["properties"])
    for name in SCHEDULES.names():
        assert set(SCHEDULES.params(name)) <= sched_keys, name
    loss_keys = set(d["loss_term"]["properties"])
    for name in LOSSES.names():
        assert set(LOSSES.params(name)) <= loss_keys, name
    cell = set(d["cell"]["properties"])
    for name in OPTIMIZERS.names():
        assert set(OPTIMIZERS.params(name)) <= cell, name
    for name in REGULARIZERS.names():
        assert {f"reg_{k}" for k in REGULARIZERS.params(name)} <= cell, name


def test_defaults_come_from_the_signatures():
    assert LOSSES.params("focal") == {"alpha": 0.25, "gamma": 2.0}
    assert LOSSES.params("bce") == {}
    assert LOSSES.params("combo") == {"ce_ratio": 0.5, "pos_weight": 1.0, "smooth": 1e-5}
    assert SCHEDULES.params("delayed_step") == {"gamma": 0.8, "step_epochs": 10, "delay_epochs": 50}
    assert OPTIMIZERS.params("sgd") == {"momentum": 0.0, "nesterov": False}
    assert OPTIMIZERS.params("adam") == {}
    assert REGULARIZERS.params("elastic") == {"l1_ratio": 0.5}
    assert MODELS.params("unet") == {}
    assert FINETUNE_MODES.params("discriminative") == {"encoder_lr_factor": 0.1}
    assert FINETUNE_MODES.params("freeze_then_unfreeze") == {"unfreeze_epoch": 1}
    ft = sc.cell_params({"finetune": "discriminative", "unfreeze_epoch": 3})  # the key it does not read: None
    assert (ft.encoder_lr_factor, ft.unfreeze_epoch) == (0.1, None)
    for reg in (LOSSES, SCHEDULES, OPTIMIZERS, REGULARIZERS, MODELS):
        for e in reg:
            assert reg.params(e.name) == keyword_defaults(e.obj)
    # parse_* fill in exactly those defaults
    assert dict(parse_loss("focal")[0].params) == {"alpha": 0.25, "gamma": 2.0}
    assert dict(parse_schedule("exponential").params) == {"rate": 0.96, "decay_steps": 100}
    assert FocalLoss().alpha == 0.25


def test_registry_basics():
    reg = Registry("widget", "widget")
    reg.register("a")(lambda *, x=1: x)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(lambda: 0)
    with pytest.raises(ConfigError, match=r"config key 'widget': unknown widget 'b' \(known: a\)"):
        reg["b"]
    with reg.registered("b", lambda *, y=2: y):
        assert reg.names() == ("a", "b") and reg.params("b") == {"y": 2}
    assert reg.names() == ("a",)
    p = reg.params("a")
    p["x"] = 5  # a caller's copy: the memo stays intact
    assert reg.params("a") == {"x": 1}
    reg.unregister("a")
    assert reg.names() == ()


def test_normalisation_follows_the_registries():
    """A key an optimizer/regulariser does not read gets the neutral value, whatever the config says."""
    adam = sc.cell_params({"optimizer": "adam", "momentum": 0.5, "nesterov": True})
    assert (adam.momentum, adam.nesterov) == (None, False)
    sgd = sc.cell_params({"optimizer": "sgd", "momentum": 0.5, "nesterov": True})
    assert (sgd.momentum, sgd.nesterov) == (0.5, True)
    rms = sc.cell_params({"optimizer": "rmsprop", "momentum": 0.5, "nesterov": True})
    assert (rms.momentum, rms.nesterov) == (0.5, False)
    assert sc.cell_params({"regularizer": "l2", "reg_lambda": 0.1, "reg_l1_ratio": 0.3}).reg_l1_ratio is None
    assert sc.cell_params({"regularizer": "elastic", "reg_lambda": 0.1, "reg_l1_ratio": 0.3}).reg_l1_ratio == 0.3

    def heavy_ball(*, lr, weight_decay, momentum=0.0):  # a new optimizer reading momentum only
        return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    with OPTIMIZERS.registered("heavy_ball", heavy_ball):
        p = sc.cell_params({"optimizer": "heavy_ball", "momentum": 0.7, "nesterov": True})
        assert (p.momentum, p.nesterov) == (0.7, False)


# ---------------------------------------------------------------------------------- plan-time errors
def _plan(studies, train=None, inject=None):
    cfg = sc.prepare({"studies": studies, "train": train or {}})
    if inject:
        inject(cfg)
    return build_plan(cfg)


def _study(axes, **kw):
    return {"axes": axes, "table": {"rows": list(axes)[:1], "cols": []}, **kw}


@pytest.mark.parametrize(
    "axes,base,match",
    [
        (
            {"loss": ["dice", [{"name": "focal", "alpha": 1.5}]]},
            {},
            r"^study 'bad': config key 'loss': focal alpha must lie in \[0, 1\], got 1.5$",
        ),
        (
            {"loss": [[{"name": "dice", "gamma": 2.0}]]},
            {},
            r"^study 'bad': config key 'loss': loss 'dice' takes no parameter\(s\) gamma",
        ),
        (
            {"schedule.rate": [0.9, -0.5]},
            {"schedule": "exponential"},
            r"^study 'bad': config key 'schedule': exponential needs rate > 0",
        ),
        (
            {"schedule.pct_start": [1.0]},
            {"schedule": "one_cycle"},
            r"^study 'bad': config key 'schedule': one_cycle needs .* 0 < pct_start < 1",
        ),
        (
            {"lr": [0.1]},
            {"optimizer": "sgd", "momentum": 0.0, "nesterov": True},
            r"^study 'bad': config key 'nesterov'",
        ),
    ],
)
def test_bad_values_fail_at_plan_time(axes, base, match):
    good = _study({"lr": [1e-3]})
    with pytest.raises(ConfigError, match=match):
        _plan({"good": good, "bad": _study(axes, base=base)})


def test_bad_model_value_fails_at_plan_time():
    def depth0(cfg):
        cfg["studies"]["m"]["base"] = {"depth": 0}  # below the schema's minimum: injected after validation

    with pytest.raises(ConfigError, match=r"^study 'm': config key 'depth': unet needs depth >= 1"):
        _plan({"m": _study({"lr": [1e-3]})}, inject=depth0)


# ---------------------------------------------------------------------------------------- a toy loss
class ToyLoss(nn.Module):
    """Mean squared error between sigmoid(logits) and the target, times ``scale``."""

    built = 0

    def __init__(self, *, scale: float = 1.0):
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"config key 'loss': toy scale must be > 0, got {scale}")
        type(self).built += 1
        self.scale = float(scale)

    def forward(self, logits, target):
        return self.scale * (torch.sigmoid(logits.float()) - target.float()).square().mean()


@pytest.fixture
def toy_loss():
    ToyLoss.built = 0
    with LOSSES.registered("toy", ToyLoss):
        yield ToyLoss
    assert "toy" not in LOSSES


def test_each_distinct_loss_is_built_once(toy_loss):
    lrs = [round(1e-3 * (i + 1), 6) for i in range(30)]
    plan = _plan({"s": _study({"lr": lrs, "loss": ["toy", "2*toy"]})})
    assert len(plan.cells) == 60 and toy_loss.built == 2

    def bad_scale(cfg):  # the schema's loss_term enum does not know "toy": inject after validation
        cfg["studies"]["s"]["base"] = {"loss": [{"name": "toy", "scale": -1.0}]}

    with pytest.raises(ConfigError, match=r"^study 's': config key 'loss': toy scale must be > 0"):
        _plan({"s": _study({"lr": [1e-3]})}, inject=bad_scale)


def test_toy_loss_from_plan_to_table(toy_loss, tmp_path):
    study = _study({"loss": ["dice", "dice"]})  # the second value becomes the toy loss below

    def inject(cfg):
        cfg["studies"]["toys"]["axes"]["loss"] = ["dice", "toy"]

    # enough training that neither model is `collapsed` (an empty prediction is no table number)
    train = {"epochs": 6, "depth": 2, "base_width": 4, "batch_size": 4, "lr": 0.01}
    plan = _plan({"toys": study}, train=train, inject=inject)
    s = plan.studies["toys"]
    assert [dict(c.labels)["loss"] for c in s.cells] == ["dice", "toy"]
    data_dir, split = write_dataset(tmp_path / "data", n_per_patient=2)  # tests/test_train.py
    for cid in s.cell_ids:
        m = train_cell(plan.cells[cid].params, data_dir, split, tmp_path / "cells" / cid)
        assert m.status == "ok"
    toy_id = next(c.cell_id for c in s.cells if dict(c.labels)["loss"] == "toy")
    assert plan.cells[toy_id].params.loss[0].name == "toy"
    df = aggregate_study(s, tmp_path / "cells", tmp_path / "agg")
    assert set(df["loss"]) == {"dice", "toy"} and set(df["status"]) == {"ok"}
    table = json.loads((tmp_path / "agg" / "table.json").read_text())
    labels = [r["labels"] for r in table["rows"]]
    i = labels.index({"loss": "toy"})
    assert table["cells"][i][0]["n"] == 1 and table["cells"][i][0]["mean"] is not None


def test_train_default_is_filled_from_cell_params_and_checked_against_the_cell_keys(monkeypatch):
    """`train.default` is written once (segsweep.training.params): the schema file may not repeat it, and a
    cell key the schema declares without a default there (or the reverse) stops the load, naming the key."""
    assert sc.schema()["properties"]["train"]["default"] == cell_config_defaults()
    raw = sc._schema_file()
    assert "default" not in raw["properties"]["train"]
    repeated = copy.deepcopy(raw)
    repeated["properties"]["train"]["default"] = {"lr": 0.001}
    monkeypatch.setattr(sc, "_schema_file", lambda: repeated)
    sc._schema_with.cache_clear()
    with pytest.raises(ValueError, match=r"lists train\.default"):
        sc.schema()
    extra = copy.deepcopy(raw)
    extra["definitions"]["cell"]["properties"]["label_smoothing"] = {"type": "number"}
    monkeypatch.setattr(sc, "_schema_file", lambda: extra)
    sc._schema_with.cache_clear()
    with pytest.raises(ValueError, match="label_smoothing"):
        sc.schema()
    monkeypatch.undo()
    sc._schema_with.cache_clear()


def test_a_fine_tune_setting_defaults_to_its_mode_keyword_default():
    d = sc.cell_defaults()
    for mode in FINETUNE_MODES.names():
        for key, default in FINETUNE_MODES.params(mode).items():
            assert d[key] == default, (mode, key)
