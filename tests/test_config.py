"""Config validation names the key at fault; typed parameters normalise no-op differences."""

import pytest

from segsweep.data.config import DataConfig
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.training.params import CellParams, parse_loss

MIN_STUDY = {"axes": {"lr": [0.1]}, "table": {"rows": ["lr"], "cols": []}}


def prep(**kw):
    return sc.prepare({"studies": {"s": MIN_STUDY}, **kw})


def test_defaults_are_filled():
    cfg = prep()
    assert cfg["data"]["source"] == "phantom"
    assert cfg["preprocess"]["clahe"]["tile_grid"] == [8, 8]
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["epochs"] == 10
    assert cfg["splits"]["val_fraction"] == 0.25


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"data": {"sorce": "phantom"}}, "'data.sorce'"),
        ({"preprocess": {"clahe": {"clip_limit": -1}}}, "preprocess.clahe.clip_limit"),
        ({"train": {"optimiser": "adam"}}, "'train.optimiser'"),
        ({"train": {"optimizer": "adamax"}}, "train.optimizer"),
        ({"splits": {"val_fraction": 1.5}}, "splits.val_fraction"),
    ],
)
def test_typo_names_the_key(bad, key):
    with pytest.raises(ConfigError) as ei:
        prep(**bad)
    assert key in str(ei.value)


def test_study_typo_names_the_study_key():
    with pytest.raises(ConfigError, match=r"^config key 'studies\.s\.base\.lrr': unknown key \(closest known: lr\)$"):
        sc.prepare({"studies": {"s": {**MIN_STUDY, "base": {"lrr": 1}}}})


@pytest.mark.parametrize(
    "bad, line",
    [
        ({"train": {"depht": 2}}, "config key 'train.depht': unknown key (closest known: depth)"),
        (
            {"train": {"augment": {"flipp": True}}},
            "config key 'train.augment.flipp': unknown key (closest known: flip)",
        ),
        ({"titel": "x"}, "config key 'titel': unknown key (closest known: title)"),
        # nothing close: the keys known there
        (
            {"splits": {"zzz": 1}},
            "config key 'splits.zzz': unknown key (known: seed, val_fraction, test_fraction, folds)",
        ),
    ],
)
def test_a_typo_is_one_line_with_the_closest_known_keys(bad, line):
    with pytest.raises(ConfigError) as ei:
        prep(**bad)
    assert str(ei.value) == line


def test_unknown_scale_preset():
    with pytest.raises(ConfigError, match="scale"):
        prep(scale="tiny")


def test_real_data_needs_root():
    cfg = prep(data={"source": "rvsc"})
    with pytest.raises(ConfigError, match="data.root"):
        DataConfig.from_config(cfg)


def test_loss_string_and_list_forms_agree():
    a = parse_loss("0.5*tversky + dice + 0.5 * bce")
    b = parse_loss([{"name": "tversky", "weight": 0.5}, {"name": "dice"}, {"name": "bce", "weight": 0.5}])
    assert a == b
    assert [t.name for t in a] == ["tversky", "dice", "bce"]
    assert a[0].get("alpha") == 0.3 and a[0].get("beta") == 0.7  # schema-documented defaults
    with pytest.raises(ConfigError, match="dicee"):
        parse_loss("dicee + bce")


def test_irrelevant_keys_do_not_change_params():
    base = sc.cell_defaults()
    adam1 = CellParams.from_config({**base, "optimizer": "adam", "momentum": 0.9})
    adam2 = CellParams.from_config({**base, "optimizer": "adam", "momentum": 0.5})
    assert adam1 == adam2  # Adam has no momentum argument
    sgd1 = CellParams.from_config({**base, "optimizer": "sgd", "momentum": 0.9})
    sgd2 = CellParams.from_config({**base, "optimizer": "sgd", "momentum": 0.5})
    assert sgd1 != sgd2
    e1 = CellParams.from_config({**base, "schedule": {"name": "exponential", "gamma": 0.1}})
    e2 = CellParams.from_config({**base, "schedule": "exponential"})
    assert e1 == e2  # gamma is not an exponential-decay parameter


def test_dropout_forms_resolve_per_block():
    base = sc.cell_defaults()
    p = CellParams.from_config({**base, "dropout": 0.2, "dropout_blocks": 0.4, "dropout_body": 0.5})
    assert (p.dropout_down, p.dropout_bottleneck, p.dropout_up) == (0.4, 0.5, 0.4)
    q = CellParams.from_config({**base, "dropout": 0.3, "dropout_up": 0.1})
    assert (q.dropout_down, q.dropout_bottleneck, q.dropout_up) == (0.3, 0.3, 0.1)


def test_params_round_trip_through_json():
    import json

    p = CellParams.from_config(
        {
            **sc.cell_defaults(),
            "loss": "dice+bce",
            "schedule": {"name": "step", "gamma": 0.5},
            "regularizer": "l2",
            "reg_lambda": 0.01,
        }
    )
    assert CellParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_demo_config_loads():
    cfg = sc.load_config("config/config.yaml")
    assert cfg["studies"]


def test_nested_cli_config_values_are_read_as_the_schema_types():
    """Snakemake parses a nested --config value with YAML's BaseLoader (all strings): booleans, numbers and
    null are taken as such where the schema wants them, strings stay strings."""
    from snakemake.cli import parse_config

    cli = parse_config(["predict={input: /d, deidentify: true, batch_size: 8}", "train={epochs: 5, patience: null}"])
    assert cli["predict"]["deidentify"] == "true"  # what Snakemake hands over
    got = sc.coerce_cli_scalars(cli)
    assert got["predict"] == {"input": "/d", "deidentify": True, "batch_size": 8}
    assert got["train"] == {"epochs": 5, "patience": None}
    # through a $ref that points at a property, not a definition (datasets: {name: <data block>})
    ds = sc.coerce_cli_scalars(parse_config(["datasets={b: {source: phantom, phantom: {patients: 6}}}"]))
    assert ds["datasets"]["b"]["phantom"]["patients"] == 6
    assert sc.coerce_cli_scalars({"title": "true", "predict": {"deidentify": "maybe"}}) == {
        "title": "true",  # a string in the schema stays one
        "predict": {"deidentify": "maybe"},  # not a boolean: left for the schema to name
    }
