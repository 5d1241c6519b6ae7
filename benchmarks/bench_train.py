"""Bar: segsweep's training loop costs ≤ 5 % more per epoch than a bare PyTorch loop (CPU, demo size).

Both loops run in this process, interleaved epoch by epoch, on the same data, the same U-Net (depth 3,
base width 8), batch 8, Adam, 128×112 images, ~100 training images:

* **bare**: tensors in memory, ``randperm`` shuffle, forward, inline soft-Dice loss, backward, Adam step;
  then a no-grad validation pass computing the mean Dice (the minimum any training loop does).
* **segsweep**: ``train_cell`` itself — npz data set + split, on-device augmentation ON (flip, rotation,
  zoom, intensity), configured loss, LR schedule, per-image Dice/IoU validation, per-epoch sync and logging,
  history.csv, atomic ``last.pt`` / ``best.pt`` checkpoints every epoch.

One bare epoch runs inside each ``on_epoch`` callback of ``train_cell`` (see ``interleaved_run``), so machine
load from other processes hits both loops alike. A segsweep epoch's time is the callback interval minus the
bare epoch, so it includes validation, sync, logging and the checkpoint and history writes. The first epoch
of every run (warm-up) is dropped; the bar compares medians of wall time (CPU time is recorded too).

Run: .venv/bin/python benchmarks/bench_train.py [--epochs 5] [--rounds 2] [--threads 1]
     → benchmarks/results/train.json

Speed per architecture (``--models unet,resnet18_unet,resnet34_unet``): ``train_cell`` epochs of each model on
the same data, setup and thread count (the U-Net as above; the ResNet U-Nets with their fixed encoders), as
training images per second (n_train / median epoch wall time, validation of n_val images included; first
epoch dropped), so users can size studies → benchmarks/results/train_models.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from segsweep.io import write_json  # noqa: E402
from segsweep.plan.config import cell_params
from segsweep.training.device import hardware_description  # noqa: E402
from segsweep.training.loop import train_cell  # noqa: E402
from segsweep.training.model import MODELS  # noqa: E402
from segsweep.training.params import CellParams  # noqa: E402
from segsweep.training.unet import UNet  # noqa: E402

BAR = 1.05


# ------------------------------------------------------------------------------------------ synthetic data
def write_synthetic_dataset(
    root: Path, n_patients: int, slices: int, size: tuple[int, int], val_patients: int, seed: int = 0
) -> tuple[Path, Path]:
    """A data set in the ingest format (``{pid}.npz`` + ``dataset.json``) and a split file.

    Each image: a noisy background with a bright ellipse ("blood pool") inside a darker ring, at a random
    position, size and orientation; the mask is the ellipse. Shared with ``bench_gpu.py``.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    pids = [f"p{k:08x}" for k in range(n_patients)]
    for pid in pids:
        imgs, masks = [], []
        for _ in range(slices):
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            a, b = rng.uniform(0.06, 0.14) * h, rng.uniform(0.06, 0.14) * w
            t = rng.uniform(0, np.pi)
            u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
            v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
            r2 = u * u + v * v
            m = (r2 <= 1).astype(np.uint8)
            img = 0.3 + 0.45 * m - 0.15 * ((r2 > 1) & (r2 <= 1.8)) + rng.normal(0, 0.06, (h, w))
            imgs.append(np.clip(img, 0, 1).astype(np.float32))
            masks.append(m)
        image = np.stack(imgs)
        np.savez(
            root / f"{pid}.npz",
            image=image,
            raw=(image * 255).astype(np.uint8),
            mask=np.stack(masks),
            spacing=np.full((slices, 2), 0.7, np.float32),
            slice=np.arange(slices, dtype=np.int32),
        )
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "source": "synthetic",
                "layout": "none",
                "target": "endo",
                "n_classes": 1,
                "size": [h, w],
                "patients": [{"id": p, "n_images": slices} for p in pids],
                "n_images": n_patients * slices,
                "qc_counts": {},
            }
        )
    )
    split = root / "split.json"
    split.write_text(json.dumps({"seed": 0, "val": pids[:val_patients], "pool": pids[val_patients:], "folds": []}))
    return root, split


