"""resources.amp / channels_last: "auto" (the default) decided on the training device, true / false honoured;
neither the cell ids nor Snakemake's params rerun trigger see the change of default (issue 21, part 4)."""

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.resources import ResourceConfig
from segsweep.training.device import resolve_speed_settings, speed_defaults
from segsweep.training.job import EXECUTION_SETTINGS, execution_settings, speed_settings

ROOT = Path(__file__).resolve().parents[1]


def test_auto_means_bf16_capable_cuda_only():
    assert speed_defaults("cuda", (8, 0)) and speed_defaults("cuda", (9, 0))  # A100, H100
    assert not speed_defaults("cuda", (7, 5))  # T4, RTX 20xx: no bf16 tensor cores
    assert not speed_defaults("cpu", None)


def test_resolved_on_the_cpu_and_logged(caplog):
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="t"):
        assert resolve_speed_settings("auto", "auto", cpu, logging.getLogger("t")) == (False, False)
    assert "resources.amp auto: off on this device (cpu)" in caplog.text
    assert "resources.channels_last auto: off" in caplog.text
    assert resolve_speed_settings(True, False, cpu) == (True, False)  # explicit values are honoured
    with pytest.raises(ConfigError, match="resources.amp"):
        resolve_speed_settings("fast", False, cpu)


def test_config_default_is_auto_and_validated():
    cfg = sc.validate({"resources": {}})
    res = ResourceConfig.from_config(cfg)
    assert (res.amp, res.channels_last) == ("auto", "auto") == (ResourceConfig().amp, ResourceConfig().channels_last)
    for bad in ("yes", 1):
        with pytest.raises(ConfigError, match="resources.channels_last"):
            ResourceConfig(channels_last=bad)
    with pytest.raises(ConfigError, match="resources.amp"):
        sc.validate({"resources": {"amp": 1}})


# How the train rules' params read before "auto" existed: the config's booleans, false by default.
OLD_DEFAULTS = {"device": "auto", "amp": False, "channels_last": False}


@pytest.mark.parametrize("amp", [None, False, True])
@pytest.mark.parametrize("channels_last", [None, False, True])
def test_rule_params_of_every_earlier_config_are_unchanged(amp, channels_last):
    """Snakemake reruns a finished job whose params' values changed: every config an earlier segsweep
    accepted (the keys absent, false or true) gives the params it gave then."""
    written = {k: v for k, v in (("amp", amp), ("channels_last", channels_last)) if v is not None}
    old = {**OLD_DEFAULTS, **written}
    assert ResourceConfig.from_config(sc.validate({"resources": written})).rerun_params() == old


def test_train_rules_take_those_params_and_auto_as_resources():
    # train and train_rung share their params (rules/train.smk TRAIN_PARAMS)
    shared = re.search(r"\nTRAIN_PARAMS = dict\(\n(.*?)\n\)", (ROOT / "rules" / "train.smk").read_text(), re.S).group(1)
    assert "**DEVICE_PARAMS" in shared and "amp=" not in shared and "channels_last=" not in shared
    for rule in ("train.smk", "prune.smk"):
        text = (ROOT / "rules" / rule).read_text()
        params = re.search(r"\n    params:\n(.*?)(\n    \w+:|\Z)", text, re.S).group(1)
        assert "**TRAIN_PARAMS" in params and "amp=" not in params and "channels_last=" not in params
    common = (ROOT / "rules" / "common.smk").read_text()
    assert "DEVICE_PARAMS = PLAN.resources.rerun_params()" in common
    assert "EXECUTION_RESOURCES = PLAN.resources.execution_resources()" in common
    res = ResourceConfig.from_config(sc.validate({"resources": {"channels_last": False}}))
    got = res.execution_resources()
    assert set(got) == set(EXECUTION_SETTINGS) and all(isinstance(v, int) for v in got.values())
    assert (got["amp_auto"], got["channels_last_auto"]) == (1, 0)


@pytest.mark.parametrize(("config_value", "expected"), [("auto", "auto"), (True, True), (False, False)])
def test_the_job_gets_the_setting_back(config_value, expected):
    """What the script passes (param ``bool(...)`` + resources) gives train_cell the config's value."""
    res = ResourceConfig(amp=config_value)
    settings = execution_settings(SimpleNamespace(**res.execution_resources()))
    assert speed_settings(bool(res.rerun_params()["amp"]), settings["amp_auto"]) == expected
