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
