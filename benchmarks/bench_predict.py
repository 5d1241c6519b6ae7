"""Predict throughput: images/s of ``segsweep.apply.predict.run_predict`` on unlabelled phantom series.

Setting: the demo's model (U-Net depth 3, base width 8, 128×112 network grid, 1 output), weights freshly
initialised (throughput does not depend on what they learnt), on phantom series at real size (256×216,
``--patients`` series of ``--slices`` images, ``data.phantom.generate_series``). One run = everything
``snakemake predict`` does after the model is loaded: discovery (headers of every file), reading, window,
resize/CLAHE, the forward passes (batch 16), mapping back to the native grid, the DICOM SEG (highdicom),
overlay PNGs, volumes.csv, series.json, qc.csv. Beside it, the bare forward pass on the same images (the
floor any implementation pays), so the share of the rest is visible. ``--rounds`` runs each, interleaved;
medians are reported, for the identified and the de-identified SEG.

Run: .venv/bin/python benchmarks/bench_predict.py [--patients 8] [--slices 10] [--rounds 3] [--threads 1]
     → benchmarks/results/predict.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import machine, save  # noqa: E402

from segsweep.apply.predict import run_predict  # noqa: E402
from segsweep.data.config import PhantomConfig, PreprocessConfig  # noqa: E402
from segsweep.data.phantom import generate_series  # noqa: E402
from segsweep.plan.config import cell_params  # noqa: E402
from segsweep.training.model import MODELS  # noqa: E402
from segsweep.training.record import CellMetrics  # noqa: E402

CELL = "b0b0b0b0b0b0"
PREP = PreprocessConfig()  # the schema defaults: 128×112, CLAHE 2.0 / 8×8, resize_pad


def make_results(results: Path) -> None:
    """results/data/dataset.json and one cell with initialised weights (metrics.json status ok)."""
    (results / "data").mkdir(parents=True)
    (results / "data" / "dataset.json").write_text(
        json.dumps({"source": "phantom", "layout": "rvsc", "target": "endo", "n_classes": 2, "size": list(PREP.size)})
    )
    params = cell_params({"depth": 3, "base_width": 8})
    torch.manual_seed(0)
    net = MODELS["unet"](params, n_classes=1)
    cell = results / "cells" / CELL
    cell.mkdir(parents=True)
    torch.save({"model": net.state_dict(), "epoch": 1, "val_dice": 0.0, "params": params.to_dict()}, cell / "best.pt")
    CellMetrics(cell=CELL, status="ok", params=params.to_dict()).write(cell / "metrics.json")


def bare_forward(results: Path, n: int, batch: int) -> float:
    """Seconds for the forward passes alone over n network-grid images (the same model and batch)."""
    from segsweep.apply.predict import CellModel

    model = CellModel(results / "cells" / CELL, 2, "cpu", batch)
    x = np.random.default_rng(0).random((n, *PREP.size), dtype=np.float32)
    t = time.perf_counter()
    model.probabilities(x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    samples: dict[str, list[float]] = {"identified": [], "deidentified": [], "bare_forward": []}
    wall: dict[str, list[float]] = {"identified": [], "deidentified": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = tmp / "results"
        make_results(results)
        generate_series(PhantomConfig(patients=args.patients, slices=args.slices), tmp / "dicom")
        n = args.patients * args.slices
        # warm-up: highdicom's first SEG loads its standard tables (~1 s, once per process)
        run_predict(
            {"input": str(tmp / "dicom"), "model": CELL},
            studies=[],
            results_dir=results,
            prep=PREP,
            pseudonym_key="bench",
            out_dir=tmp / "warm",
            threads=args.threads,
        )
        for r in range(args.rounds):
            for mode in ("identified", "deidentified"):
                out = tmp / f"out-{mode}-{r}"
                t = time.perf_counter()
                s = run_predict(
                    {"input": str(tmp / "dicom"), "model": CELL, "deidentify": mode == "deidentified"},
                    studies=[],
                    results_dir=results,
                    prep=PREP,
                    pseudonym_key="bench",
                    out_dir=out,
                    threads=args.threads,
                )
                wall[mode].append(round(time.perf_counter() - t, 4))
                assert s["n_images"] == n
                samples[mode].append(s["images_per_s"])
            samples["bare_forward"].append(round(n / bare_forward(results, n, 16), 2))
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "benchmark": "predict_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "setting": {
            "series": args.patients,
            "images": args.patients * args.slices,
            "image_size": [256, 216],
            "network_grid": list(PREP.size),
            "model": "unet depth 3, base width 8",
            "batch_size": 16,
            "threads": args.threads,
            "device": "cpu",
        },
        "images_per_s": samples,
        "median_images_per_s": med,
        "run_wall_s": wall,
        # the whole call: model loading, discovery and the qc.csv / predict.json writes included
        "median_end_to_end_images_per_s": {
            k: round(args.patients * args.slices / statistics.median(v), 2) for k, v in wall.items()
        },
        "forward_share": round(med["identified"] / med["bare_forward"], 3),
        "machine": machine(),
        "note": (
            "images_per_s: the series loop of run_predict (read, preprocess, predict, SEG, overlays, volumes); "
            "bare_forward: the model's forward passes alone; forward_share = predict / bare"
        ),
    }
    save("predict", result)


if __name__ == "__main__":
    main()
