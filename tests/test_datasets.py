"""Extra data sets (config key `datasets`, a study's `data: <name>`): the plan keeps the default data set's
ids and paths, gives the same hyperparameters on another data set other cells, names an unknown data set and
an init_from across targets at plan time; `snakemake -n` builds each data set's ingest and splits."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.data.config import DataConfig, DataFolders, dataset_base, dataset_root
from segsweep.errors import ConfigError
from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan, used_datasets

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PHANTOM = {"patients": 6, "slices": 2, "rows": 64, "cols": 64}
TINY = {
    "data": {"source": "phantom", "phantom": PHANTOM},
    "datasets": {
        "b": {"source": "phantom", "phantom": {**PHANTOM, "layout": "sunnybrook", "seed": 29}},
        "c": {"source": "phantom", "target": "myo", "phantom": {**PHANTOM, "patients": 5}},
    },
    "preprocess": {"size": [32, 32]},
    "splits": {"val_fraction": 0.34},
    "train": {"epochs": 1, "depth": 1, "base_width": 2, "batch_size": 4},
}


def _study(axes, **kw):
    return {"axes": axes, "table": {"rows": list(axes)[:1], "cols": []}, **kw}


def _cfg(studies, **over):
    return sc.prepare(sc.deep_merge({**TINY, "studies": studies}, over))


def test_same_hyperparameters_on_two_data_sets_are_two_cells():
    plan = build_plan(_cfg({"a": _study({"lr": [1e-3, 1e-2]}), "b": _study({"lr": [1e-3, 1e-2]}, data="b")}))
    a, b = set(plan.studies["a"].cell_ids), set(plan.studies["b"].cell_ids)
    assert len(a) == len(b) == 2 and not a & b
    assert {plan.cells[c].dataset for c in a} == {None} and {plan.cells[c].dataset for c in b} == {"b"}
    assert plan.studies["b"].dataset == "b" and plan.studies["a"].dataset is None
    # only the data sets a study uses are planned; each has its identity and the splits its cells need
    assert list(plan.datasets) == ["b"]
    ds = plan.datasets["b"]
    assert ds.data_fp != plan.data_fp and set(ds.split_specs) == {"seed0"} and set(plan.split_specs) == {"seed0"}
    assert ds.data.root == "results/datasets/b/raw/phantom" and ds.data.phantom.seed == 29
    assert ds.data.phantom.layout == "sunnybrook" and plan.data.phantom.seed == 0  # default: the master seed


def test_default_data_set_ids_and_paths_are_unchanged():
    studies = {"a": _study({"lr": [1e-3, 1e-2]})}
    before = build_plan(
        sc.prepare(sc.deep_merge({k: v for k, v in TINY.items() if k != "datasets"}, {"studies": studies}))
    )
    with_extra = build_plan(_cfg({**studies, "b": _study({"lr": [1e-3]}, data="b")}))
    assert set(before.cells) <= set(with_extra.cells) and before.data_fp == with_extra.data_fp
    assert before.studies["a"].cell_ids == with_extra.studies["a"].cell_ids
    # paths: the default data set's folders are under results/{data,splits,raw/phantom}, keyed by its settings
    assert dataset_base(None) == "results" and dataset_base("b") == "results/datasets/b"
    assert dataset_root(Path("r"), None) == Path("r") and dataset_root(Path("r"), "b") == Path("r/datasets/b")
    assert re.fullmatch(r"results/raw/phantom/[0-9a-f]{12}", DataConfig.from_config(_cfg(studies)).root)
    # the study's JSON form (aggregation's params) has no data set key unless it uses one
    from segsweep.study import study_from_dict, study_to_dict

    assert "dataset" not in study_to_dict(with_extra.studies["a"])
    assert study_from_dict(study_to_dict(with_extra.studies["b"])).dataset == "b"


def test_the_demo_ids_do_not_move_with_another_data_set():
    """The demo (its ids pinned by tests/test_cell_ids.py) with a declared data set and a study on it."""
    demo = build_plan(sc.load_config(ROOT / "config" / "config.yaml"))
    extra = {"datasets": TINY["datasets"], "studies": {"on_b": _study({"lr": [1e-3]}, data="b")}}
    plan = build_plan(sc.load_config(ROOT / "config" / "config.yaml", overrides=extra))
    assert set(demo.cells) < set(plan.cells) and list(plan.datasets) == ["b"]
    assert {n: s.cell_ids for n, s in demo.studies.items()} == {n: plan.studies[n].cell_ids for n in demo.studies}


def test_unknown_data_set_names_the_study_key():
    with pytest.raises(
        ConfigError, match=r"config key 'studies.f.data': unknown data set 'nope' \(declared under `datasets`: b, c"
    ):
        build_plan(_cfg({"f": _study({"lr": [1e-3]}, data="nope")}))
    optuna = _study({"lr": {"loguniform": [1e-4, 1e-2]}}, data="b", mode="optuna", n_trials=2)
    with pytest.raises(ConfigError, match=r"config key 'studies.o.data': a mode optuna study"):
        used_datasets(_cfg({"o": optuna}))
    with pytest.raises(ConfigError, match=r"config key 'datasets.r.root': required when datasets.r.source is 'rvsc'"):
        build_plan(_cfg({"f": _study({"lr": [1e-3]}, data="r")}, datasets={"r": {"source": "rvsc"}}))


def test_init_from_across_data_sets_needs_the_same_target():
    src = _study({"lr": [1e-3]})
    ok = build_plan(_cfg({"src": src, "fine": _study({"lr": [1e-3]}, data="b", base={"init_from": {"study": "src"}})}))
    fine = ok.cells[ok.studies["fine"].cell_ids[0]]
    assert fine.dataset == "b" and set(fine.params.init_from.cells) == set(ok.studies["src"].cell_ids)
    bad = {"src": src, "fine": _study({"lr": [1e-3]}, data="c", base={"init_from": {"study": "src"}})}
    msg = (
        r"study 'fine' \(data set 'c', target myo\): config key 'init_from': its source, cell '\w{12}' of study "
        r"'src' \(the default data set `data`, target endo\), was trained for another target"
    )
    with pytest.raises(ConfigError, match=msg):
        build_plan(_cfg(bad))
    # multiclass vs binary: refused the same way (another output layer)
    multi = {"src": _study({"lr": [1e-3]}, data="c"), "fine": bad["fine"]}
    multi["fine"] = _study({"lr": [1e-3]}, base={"init_from": {"study": "src"}})
    with pytest.raises(ConfigError, match=r"target multiclass.*target myo"):
        build_plan(_cfg(multi, data={"target": "multiclass"}))


def test_the_shipped_cross_dataset_example_plans_at_smoke_scale():
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    seeds = yaml.safe_load((ROOT / "config" / "seed_studies.yaml").read_text())
    over = {"scale": "smoke", "select": ["seed009_pretrain", "seed009_cross_dataset"]}
    plan = build_plan(sc.prepare(sc.deep_merge(sc.deep_merge(base, seeds), over), base_dir=ROOT))
    assert list(plan.datasets) == ["seed009_source", "seed009_target"]
    pre, fine = plan.studies["seed009_pretrain"], plan.studies["seed009_cross_dataset"]
    assert {plan.cells[c].dataset for c in pre.cell_ids} == {"seed009_source"}
    assert {plan.cells[c].dataset for c in fine.cell_ids} == {"seed009_target"}
    assert all(set(plan.cells[c].params.init_from.cells) == set(pre.cell_ids) for c in fine.cell_ids)
    assert plan.datasets["seed009_source"].data_fp != plan.datasets["seed009_target"].data_fp != plan.data_fp


def _jobs(out: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", out, re.S)
    return {k: int(n) for k, n in re.findall(r"^(\w+)\s+(\d+)$", m.group(1), re.M)} if m else {}


def test_dry_run_has_each_data_sets_jobs_and_paths(tmp_path):
    studies = {"a": _study({"lr": [1e-3]}), "b": _study({"lr": [1e-3, 1e-2]}, data="b")}
    cfg = {**TINY, "studies": studies}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")]
    proc = subprocess.run([*cmd, "-n", "--cores", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = _jobs(out)
    assert {
        k: jobs.get(k) for k in ("phantom", "ingest", "split", "dataset_phantom", "dataset_ingest", "dataset_split")
    } == {
        "phantom": 1,
        "ingest": 1,
        "split": 1,
        "dataset_phantom": 1,  # c is declared but no study uses it
        "dataset_ingest": 1,
        "dataset_split": 1,
    }, jobs
    folders = DataFolders.of(*(lambda p: (p.data, p.preprocess, p.splits))(build_plan(sc.prepare(cfg))))
    for path in (
        folders.data,
        f"{folders.splits}/seed0.json",
        "results/datasets/b/raw/phantom/MANIFEST.json",
        "results/datasets/b/data",
        "results/datasets/b/splits/seed0.json",
    ):
        assert f"output: {path}" in out, path
    plan = build_plan(sc.prepare(cfg))
    for c in plan.studies["b"].cell_ids:
        train = "input: results/datasets/b/data, results/datasets/b/splits/seed0.json\n"
        assert f"{train}    output: results/cells/{c}/metrics.json" in out, c

    bad = {**cfg, "studies": {"f": _study({"lr": [1e-3]}, data="nope")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run([*cmd, "-n", "--cores", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "config key 'studies.f.data': unknown data set 'nope'" in proc.stdout + proc.stderr


def test_predict_reads_the_models_data_set_and_best_stays_on_one(tmp_path):
    """`predict` takes the target and image size from the data set its model trained on; `best` over studies on
    two data sets (two sets of validation patients) stops `snakemake -n` naming them."""
    studies = {"a": _study({"lr": [1e-3]}), "b": _study({"lr": [1e-3, 1e-2]}, data="b")}
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")]

    def dry(model):
        cfg = {**TINY, "studies": studies, "predict": {"input": str(tmp_path / "dicom"), "model": model}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([*cmd, "-n", "--cores", "1", "predict"], capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = dry("b")
    assert rc == 0, out[-3000:]
    assert re.search(r"rule predict:\n    input: results/datasets/b/data,", out), out[-3000:]
    rc, out = dry("best")
    assert rc != 0
    assert (
        "config key 'predict.model': 'best' would compare studies trained and validated on different data sets" in out
    )
    assert "a on the default data set; b on b" in out
