"""Cell ids: pinned for the demo, stable when a field with a neutral default is added, and the train rule's
params (a Snakemake rerun trigger) use the same identity form."""

import dataclasses
import json
import re
from pathlib import Path

from recipes import recipe_blocks

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


def test_contributing_add_a_hyperparameter_recipe_works(tmp_path):
    """CONTRIBUTING's "Add a hyperparameter", steps 1 and 2 as written, in a copy of the package: the key gets its
    default from the field alone, the demo keeps its ids, and an axis over the key makes new cells."""
    import shutil
    import subprocess
    import sys

    import yaml

    (field, _), (read, _), (schema_line, lang) = [
        (c, lang) for lang, c in recipe_blocks("Add a hyperparameter (a new cell axis)")
    ]
    assert lang == "yaml"
    pkg = tmp_path / "segsweep"
    shutil.copytree(ROOT / "src" / "segsweep", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = pkg / "training" / "params.py"
    text = params.read_text()
    last = re.findall(r"^    \w+: .* = added_field\(.*\)\n", text, re.M)[-1]  # the end of CellParams' fields
    text = text.replace(last, last + field.strip("\n") + "\n", 1)
    text = text.replace("            finetune=ft,\n", "            finetune=ft,\n" + read.strip("\n") + "\n", 1)
    params.write_text(text)
    schema = pkg / "plan" / "config.schema.yaml"
    doc = yaml.safe_load(schema.read_text())
    doc["definitions"]["cell"]["properties"].update(yaml.safe_load(schema_line.strip()))
    schema.write_text(yaml.safe_dump(doc, sort_keys=False))
    name = next(iter(yaml.safe_load(schema_line.strip())))
    script = f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan
cfg = sc.load_config({str(ROOT / "config" / "config.yaml")!r})
cfg["splits"]["test_fraction"] = 0
demo = sorted(build_plan(cfg).cells)
study = {{"axes": {{{name!r}: [0.0, 0.1]}}, "table": {{"rows": [{name!r}], "cols": []}}}}
plan = build_plan(sc.prepare({{"studies": {{"s": study}}}}))
cells = [plan.cells[c.cell_id].params for c in plan.studies["s"].cells]
print(json.dumps({{"default": sc.cell_defaults()[{name!r}], "demo": demo,
                  "values": [getattr(p, {name!r}) for p in cells], "ids": [c.cell_id for c in plan.studies["s"].cells]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["default"] == 0.0  # the field's neutral value, written nowhere else
    assert got["demo"] == sorted(DEMO_IDS)
    assert got["values"] == [0.0, 0.1] and len(set(got["ids"])) == 2
    plain = build_plan(sc.prepare({"studies": {"s": {"axes": {"lr": [0.001]}, "table": {"rows": ["lr"], "cols": []}}}}))
    assert got["ids"][0] == plain.studies["s"].cells[0].cell_id  # at its neutral value: today's cell
