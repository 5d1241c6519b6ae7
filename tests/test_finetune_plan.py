"""init_from in the plan and the DAG: a study's fine-tuning cells depend on the source study's table (or the source
cell), the source's identity is in their ids, bad references fail at plan time, and `snakemake -n` stops on a
missing weights file naming it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = {
    "data": {"source": "phantom", "phantom": {"patients": 6, "slices": 2, "rows": 64, "cols": 64}},
    "preprocess": {"size": [32, 32]},
    "splits": {"val_fraction": 0.34},
    "train": {"epochs": 1, "depth": 1, "base_width": 2, "batch_size": 4},
}


def _study(axes, **kw):
    return {"axes": axes, "table": {"rows": list(axes)[:1], "cols": []}, **kw}


def _cfg(studies, **over):
    return sc.deep_merge({**TINY, "studies": studies}, over)


def test_init_from_a_study_holds_its_content_and_follows_it():
    src = _study({"lr": [1e-3, 1e-2]})
    fine = _study({"finetune": ["full", "freeze_encoder"]}, base={"init_from": {"study": "src"}})
    # the fine-tuning study first in the config: the plan still expands the source first
    plan = build_plan(sc.prepare(_cfg({"fine": fine, "src": src})))
    assert list(plan.studies) == ["fine", "src"]
    ref = plan.cells[plan.studies["fine"].cell_ids[0]].params.init_from
    assert ref.study == "src" and set(ref.cells) == set(plan.studies["src"].cell_ids)
    assert ref.value == "val_dice_patient" and ref.higher_is_better is True
    ids = set(plan.studies["fine"].cell_ids)
    # renaming the source study keeps the ids; another source cell changes them
    renamed = build_plan(sc.prepare(_cfg({"fine": {**fine, "base": {"init_from": {"study": "s2"}}}, "s2": src})))
    assert set(renamed.studies["fine"].cell_ids) == ids
    grown = build_plan(sc.prepare(_cfg({"fine": fine, "src": _study({"lr": [1e-3, 1e-2, 0.1]})})))
    assert not set(grown.studies["fine"].cell_ids) & ids


def test_bad_init_from_references_fail_at_plan_time():
    src = _study({"lr": [1e-3]})
    with pytest.raises(ConfigError, match=r"study 'f': config key 'init_from': study 'nope' is not in this run"):
        build_plan(sc.prepare(_cfg({"f": _study({"lr": [1e-3]}, base={"init_from": {"study": "nope"}})})))
    cyc = {
        "a": _study({"lr": [1e-3]}, base={"init_from": {"study": "b"}}),
        "b": _study({"lr": [1e-3]}, base={"init_from": {"study": "a"}}),
    }
    with pytest.raises(ConfigError, match=r"in a cycle \(a → b → a\)"):
        build_plan(sc.prepare(_cfg(cyc)))
    with pytest.raises(ConfigError, match=r"cell '0123456789ab' is not a cell of this run"):
        build_plan(sc.prepare(_cfg({"f": _study({"lr": [1e-3]}, base={"init_from": {"cell": "0123456789ab"}})})))
    other = _study({"lr": [1e-3]}, base={"init_from": {"study": "src"}, "base_width": 4})
    with pytest.raises(ConfigError, match=r"study 'o': config key 'init_from': cell '\w+' has another architecture"):
        build_plan(sc.prepare(_cfg({"src": src, "o": other})))


def _snakemake(wd: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    return subprocess.run([*cmd, "-n", "--cores", "1", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _jobs(out: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", out, re.S)
    return {k: int(n) for k, n in re.findall(r"^(\w+)\s+(\d+)$", m.group(1), re.M)} if m else {}


def test_dry_run_builds_the_dependency_and_stops_on_missing_weights(tmp_path):
    src = _study({"lr": [1e-3, 1e-2]})
    cfg = _cfg({"src": src, "fine": _study({"lr": [1e-3]}, base={"init_from": {"study": "src"}})})
    plan = build_plan(sc.prepare(cfg))
    fine = plan.studies["fine"].cell_ids[0]
    proc = _snakemake(tmp_path, cfg, f"results/cells/{fine}/metrics.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(proc.stdout + proc.stderr)
    # asking for the fine-tuned cell alone brings in the source study's cells and its aggregation
    assert jobs.get("train") == 3 and jobs.get("aggregate") == 1, proc.stdout[-3000:]
    by_cell = {c: plan.cells[c].params.to_dict(identity=True) for c in plan.cells}
    assert "init_from" in by_cell[fine] and "init_from" not in by_cell[plan.studies["src"].cell_ids[0]]

    missing = tmp_path / "hub" / "resnet18-f37072fd.pth"
    bad = _cfg({"p": _study({"lr": [1e-3]}, base={"model": "resnet18_unet", "pretrained": str(missing)})})
    proc = _snakemake(tmp_path, bad)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"config key 'pretrained': weights file not found: {missing}" in out, out[-3000:]
