"""Cell ids: pinned for the demo, stable when a field with a neutral default is added, and the train rule's
params (a Snakemake rerun trigger) use the same identity form."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
from recipes import add_cell_key, copy_package, edited, recipe_blocks

from segsweep.io import added_field, digest
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan, cell_id
from segsweep.training.params import CellParams, _plain_types, cell_config_defaults, cell_key, cell_key_schemas

ROOT = Path(__file__).resolve().parents[1]
# The demo's cells (config/config.yaml). 0.2.0 changed every id once: the data identity no longer holds the
# root path string or data.strict; from here on a new field at its neutral value keeps them.
DEMO_IDS = [
    "0dd8815727ec",
    "1758ac1bf29d",
    "23853e991e6f",
    "283bbee9b2ec",
    "3a71f3639929",
    "4538d7e872e5",
    "53d3a4d43172",
    "561015c6a9a3",
    "580c2e130f31",
    "585af9cfb7aa",
    "5ccf06d8f490",
    "5f3000aa1c11",
    "60667b676399",
    "680003d28590",
    "6d8c339c0004",
    "82ce48ef4375",
    "8498fb7d8f8a",
    "8734d5dc931b",
    "911e3759cbe6",
    "9532edd27815",
    "bd9a3455f1ae",
    "be6bb2cc15df",
    "bf32e3bcda33",
    "c06dfe108505",
    "c13a8c943e5f",
    "c36a06e66ca5",
    "c922860e03c1",
    "cc06a36dc05c",
    "ccc7719cd09a",
    "cff3ad39978e",
    "d9c424bd7f48",
    "e2a40f06acec",
    "e572abd1c3f7",
    "f214877efd63",
    "f79e3b0b8eeb",
    "f7b2dc112979",
]


def demo_plan():
    """The demo's plan without its test set (splits.test_fraction 0): a config that does not hold out test
    patients keeps the ids it had before test sets existed; holding them out is a new split, so new cells."""
    cfg = sc.load_config(ROOT / "config" / "config.yaml")
    cfg["splits"]["test_fraction"] = 0
    return build_plan(cfg)


def test_demo_cell_ids_are_pinned():
    assert sorted(demo_plan().cells) == sorted(DEMO_IDS)


def test_the_demo_test_set_makes_new_cells():
    """Holding out test patients changes every training/validation set, so every id (and only then)."""
    with_test = build_plan(sc.load_config(ROOT / "config" / "config.yaml"))
    assert with_test.splits.test_fraction > 0
    assert len(with_test.cells) == len(DEMO_IDS) and not set(with_test.cells) & set(DEMO_IDS)


def _with_new_field(params: CellParams, **value):
    """A CellParams subclass with one more field, as a future version would add it."""
    Newer = dataclasses.make_dataclass(
        "CellParams", [("new_knob", float, added_field(0.0))], bases=(CellParams,), frozen=True
    )
    kw = {f.name: getattr(params, f.name) for f in dataclasses.fields(CellParams)}
    return Newer(**kw, **value)


def test_adding_a_field_at_its_neutral_value_keeps_the_id():
    plan = demo_plan()
    cell = next(iter(plan.cells.values()))
    split_fp = {"seed": cell.params.split_seed, "val_fraction": plan.splits.val_fraction}
    old = cell_id(cell.params, plan.data_fp, split_fp)
    assert old == cell.id
    assert cell_id(_with_new_field(cell.params), plan.data_fp, split_fp) == old
    assert _with_new_field(cell.params).to_dict(identity=True) == cell.params.to_dict(identity=True)
    changed = _with_new_field(cell.params, new_knob=0.5)
    assert cell_id(changed, plan.data_fp, split_fp) != old
    assert changed.to_dict(identity=True)["new_knob"] == 0.5
    # the full form (metrics.json) always records every field
    assert _with_new_field(cell.params).to_dict()["new_knob"] == 0.0


def _with_cell_key(annotation, field):
    """A CellParams subclass with one more key declared by `cell_key`, as a future version would add it."""
    return dataclasses.make_dataclass("CellParams", [("new_knob", annotation, field)], bases=(CellParams,), frozen=True)


def test_a_cell_key_is_read_by_its_name_and_type_and_keeps_ids_at_its_neutral_value():
    Newer = _with_cell_key(float | None, cell_key(None, "a knob", exclusiveMinimum=0))
    assert cell_key_schemas(Newer) == {
        "new_knob": {"oneOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}], "description": "a knob"}
    }
    base = sc.cell_defaults()
    assert Newer.from_config({**base, "new_knob": 2}).new_knob == 2.0  # an int in YAML: the field's float
    neutral = Newer.from_config(base)  # absent (a trial config stored before the key): its neutral value
    assert neutral.new_knob is None
    assert neutral.to_dict(identity=True) == CellParams.from_config(base).to_dict(identity=True)


def test_a_cell_key_must_have_a_plain_type_and_a_default_inside_its_schema():
    with pytest.raises(TypeError, match=r"CellParams\.new_knob: a cell_key is annotated"):
        _plain_types(_with_cell_key(tuple[str, ...], cell_key((), "kinds")))
    enums, defaults = sc._registry_enums(), cell_config_defaults()
    node = {"type": "number", "maximum": 1, "description": "a knob"}
    with pytest.raises(ValueError, match=r"CellParams\.new_knob: its default 2\.0 is outside its own schema"):
        sc._schema_with(enums, json.dumps({**defaults, "new_knob": 2.0}), json.dumps({"new_knob": node}))
    assert (
        sc._schema_with(enums, json.dumps({**defaults, "new_knob": 0.5}), json.dumps({"new_knob": node}))[
            "definitions"
        ]["cell"]["properties"]["new_knob"]
        == node
    )


def test_every_cell_key_has_one_schema_entry_by_construction():
    """A field with no schema (neither a `cell_key` nor a key in config.schema.yaml) stops the load naming it,
    and so does a key declared in both places."""
    enums, defaults = sc._registry_enums(), cell_config_defaults()
    with pytest.raises(ValueError, match=r"without a schema: \['new_knob'\]"):
        sc._schema_with(enums, json.dumps({**defaults, "new_knob": 0.0}), "{}")
    with pytest.raises(ValueError, match="declares the cell key lr"):
        sc._schema_with(enums, json.dumps(defaults), json.dumps({"lr": {"type": "number", "description": "LR"}}))


def test_identity_form_round_trips():
    for cell in demo_plan().cells.values():
        assert CellParams.from_dict(cell.params.to_dict(identity=True)) == cell.params


def test_train_rule_params_use_the_identity_form():
    """Snakemake reruns a job whose params change: the train rule must pass exactly the hashed form, and
    nothing else that could change without changing results."""
    train = (ROOT / "rules" / "train.smk").read_text()
    shared = re.search(r"\nTRAIN_PARAMS = dict\(\n(.*?)\n\)", train, re.S).group(1)  # train and train_rung's
    for rules in ("train.smk", "prune.smk"):
        text = (ROOT / "rules" / rules).read_text()
        params = re.search(r"\n    params:\n(.*?)\n    \w+:", text, re.S).group(1)
        params = params.replace("**TRAIN_PARAMS", shared)
        assert "to_dict(identity=True)" in params, rules
        assert "max_attempts" not in params, rules  # a retry count changes no result


def test_digest_ignores_key_order():
    assert digest({"a": 1, "b": 2.0}) == digest({"b": 2.0, "a": 1})


# Changed once for the final evaluation (issue 12: it passes the config's `evaluation` section): a finished
# cell that reruns resumes from its complete last.pt and only redoes the (cheap) final evaluation, which is
# what gives it the new native-resolution and test metrics (CHANGELOG).
TRAIN_SCRIPT_SHA = "eccef18b12e54a1d"


def test_train_script_is_stable():
    """Snakemake reruns every cell whose metrics.json is older than the rule's script (its code trigger)."""
    import hashlib

    got = hashlib.sha256((ROOT / "workflow" / "scripts" / "train.py").read_bytes()).hexdigest()[:16]
    assert got == TRAIN_SCRIPT_SHA, (
        "workflow/scripts/train.py changed: after this change Snakemake retrains every finished cell (the "
        "script's mtime is a rerun trigger). Put new logic in the library (segsweep.training.job) instead; "
        "if the change really alters results, update TRAIN_SCRIPT_SHA and say so in the CHANGELOG."
    )


