"""Cell ids: pinned for the demo, stable when a field with a neutral default is added, and the train rule's
params (a Snakemake rerun trigger) use the same identity form."""

import dataclasses
import re
from pathlib import Path

from segsweep.io import added_field, digest
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan, cell_id
from segsweep.training.params import CellParams

ROOT = Path(__file__).resolve().parents[1]
# The demo's 36 cells (config/config.yaml). Identical to segsweep 0.1.0: the re-layout changed no id.
DEMO_IDS = [
    "0eb234b9087c",
    "142c4e6556ef",
    "15b0f8ff7b4c",
    "171024ff6589",
    "1f204b5315f7",
    "2755b51feaf4",
    "2a3d909b4053",
    "2e69574308d4",
    "3049a0d5e59c",
    "3592b765779b",
    "3ac5ed145572",
    "4d7795fc8391",
    "513650d9576c",
    "52058fe8a059",
    "528b31b75f4b",
    "57b41d0958d6",
    "595818860bbc",
    "5bfc8543bf9a",
    "5c2c0a8d0aeb",
    "5dc7509070c3",
    "5fdd44b42cb2",
    "6dace98d0b73",
    "74c7adc8efcc",
    "781503bb5bec",
    "893ad20af4f6",
    "933cc40cc9c9",
    "a2072fc0b85f",
    "a9b41d4fa9f1",
    "b1441a530ca4",
    "ba2037c8357f",
    "ba37690a7807",
    "bc035d6ce25b",
    "c288cc295781",
    "db6cb7f912c4",
    "efaa48b3f708",
    "f2d92eb9f16a",
]


def demo_plan():
    return build_plan(sc.load_config(ROOT / "config" / "config.yaml"))


def test_demo_cell_ids_are_pinned():
    assert sorted(demo_plan().cells) == sorted(DEMO_IDS)


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


def test_identity_form_round_trips():
    for cell in demo_plan().cells.values():
        assert CellParams.from_dict(cell.params.to_dict(identity=True)) == cell.params


def test_train_rule_params_use_the_identity_form():
    """Snakemake reruns a job whose params change: the train rule must pass exactly the hashed form, and
    nothing else that could change without changing results."""
    text = (ROOT / "rules" / "train.smk").read_text()
    params = re.search(r"\n    params:\n(.*?)\n    \w+:", text, re.S).group(1)
    assert "to_dict(identity=True)" in params
    assert "max_attempts" not in params  # a retry count changes no result


def test_digest_ignores_key_order():
    assert digest({"a": 1, "b": 2.0}) == digest({"b": 2.0, "a": 1})


TRAIN_SCRIPT_SHA = "87fef2381afa9050"


def test_train_script_is_stable():
    """Snakemake reruns every cell whose metrics.json is older than the rule's script (its code trigger)."""
    import hashlib

    got = hashlib.sha256((ROOT / "workflow" / "scripts" / "train.py").read_bytes()).hexdigest()[:16]
    assert got == TRAIN_SCRIPT_SHA, (
        "workflow/scripts/train.py changed: after this change Snakemake retrains every finished cell (the "
        "script's mtime is a rerun trigger). Put new logic in the library (segsweep.training.job) instead; "
        "if the change really alters results, update TRAIN_SCRIPT_SHA and say so in the CHANGELOG."
    )
