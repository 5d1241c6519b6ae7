"""Ingest throughput and memory benchmark.

Generates a phantom (default 40 patients × 20 slices, 256×216, RVSC layout) and measures in one run:

1. images/s of ``segsweep.ingest.run`` (workers=1) against a bare loop over the same contoured DICOM files
   (``pydicom.dcmread`` → ``pixel_array`` → min-max to uint8 → CLAHE): bar ratio ≥ 0.8;
2. the speed-up of workers=2 over workers=1;
3. the peak RSS of a fresh process ingesting 10 and 40 patients (streaming: it should stay flat).

Timings are the best of ``--repeats`` alternating runs (the machine may be shared). Writes
benchmarks/results/ingest.json with the machine's CPU model and core count.

    .venv/bin/python benchmarks/bench_ingest.py [--patients 40 --slices 20 --repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom

from segsweep import ingest, layouts, phantom
from segsweep.config import DataConfig, PhantomConfig, PreprocessConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine  # noqa: E402  (benchmarks/machine.py: cpu model, cores, python)


def bare_loop(files: list[Path], clip: float, grid) -> None:
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid[1], grid[0]))
    for f in files:
        px = pydicom.dcmread(f).pixel_array
        u8 = cv2.normalize(px, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        op.apply(u8)


def data_config(root: Path) -> DataConfig:
    return DataConfig("rvsc", str(root), "endo", False, "bench", PhantomConfig())


RSS_CHILD = """
import json, resource, sys
from pathlib import Path
from segsweep import ingest
from segsweep.config import DataConfig, PhantomConfig, PreprocessConfig
root, out = sys.argv[1], sys.argv[2]
ds = ingest.run(DataConfig("rvsc", root, "endo", False, "bench", PhantomConfig()), PreprocessConfig(), Path(out))
print(json.dumps({"n_images": ds["n_images"], "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss(root: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", RSS_CHILD, str(root), str(out)], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--small", type=int, default=10, help="patients of the small set for the RSS comparison")
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]  # other jobs on the machine (shared cores skew wall-clock numbers)
    # one thread for OpenCV in both loops: otherwise CLAHE on 256x216 runs on 2 cores in the bare loop only
    # (ingest resizes first and CLAHEs small images), and workers=1 would not be compared with one core
    cv2.setNumThreads(1)
    prep = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        tmp = Path(tmp)
        big, small = tmp / "big", tmp / "small"
        t0 = time.perf_counter()
        phantom.generate(PhantomConfig(patients=args.patients, slices=args.slices, layout="rvsc", seed=0), big)
        gen_s = time.perf_counter() - t0
        phantom.generate(PhantomConfig(patients=args.small, slices=args.slices, layout="rvsc", seed=0), small)
        files = [it.image for r in layouts.discover("rvsc", big) for it in r.items if it.image and it.inner]

        bare, one, bare_cpu, one_cpu = [], [], [], []
        n_images = 0
        for _ in range(args.repeats):  # alternate, keep the best of each: robust to a busy machine
            t0, c0 = time.perf_counter(), time.process_time()
            bare_loop(files, prep.clip_limit, prep.tile_grid)
            bare.append(time.perf_counter() - t0)
            bare_cpu.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            n_images = ingest.run(data_config(big), prep, tmp / "out1", workers=1)["n_images"]
            one.append(time.perf_counter() - t0)
            one_cpu.append(time.process_time() - c0)
        two = []
        for _ in range(max(1, args.repeats - 1)):
            t0 = time.perf_counter()
            ingest.run(data_config(big), prep, tmp / "out2", workers=2)
            two.append(time.perf_counter() - t0)
        same = all(
            (tmp / "out1" / f.name).read_bytes() == f.read_bytes() for f in sorted((tmp / "out2").iterdir())
        )
        rss_small = peak_rss(small, tmp / "rss_small")
        rss_big = peak_rss(big, tmp / "rss_big")

    bare_ips = len(files) / min(bare)
    ingest_ips = n_images / min(one)
    result = {
        "benchmark": "ingest",
        "machine": {**machine(), "load_avg_1min_before": round(load_before, 2), "numpy": np.__version__,
                    "pydicom": pydicom.__version__, "opencv": cv2.__version__},
        "setup": {"opencv_threads": 1, "patients": args.patients, "slices": args.slices, "rows": 256, "cols": 216,
                  "layout": "rvsc", "target": "endo", "size": list(prep.size), "policy": prep.policy,
                  "repeats": args.repeats},
        "phantom_generate_s": round(gen_s, 3),
        "contoured_images": len(files),
        "ingested_images": n_images,
        "bare_images_per_s": round(bare_ips, 1),
        "ingest_w1_images_per_s": round(ingest_ips, 1),
        "ratio_ingest_vs_bare": round(ingest_ips / bare_ips, 3),
        # the same ratio from CPU time of this process (less sensitive to other jobs on a shared machine)
        "ratio_ingest_vs_bare_cpu": round((min(bare_cpu) / len(files)) / (min(one_cpu) / n_images), 3),
        "bare_cpu_ms_per_image": round(min(bare_cpu) / len(files) * 1e3, 3),
        "ingest_w1_cpu_ms_per_image": round(min(one_cpu) / n_images * 1e3, 3),
        "ingest_w1_s": [round(x, 3) for x in one],
        "ingest_w2_s": [round(x, 3) for x in two],
        "bare_s": [round(x, 3) for x in bare],
        "speedup_w2": round(min(one) / min(two), 3),
        "w1_w2_outputs_identical": same,
        "peak_rss_mb": {str(args.small): round(rss_small["maxrss_kb"] / 1024, 1),
                        str(args.patients): round(rss_big["maxrss_kb"] / 1024, 1)},
        "bars": {"ratio_ingest_vs_bare>=0.8": ingest_ips / bare_ips >= 0.8,
                 "rss_growth<=1.15": rss_big["maxrss_kb"] <= 1.15 * rss_small["maxrss_kb"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp_out, args.out)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