# In the copy of the package: the demo's ids, a study over the new key (planned without torch), the values the
# plan refuses, and one tiny cell trained from what the train rule passes (the identity form).
_RECIPE_SCRIPT = """
import json, sys
sys.path.insert(0, {pkg_root!r})
import segsweep
assert segsweep.__file__.startswith({pkg_root!r}), segsweep.__file__
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
cfg = sc.load_config({config!r})
cfg["splits"]["test_fraction"] = 0
demo = sorted(build_plan(cfg).cells)
tiny = {{"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 2, "lr": 0.01}}
def study(axes, **train):
    table = {{"rows": [next(iter(axes))], "cols": []}}
    return sc.prepare({{"train": {{**tiny, **train}}, "studies": {{"s": {{"axes": axes, "table": table}}}}}})
plan = build_plan(study({{{name!r}: [0.0, 0.1]}}))
cells = [plan.cells[c.cell_id] for c in plan.studies["s"].cells]
refused = []
for axes, train in [({{{name!r}: [1.5]}}, {{}}), ({{{name!r}: ["x"]}}, {{}}), ({{"lr": [0.01]}}, {{{name!r}: -0.1}})]:
    try:
        build_plan(study(axes, **train))
        refused.append(None)
    except ConfigError as e:
        refused.append(str(e))
torch_in_plan = "torch" in sys.modules
import torch
torch.set_num_threads(1)
from segsweep.training.loop import train_cell
from segsweep.training.params import CellParams, _plain_types, cell_config_defaults, cell_key, cell_key_schemas
sent = CellParams.from_dict(cells[1].params.to_dict(identity=True))  # the train rule's params
train_cell(sent, {data!r}, {split!r}, {out!r})
with open({out!r} + "/metrics.json") as f:
    trained = json.load(f)["params"][{name!r}]
print(json.dumps({{"default": sc.cell_defaults()[{name!r}], "schema": sc.schema()["definitions"]["cell"]["properties"][{name!r}],
                  "demo": demo, "values": [getattr(c.params, {name!r}) for c in cells], "ids": [c.id for c in cells],
                  "refused": refused, "torch_in_plan": torch_in_plan, "trained": trained}}))
"""


