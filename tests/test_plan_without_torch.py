"""Planning never imports torch: ``snakemake -n`` (also the Snakefile parse that every Slurm job repeats) and
the jobs that only read and write JSON run on the torch-free specifications (`segsweep.lazy`), and the
checks that need a network's shape still fail at plan time, naming the key. Nor do they import pydicom: the data
layouts' names, options and QC codes are read at plan time, their DICOM reading only when a job reads files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segsweep.errors import ConfigError
from segsweep.training.pretrained import check_shapes, encoder_shapes, read_shapes

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "pydicom")  # pydicom: 0.24 s of every parse, needed only to read files

# Runs Snakemake's own command line in this interpreter and prints which heavy modules it imported.
_SNAKEMAKE = f"""
import atexit, json, sys
atexit.register(lambda: print("HEAVY=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules])))
from snakemake.cli import main
main(sys.argv[1:])
"""


def _heavy(stdout: str) -> list[str]:
    line = [ln for ln in stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, stdout[-2000:]
    return json.loads(line[-1][len("HEAVY=") :])


def _dry_run(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _SNAKEMAKE,
            "-n",
            "--cores",
            "1",
            "-d",
            str(tmp_path),
            "-s",
            str(ROOT / "Snakefile"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory) -> Path:
    """A torchvision ResNet-18 state dict where seed008 looks for ImageNet weights (random weights: only the
    names and shapes matter to planning)."""
    import torch
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub/checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), home / "hub/checkpoints/resnet18-f37072fd.pth")
    return home


def test_dry_run_of_the_demo_imports_no_torch(tmp_path):
    res = _dry_run(tmp_path, "--configfile", str(ROOT / "config/config.yaml"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "train" in res.stdout + res.stderr  # it did plan the training jobs
    assert _heavy(res.stdout) == []


def test_dry_run_of_the_seed_studies_imports_no_torch(tmp_path, torch_home):
    """Every kind of study: optuna, pruned, pretrained backbone (its file's shapes read without torch), cv."""
    seed008 = (
        "select=[seed006_kfold,seed007_optuna,seed008_pretrained_resnet,seed010_random_fold_pruning,seed011_asha_grid]"
    )
    res = _dry_run(
        tmp_path,
        "--configfile",
        str(ROOT / "config/seed_studies.yaml"),
        "--config",
        seed008,  # seed008 is not in the default selection (its weights file)
        env={"TORCH_HOME": str(torch_home)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert _heavy(res.stdout) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # a binary-only loss for a multi-class target: known without applying the loss to a tensor
        (
            {"data": {"target": "multiclass"}, "train": {"loss": "focal"}},
            "config key 'loss': 'focal' is a binary (sigmoid) loss but the model has 3 output channels",
        ),
        # a U-Net deeper than the image allows: known without building the network
        (
            {"train": {"depth": 6}, "preprocess": {"size": [48, 40]}},
            "config key 'depth': 6 is too deep for the image size",
        ),
        # a weights file of another encoder: its shapes read without torch
        ({"train": {"model": "resnet18_unet", "pretrained": "@R34@"}}, "does not match the resnet18 encoder"),
    ],
)
def test_checks_that_need_a_network_fail_the_dry_run_without_torch(tmp_path, override, message):
    import torch
    import torchvision

    r34 = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), r34)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(json.dumps(override).replace("@R34@", str(r34)))
    res = _dry_run(tmp_path, "--configfile", str(ROOT / "config/config.yaml"), str(cfg))
    assert res.returncode != 0
    assert message in res.stdout + res.stderr, (res.stdout + res.stderr)[-3000:]
    assert _heavy(res.stdout) == []


def test_json_only_jobs_import_no_torch():
    """Pruning decisions, optuna rounds and aggregation read and write JSON/CSV: the modules their scripts
    import (workflow/scripts/{prune_stage,optuna_*,aggregate}.py) leave torch out."""
    code = (
        "import sys\n"
        "from segsweep import runner\n"
        "from segsweep.plan import optuna_rounds, pruning\n"
        "from segsweep.analysis import aggregate\n"
        "from segsweep.study import study_from_dict\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_retry_after_a_user_error_loads_no_torch_and_no_data(tmp_path):
    """training/job.py: the retries Snakemake makes after a user error find the marker and fail at once with the
    same message, without loading data (the paths below do not exist) or torch (train.py's own imports)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from segsweep.errors import SegsweepError\n"
        "from segsweep.plan import config as sc\n"
        "from segsweep.training import job\n"
        "from segsweep.training.params import CellParams\n"
        f"out = Path({str(tmp_path)!r})\n"
        "(out / job.USER_ERROR_MARKER).write_text(\"config key 'x': bad\")\n"
        "p = CellParams.from_config(sc.cell_defaults())\n"
        "try:\n"
        "    job.run_train_job(p, data_dir=out / 'none', split_path=out / 'none.json', out_dir=out, attempt=2,"
        " max_attempts=3)\n"
        "except SegsweepError as exc:\n"
        "    print('ERROR', exc)\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "ERROR config key 'x': bad" and lines[-1] == "[]", out.stdout + out.stderr


# ------------------------------------------------------------------------------ pretrained, torch-free
@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_encoder_shapes_equal_torchvisions(arch, in_channels):
    import torch
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    if in_channels != 3:
        net.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    del net.fc
    assert encoder_shapes(arch, in_channels) == {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("zip_format", [True, False])
def test_read_shapes_equals_torch_load(tmp_path, zip_format):
    import torch
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state["half"] = torch.zeros(2, 3, dtype=torch.float16)  # other storage types
    path = tmp_path / "w.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    assert read_shapes(path) == {k: tuple(v.shape) for k, v in state.items()}


def test_read_shapes_refuses_what_is_not_a_state_dict(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ConfigError, match=r"config key 'pretrained': cannot read weights file .*garbage.pth"):
        read_shapes(garbage)
    with pytest.raises(ConfigError, match="weights file not found"):
        read_shapes(tmp_path / "missing.pth")
    # a zip whose pickle calls something other than torch's tensor rebuilders: refused, nothing runs
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": os.getcwd}, protocol=2))
    with pytest.raises(ConfigError, match="unexpected global"):
        read_shapes(evil)


def test_check_shapes_accepts_an_rgb_stem_for_one_channel_and_ignores_fc():
    shapes = encoder_shapes("resnet18", 3) | {"fc.weight": (1000, 512), "fc.bias": (1000,)}
    check_shapes("resnet18", 1, shapes, "w.pth")  # conv1 is summed over RGB when loaded
    del shapes["layer4.1.conv2.weight"]
    with pytest.raises(ConfigError, match=r"missing 1 encoder tensor\(s\) \(layer4.1.conv2.weight"):
        check_shapes("resnet18", 1, shapes, "w.pth")
