"""What `snakemake -n` promises to stop (docs/architecture.md), checked on the real Snakefile with tiny configs:
a U-Net too deep for the image size, a batch of one image under a 1×1 BatchNorm bottleneck, each naming its
keys; what training does with a lone last image there instead (merges it, never crashes); and a failed
ingest whose message points at a qc.csv that Snakemake has not deleted (issue 26, part 5)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import _params, _write_dataset

from segsweep.errors import ConfigError
from segsweep.training.loop import batch_bounds, train_cell
from segsweep.training.model import MODELS

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = {
    "data": {"source": "phantom", "phantom": {"patients": 6, "slices": 2, "rows": 64, "cols": 64}},
    "preprocess": {"size": [32, 32]},
    "splits": {"val_fraction": 0.34},
    "train": {"epochs": 1, "depth": 2, "base_width": 2, "batch_size": 4},
    "studies": {"s": {"axes": {"lr": [0.001]}, "table": {"rows": ["lr"], "cols": []}}},
}


def _snakemake(wd: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    return subprocess.run([*cmd, "--cores", "1", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def _with(train=None, axes=None):
    cfg = {**TINY, "train": {**TINY["train"], **(train or {})}}
    if axes:
        cfg["studies"] = {"s": {"axes": axes, "table": {"rows": list(axes), "cols": []}}}
    return cfg


@pytest.mark.parametrize(
    "cfg, message",
    [
        (_with({"depth": 6}), "config key 'depth': 6 is too deep for the image size 32×32"),
        (_with(axes={"depth": [2, 6]}), "config key 'depth': 6 is too deep for the image size 32×32"),
        (
            _with({"depth": 5, "batch_size": 1}),
            "config keys 'batch_size', 'depth': batch_size 1 with depth 5 on 32×32 images leaves a 1×1 bottleneck",
        ),
        # the same architecture at another batch size must be checked too (the check's memo key has it)
        (
            _with({"depth": 5}, axes={"batch_size": [4, 1]}),
            "config keys 'batch_size', 'depth': batch_size 1 with depth 5",
        ),
    ],
    ids=["depth", "depth-axis", "batch-of-one", "batch-of-one-axis"],
)
def test_dry_run_stops_naming_the_keys(tmp_path, cfg, message):
    proc = _snakemake(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    assert "study 's': " + message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


def test_dry_run_accepts_what_trains(tmp_path):
    """Depth 5 on 32×32 with batches of 4 (a lone last image is merged, below), and depth 5 without batch norm
    at batch size 1 (no BatchNorm to starve)."""
    proc = _snakemake(tmp_path, _with({"depth": 5}, axes={"batch_norm": [True, False]}), "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _snakemake(tmp_path, _with({"depth": 5, "batch_size": 1, "batch_norm": False}), "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_min_batch_is_two_only_under_a_one_pixel_batchnorm_bottleneck():
    unet = MODELS["unet"]
    assert unet.min_batch(_params(depth=5), (32, 32)) == 2
    assert unet.min_batch(_params(depth=5), (63, 63)) == 2  # pooling floors: 63 → 31 → ... → 1
    assert unet.min_batch(_params(depth=5), (32, 64)) == 1  # a 1×2 bottleneck: two values per image
    assert unet.min_batch(_params(depth=4), (32, 32)) == 1
    assert unet.min_batch(_params(depth=5, batch_norm=False), (32, 32)) == 1
    assert MODELS["resnet18_unet"].min_batch(_params(model="resnet18_unet"), (32, 32)) == 1  # padded to 64


def test_batch_bounds():
    assert batch_bounds(12, 4) == [(0, 4), (4, 8), (8, 12)]
    assert batch_bounds(13, 4) == [(0, 4), (4, 8), (8, 12), (12, 13)]  # min_batch 1: as range(0, n, bs)
    assert batch_bounds(13, 4, 2) == [(0, 4), (4, 8), (8, 13)]  # the lone image joins the batch before
    assert batch_bounds(14, 4, 2) == [(0, 4), (4, 8), (8, 12), (12, 14)]
    assert batch_bounds(3, 4, 2) == [(0, 3)]
    for n, bs in [(1, 1), (7, 3), (100, 16)]:
        assert batch_bounds(n, bs) == [(s, min(s + bs, n)) for s in range(0, n, bs)]
    with pytest.raises(ConfigError, match="1 training image"):
        batch_bounds(1, 4, 2)


def test_a_lone_last_image_under_a_batchnorm_bottleneck_trains(tmp_path):
    """The issue's `depth: 5` case: 12 training images in batches of 11 leave one image, which BatchNorm at the
    1×1 bottleneck cannot normalise ("Expected more than 1 value per channel"); it trains with the batch
    before it: one step per epoch."""
    data_dir, split = _write_dataset(tmp_path / "data")
    torch.set_num_threads(1)
    p = _params(depth=5, base_width=2, batch_size=11, epochs=2)
    net = MODELS["unet"](p).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        net(torch.zeros(1, 1, 32, 32))  # what the lone image did before
    m = train_cell(p, data_dir, split, tmp_path / "cell")
    assert m.status in ("ok", "collapsed") and m.n_train == 12 and m.epochs_run == 2  # trained, not crashed
    ckpt = torch.load(tmp_path / "cell" / "last.pt", weights_only=True)
    assert ckpt["schedule"]["step_count"] == 2  # 1 step per epoch: 11 + 1 images merged


def test_failed_ingest_keeps_the_qc_csv_its_message_names(tmp_path, phantom_copy):
    """Snakemake removes a failed job's output folder (results/data/<key>, its qc.csv with it): the message points
    at the copy beside it, which is still there after the run."""
    root = phantom_copy("rvsc")
    for f in root.rglob("*contour-manual.txt"):
        f.unlink()
    cfg = {**TINY, "data": {"source": "rvsc", "root": str(root)}}
    wd = tmp_path / "wd"
    wd.mkdir()
    proc = _snakemake(wd, cfg, "ingest")
    assert proc.returncode != 0
    (kept,) = (wd / "results" / "data").glob("*.qc.csv")  # beside the keyed folder results/data/<key>
    log = (wd / "logs" / "ingest.log").read_text()
    rel = kept.relative_to(wd).as_posix()
    assert "no usable image/contour pair" in log and rel in log, log[-2000:]
    assert not (wd / rel.removesuffix(".qc.csv")).exists()  # what Snakemake does to a failed job's output
    assert kept.read_text().startswith("patient,file,status,reason,message\n")
    assert "image_without_contour" in kept.read_text()