def test_contributing_add_a_hyperparameter_recipe_works(tmp_path):
    """CONTRIBUTING's "Add a hyperparameter" as written, in a copy of the package: its one line at the end of
    CellParams' fields is the only edit. The key's default and schema come from that line; it plans without torch,
    keeps the demo's ids and today's cell at its neutral value and makes a new cell off it; a value out of its
    range or of another type stops the plan naming the key; and the value reaches a trained cell's metrics.json."""
    import subprocess
    import sys

    from test_train import _write_dataset

    ((lang, field),) = recipe_blocks("Add a hyperparameter (a new cell axis)")
    assert lang == "python"
    pkg = copy_package(tmp_path / "pkg" / "segsweep")
    name = add_cell_key(pkg, field)
    assert edited(pkg) == ["training/params.py"]
    assert name not in sc.cell_defaults()  # not yet a key here
    data, split = _write_dataset(tmp_path / "data")
    script = _RECIPE_SCRIPT.format(
        pkg_root=str(pkg.parent),
        config=str(ROOT / "config" / "config.yaml"),
        name=name,
        data=str(data),
        split=str(split),
        out=str(tmp_path / "cell"),
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["default"] == 0.0  # the field's neutral value, written nowhere else
    assert got["schema"] == {"type": "number", "minimum": 0, "maximum": 1, "description": "targets y(1-e)+e/2"}
    assert not got["torch_in_plan"], "planning imported torch"
    assert got["demo"] == sorted(DEMO_IDS)
    assert got["values"] == [0.0, 0.1] and len(set(got["ids"])) == 2
    tiny = {"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 2, "lr": 0.01}
    table = {"rows": ["lr"], "cols": []}
    plain = build_plan(sc.prepare({"train": tiny, "studies": {"s": {"axes": {"lr": [0.01]}, "table": table}}}))
    assert got["ids"][0] == plain.studies["s"].cells[0].cell_id  # at its neutral value: today's cell
    above, wrong_type, negative = got["refused"]
    assert f"studies.s.axes.{name}" in above and "1.5" in above
    assert f"studies.s.axes.{name}" in wrong_type and "'x'" in wrong_type
    assert f"train.{name}" in negative and "-0.1" in negative
    assert got["trained"] == 0.1