def load_tensors(data_dir: Path, split_path: Path) -> tuple[torch.Tensor, ...]:
    split = json.loads(split_path.read_text())

    def stack(pids, key):
        arrs = []
        for p in pids:
            with np.load(data_dir / f"{p}.npz") as z:
                arrs.append(z[key].astype(np.float32))
        return torch.from_numpy(np.concatenate(arrs)).unsqueeze(1)

    return (
        stack(split["pool"], "image"),
        stack(split["pool"], "mask"),
        stack(split["val"], "image"),
        stack(split["val"], "mask"),
    )


# ----------------------------------------------------------------------------------------------- loops
class BareLoop:
    """A minimal PyTorch training loop, one epoch per ``epoch()`` call."""

    def __init__(self, params: CellParams, tensors):
        self.p = params
        self.x_tr, self.y_tr, self.x_va, self.y_va = tensors
        torch.manual_seed(params.seed)
        self.model = UNet.from_params(params)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=params.lr)

    def epoch(self) -> float:
        bs, model, opt = self.p.batch_size, self.model, self.opt
        model.train()
        perm = torch.randperm(len(self.x_tr))
        for i in range(0, len(self.x_tr), bs):
            idx = perm[i : i + bs]
            p = torch.sigmoid(model(self.x_tr[idx]))
            y = self.y_tr[idx]
            inter = (p * y).sum((1, 2, 3))
            loss = (1 - (2 * inter + 1e-5) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1e-5)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            dices = []
            for i in range(0, len(self.x_va), bs):
                pred = (model(self.x_va[i : i + bs]) > 0).float()
                y = self.y_va[i : i + bs]
                inter = (pred * y).sum((1, 2, 3))
                dices.append(2 * inter / (pred.sum((1, 2, 3)) + y.sum((1, 2, 3))).clamp_min(1))
            return float(torch.cat(dices).mean())


def interleaved_run(params: CellParams, data_dir: Path, split: Path, out_dir: Path, tensors, threads: int) -> dict:
    """One ``train_cell`` run with one bare epoch run inside each of its ``on_epoch`` callbacks.

    Alternating epoch by epoch exposes both loops to the same machine load (this machine is shared), and
    the bare epoch's time is subtracted from the callback interval, so each segsweep epoch time is the time
    from one ``on_epoch`` call to the next *excluding* the bare epoch in between: training, validation,
    sync, logging, history and both checkpoints. Wall and process-CPU seconds are both recorded.
    """
    bare = BareLoop(params, tensors)
    t = {"bare_wall": [], "bare_cpu": [], "seg_wall": [], "seg_cpu": []}
    mark = [time.perf_counter(), time.process_time()]

    def on_epoch(row):
        w0, c0 = time.perf_counter(), time.process_time()
        t["seg_wall"].append(w0 - mark[0])
        t["seg_cpu"].append(c0 - mark[1])
        bare.epoch()
        w1, c1 = time.perf_counter(), time.process_time()
        t["bare_wall"].append(w1 - w0)
        t["bare_cpu"].append(c1 - c0)
        mark[:] = [w1, c1]

    train_cell(params, data_dir, split, out_dir, threads=threads, device="cpu", on_epoch=on_epoch)
    # drop the first epoch of each (data loading, allocator and kernel warm-up)
    return {k: [float(x) for x in v[1:]] for k, v in t.items()}


