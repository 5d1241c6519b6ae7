"""The shipped seed studies resolve to the cell counts of their definitions, at full and smoke scale."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segsweep.plan import config as sc
from segsweep.plan.cells import build_plan

ROOT = Path(__file__).resolve().parents[1]

# Rows of the seed reports: axis sizes multiplied out by hand (repeats / folds included).
FULL = {
    "seed000_lr_optimizer": 5 * 3 * 5,
    "seed001_lr_schedule": 4 * 3 * 5,
    "seed002_regularizers": 3 * 5 * 5,
    "seed003_dropout_fraction": 5 * 5,
    "seed003_dropout_two_level": 4 * 4,
    "seed003_dropout_lambda": 3 * 3 * 3,
    "seed004_losses": 7 * 5,
    "seed004_losses_switching": 9 * 3,
    "seed005_weight_decay": 4 * 3 * 3,
    "seed005_per_layer_dropout": 1 + 2 + 2 + 2,  # one-factor-at-a-time around the no-dropout base
    "seed005_tiny_l1": 4 * 3,
    "seed005_l1_l2": 3 * 3,
    "seed006_optimizer_schedule": 2 * 2 * 3 * 3,
    "seed006_kfold": 3 * 2 * 5,
    "seed007_optuna": 0,  # mode optuna: its trials become cells in rounds (tests/test_optuna_rounds.py)
    "seed008_pretrained_resnet": 2 * 4 * 2 * 3,
    "seed008_finetune_modes": 4 * 3,
    "seed010_random_fold_pruning": 12 * 5,  # every fold planned; the pruner decides which are asked for
    "seed011_asha_grid": 3 * 3 * 3,
}


@pytest.fixture(autouse=True, scope="module")
def torch_home(tmp_path_factory):
    """seed008 reads $TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth: the phantom has no ImageNet weights, so
    a torchvision resnet18's own (random) state dict stands in. Snakemake subprocesses inherit the variable."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), home / "hub/checkpoints/resnet18-f37072fd.pth")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    yield home
    mp.undo()


def seed_config(**over):
    """config/seed_studies.yaml (it stands alone) with every seed study but seed009 selected (seed008, left
    out of its default selection for its weights file, included)."""
    seeds = yaml.safe_load((ROOT / "config" / "seed_studies.yaml").read_text())
    return sc.prepare(sc.deep_merge(seeds, {"select": list(FULL), **over}), base_dir=ROOT)


def test_the_default_selection_plans_without_weights(monkeypatch):
    """seed008 needs $TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth: the default selection leaves it out, so
    the README's commands plan without it; selected without the variable, the error names it and the file."""
    monkeypatch.delenv("TORCH_HOME")
    plan = build_plan(sc.load_config(ROOT / "config" / "seed_studies.yaml"))
    assert set(plan.studies) == set(FULL) - {"seed008_pretrained_resnet", "seed008_finetune_modes"}
    with pytest.raises(sc.ConfigError) as ei:
        build_plan(seed_config(select=["seed008_finetune_modes"]))
    assert str(ei.value).startswith(
        "study 'seed008_finetune_modes': config key 'pretrained': $TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth "
        "names the environment variable $TORCH_HOME, which is not set: set it"
    )


def test_every_study_file_is_listed():
    listed = set(yaml.safe_load((ROOT / "config" / "seed_studies.yaml").read_text())["study_files"])
    on_disk = {f"config/studies/{p.name}" for p in (ROOT / "config" / "studies").glob("*.yaml")}
    assert listed == on_disk


def test_full_scale_cell_counts():
    plan = build_plan(seed_config())
    assert {name: len(s.cells) for name, s in plan.studies.items()} == FULL
    # identical cells shared between studies are trained once
    assert len(plan.cells) < sum(FULL.values())


def test_layouts_match_the_seed_tables():
    plan = build_plan(seed_config())
    t = plan.studies["seed000_lr_optimizer"].table
    assert (t.rows, t.cols, t.value) == (("optimizer", "fraction"), ("lr",), "val_dice_patient")
    assert plan.studies["seed001_lr_schedule"].axis_values["schedule"] == (
        "none",
        "inverse time",
        "exponential",
        "staircase",
    )


def test_smoke_scale_shrinks_every_study():
    plan = build_plan(seed_config(scale="smoke"))
    assert set(plan.studies) == set(FULL)
    for name, study in plan.studies.items():
        # a random search samples n configurations at any scale: the smoke preset shrinks its folds to 2
        limit = 2 * 12 if name == "seed010_random_fold_pruning" else 16
        assert 0 < len(study.cells) <= limit or study.mode == "optuna", name
    assert {c.params.epochs for c in plan.cells.values()} == {2}
    assert plan.preprocess.size == (48, 40)


@pytest.mark.slow
def test_smoke_dag_builds(tmp_path):
    """`snakemake -n` over every seed study at smoke scale (the whole DAG, no training)."""
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run(
        [
            snakemake,
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(tmp_path),
            "-n",
            "--cores",
            "2",
            "--quiet",
            "rules",
            "--configfile",
            str(ROOT / "config" / "seed_studies.yaml"),
            "--config",
            "scale=smoke",
            f"select=[{','.join(FULL)}]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    cfg = seed_config(scale="smoke")
    plan = build_plan(cfg)
    # a pruned study's later stages are known only after its decisions: ASHA cells start with a rung job,
    # a fold-pruned study shows its first fold
    pruned = {n: s["pruner"]["name"] for n, s in cfg["studies"].items() if s.get("pruner")}
    first = set()
    for name, study in plan.studies.items():
        if pruned.get(name) == "folds":
            first |= {c.cell_id for c in study.cells if c.fold == 0}
        elif name not in pruned:
            first |= {c.cell_id for c in study.cells}
    rung = {c.cell_id for n, s in plan.studies.items() if pruned.get(n) == "asha" for c in s.cells}
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) == 2}
    assert counts.get("train") == str(len(first)), out[-2000:]
    assert counts.get("train_rung") == str(len(rung)), out[-2000:]