def machine(threads: int) -> dict:
    return {
        "hardware": hardware_description(torch.device("cpu")),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------------------- architectures
def model_speed(models: list[str], args) -> dict:
    """Median segsweep epoch time and training images per second of each model (module doc)."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, split = write_synthetic_dataset(tmp / "data", args.patients, 8, (128, 112), val_patients=3)
        n_train, n_val = (len(t) for t in load_tensors(data_dir, split)[::2])
        for model in models:
            params = cell_params(
                {"model": model, "depth": 3, "base_width": 8, "batch_size": 8, "epochs": args.epochs, "lr": 1e-3}
            )
            stamps = [time.perf_counter()]
            train_cell(
                params,
                data_dir,
                split,
                tmp / model,
                threads=args.threads,
                device="cpu",
                on_epoch=lambda row, stamps=stamps: stamps.append(time.perf_counter()),
            )
            epochs = [b - a for a, b in zip(stamps, stamps[1:])][1:]  # first epoch: warm-up
            med = statistics.median(epochs)
            rows[model] = {
                "median_epoch_s": round(med, 3),
                "train_img_per_s": round(n_train / med, 2),
                "epoch_s": [round(x, 3) for x in epochs],
                "parameters": sum(p.numel() for p in MODELS[model](params).parameters()),
            }
            print(f"{model}: {med:.2f} s/epoch, {n_train / med:.1f} training img/s", flush=True)
    return {
        "benchmark": "train_speed_per_model",
        "models": rows,
        "setup": {
            "image_size": [128, 112],
            "batch_size": 8,
            "n_train": n_train,
            "n_val": n_val,
            "epochs_per_run": args.epochs,
            "optimizer": "adam",
            "note": "epoch = training + validation + checkpoints; img/s counts training images",
        },
        "machine": machine(args.threads),
        "date": time.strftime("%Y-%m-%d"),
    }


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--patients", type=int, default=16, help="8 slices each; 3 validate, the rest train")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    ap.add_argument("--profile", action="store_true", help="cProfile one segsweep run and print the top entries")
    ap.add_argument("--models", help="comma-separated models: epoch speed per architecture (module doc)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.models:
        out = args.out if args.out != ROOT / "benchmarks" / "results" / "train.json" else None
        result = model_speed(args.models.split(","), args)
        write_json(out or ROOT / "benchmarks" / "results" / "train_models.json", result)
        return result

    params = cell_params(
        {
            "depth": 3,
            "base_width": 8,
            "batch_size": 8,
            "epochs": args.epochs,
            "optimizer": "adam",
            "lr": 1e-3,
            "loss": "dice",
            "augment": {"flip": True, "rotate_deg": 10, "scale": 0.1, "intensity": 0.1},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, split = write_synthetic_dataset(tmp / "data", args.patients, 8, (128, 112), val_patients=3)
        tensors = load_tensors(data_dir, split)
        n_train, n_val = len(tensors[0]), len(tensors[2])
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(train_cell, params, data_dir, split, tmp / "prof", threads=args.threads, device="cpu")
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        t: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for k, v in interleaved_run(params, data_dir, split, tmp / f"cell{r}", tensors, args.threads).items():
                t.setdefault(k, []).extend(v)
            print(
                f"round {r + 1}: bare {statistics.median(t['bare_wall']):.3f} s/epoch, "
                f"segsweep {statistics.median(t['seg_wall']):.3f} s/epoch",
                flush=True,
            )

    med = {k: statistics.median(v) for k, v in t.items()}
    ratio = med["seg_wall"] / med["bare_wall"]
    result = {
        "benchmark": "train_loop_overhead",
        "bar": f"median epoch wall time ratio segsweep / bare PyTorch ≤ {BAR}",
        "ratio": round(ratio, 4),
        "ratio_cpu_time": round(med["seg_cpu"] / med["bare_cpu"], 4),
        "pass": bool(ratio <= BAR),
        "median_epoch_s": {"bare": round(med["bare_wall"], 4), "segsweep": round(med["seg_wall"], 4)},
        "median_epoch_cpu_s": {"bare": round(med["bare_cpu"], 4), "segsweep": round(med["seg_cpu"], 4)},
        "epoch_s": {"bare": [round(x, 4) for x in t["bare_wall"]], "segsweep": [round(x, 4) for x in t["seg_wall"]]},
        "setup": {
            "model": "UNet depth 3, base width 8, batch norm",
            "image_size": [128, 112],
            "batch_size": 8,
            "n_train": n_train,
            "n_val": n_val,
            "epochs_per_run": args.epochs,
            "rounds": args.rounds,
            "warmup_epochs_dropped_per_run": 1,
            "optimizer": "adam",
            "interleaving": "one bare epoch inside each segsweep on_epoch callback",
            "segsweep_augmentation": "flip, ±10°, ±10 % zoom, ±0.1 intensity",
        },
        "machine": machine(args.threads),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("ratio", "pass", "median_epoch_s")}))
    return result


if __name__ == "__main__":
    main()
