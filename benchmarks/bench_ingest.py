"""Ingest throughput and memory benchmark.

Generates a phantom (default 40 patients × 20 slices, 256×216, RVSC layout) and measures in one run:

1. images/s of ``segsweep.data.ingest.run`` (workers=1) against a bare loop over the same contoured DICOM files
   (``pydicom.dcmread`` → ``pixel_array`` → min-max to uint8 → CLAHE): bar ratio ≥ 0.8. Both loops see the
   same files (the contoured images; ingest must report exactly that many) and run OpenCV on one thread.
   The two loops alternate (order swapped every round) ``--repeats`` times; each round gives one ratio
   (bare time / ingest time, wall clock and CPU time of this process) and the bar uses the median, so a
   burst of load from other jobs on a shared machine moves one round, not the result;
2. where the time goes: CPU ms per image of each ingest stage (DICOM read, contours = read + parse +
   validate + rasterise, window, resize/CLAHE, npz write, QC rows, discovery, rest) and of each bare-loop
   step, from separate passes with timers around the stage functions (not part of the ratio);
3. the speed-up of workers=2 over workers=1 (and that both write identical files);
4. the peak RSS of a fresh process ingesting 10 and 40 patients (streaming: it should stay flat).

Writes benchmarks/results/ingest.json with the machine's CPU model and core count.

    .venv/bin/python benchmarks/bench_ingest.py [--patients 40 --slices 20 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom

from segsweep.data import ingest, layouts, phantom
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine  # noqa: E402  (benchmarks/machine.py: cpu model, cores, python)


def bare_loop(files: list[Path], clip: float, grid) -> None:
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid[1], grid[0]))
    for f in files:
        px = pydicom.dcmread(f).pixel_array
        u8 = cv2.normalize(px, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        op.apply(u8)


def bare_steps(files: list[Path], clip: float, grid) -> dict[str, float]:
    """CPU ms per image of each step of ``bare_loop`` (same work, with a timer between the steps)."""
    op = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid[1], grid[0]))
    acc = dict.fromkeys(("dcmread", "pixel_array", "normalize", "clahe"), 0)
    clock = time.process_time_ns
    for f in files:
        t0 = clock()
        ds = pydicom.dcmread(f)
        t1 = clock()
        px = ds.pixel_array
        t2 = clock()
        u8 = cv2.normalize(px, None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)
        t3 = clock()
        op.apply(u8)
        t4 = clock()
        for k, a, b in (("dcmread", t0, t1), ("pixel_array", t1, t2), ("normalize", t2, t3), ("clahe", t3, t4)):
            acc[k] += b - a
    return {k: v / 1e6 / len(files) for k, v in acc.items()}


# ingest stages: (module attribute holder, function name, label); timed by wrapping the functions that
# ingest calls through module attributes (dcm.read, ctr.parse, ...), so the code under test is unchanged
STAGES = (
    (lambda: ingest.layouts, "discover", "discover"),
    (lambda: ingest.dcm, "read", "dicom_read"),
    (lambda: ingest.ctr, "read_masks", "contours"),  # read + parse + validate + rasterise, all of a batch
    (lambda: ingest.pre, "window_dicom", "window"),
    (lambda: ingest.pre, "prepare", "resize_clahe_pad"),
    (lambda: ingest, "write_npz", "npz_write"),
    (lambda: ingest, "_row", "qc_rows"),
)


def ingest_stages(data: DataConfig, prep: PreprocessConfig, out: Path, n_images: int) -> dict[str, float]:
    """CPU ms per image of each ingest stage; ``rest`` = the run's CPU time minus the stages."""
    acc: dict[str, int] = {}
    saved = []
    clock = time.process_time_ns

    def timed(fn, label):
        def wrapper(*a, **k):
            t0 = clock()
            try:
                return fn(*a, **k)
            finally:
                acc[label] = acc.get(label, 0) + clock() - t0

        return wrapper

    for holder, name, label in STAGES:
        obj = holder()
        if not hasattr(obj, name):  # an older segsweep (benchmarked for comparison) lacks this stage
            continue
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, timed(getattr(obj, name), label))
    try:
        c0 = clock()
        ingest.run(data, prep, out, workers=1)
        total = clock() - c0
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    res = {label: acc.get(label, 0) / 1e6 / n_images for _, _, label in STAGES}
    res["rest"] = total / 1e6 / n_images - sum(res.values())
    return res


def data_config(root: Path) -> DataConfig:
    return DataConfig("rvsc", str(root), "endo", False, "bench", PhantomConfig())


RSS_CHILD = """
import json, resource, sys
from pathlib import Path
from segsweep.data import ingest
from segsweep.data.config import DataConfig, PhantomConfig, PreprocessConfig
root, out = sys.argv[1], sys.argv[2]
ds = ingest.run(DataConfig("rvsc", root, "endo", False, "bench", PhantomConfig()), PreprocessConfig(), Path(out))
print(json.dumps({"n_images": ds["n_images"], "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss(root: Path, out: Path) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(root), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def _min_per_key(runs: list[dict]) -> dict:
    return {k: round(min(r[k] for r in runs), 4) for k in runs[0]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--small", type=int, default=10, help="patients of the small set for the RSS comparison")
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5, help="alternating rounds (>= 3; the bar uses the median)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest.json")
    args = ap.parse_args(argv)
    if args.repeats < 3:
        ap.error("--repeats must be at least 3 (the bar is a median over rounds)")
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
        # the bare loop reads exactly the images ingest turns into training samples (target endo: an image
        # with an inner contour); ingest must count the same number, else the rates are not comparable
        files = [it.image for r in layouts.discover("rvsc", big) for it in r.items if it.image and it.inner]
        n_images = ingest.run(data_config(big), prep, tmp / "out1", workers=1)["n_images"]  # warm-up
        if n_images != len(files):
            raise SystemExit(f"ingest counted {n_images} images, the bare loop reads {len(files)}")
        bare_loop(files[:20], prep.clip_limit, prep.tile_grid)  # warm-up

        bare, one, bare_cpu, one_cpu = [], [], [], []

        def time_bare():
            t0, c0 = time.perf_counter(), time.process_time()
            bare_loop(files, prep.clip_limit, prep.tile_grid)
            bare.append(time.perf_counter() - t0)
            bare_cpu.append(time.process_time() - c0)

        def time_ingest():
            t0, c0 = time.perf_counter(), time.process_time()
            n = ingest.run(data_config(big), prep, tmp / "out1", workers=1)["n_images"]
            one.append(time.perf_counter() - t0)
            one_cpu.append(time.process_time() - c0)
            assert n == len(files)

        for i in range(args.repeats):  # alternate, swapping the order every round
            for fn in (time_bare, time_ingest) if i % 2 == 0 else (time_ingest, time_bare):
                fn()
        ratios = [b / o for b, o in zip(bare, one)]  # same image count: (n / one) / (n / bare)
        ratios_cpu = [b / o for b, o in zip(bare_cpu, one_cpu)]

        stage_runs = [ingest_stages(data_config(big), prep, tmp / "out_stages", len(files)) for _ in range(3)]
        bare_runs = [bare_steps(files, prep.clip_limit, prep.tile_grid) for _ in range(3)]

        two = []
        for _ in range(max(1, args.repeats - 2)):
            t0 = time.perf_counter()
            ingest.run(data_config(big), prep, tmp / "out2", workers=2)
            two.append(time.perf_counter() - t0)
        same = sorted(p.name for p in (tmp / "out1").iterdir()) == sorted(p.name for p in (tmp / "out2").iterdir())
        same = same and all(
            (tmp / "out1" / f.name).read_bytes() == f.read_bytes() for f in sorted((tmp / "out2").iterdir())
        )
        rss_small = peak_rss(small, tmp / "rss_small")
        rss_big = peak_rss(big, tmp / "rss_big")

    n = len(files)
    ratio = statistics.median(ratios)
    result = {
        "benchmark": "ingest",
        "machine": {
            **machine(),
            "load_avg_1min_before": round(load_before, 2),
            "numpy": np.__version__,
            "pydicom": pydicom.__version__,
            "opencv": cv2.__version__,
        },
        "setup": {
            "opencv_threads": 1,
            "patients": args.patients,
            "slices": args.slices,
            "rows": 256,
            "cols": 216,
            "layout": "rvsc",
            "target": "endo",
            "size": list(prep.size),
            "policy": prep.policy,
            "repeats": args.repeats,
            "order": "alternating, swapped every round",
        },
        "phantom_generate_s": round(gen_s, 3),
        "contoured_images": n,
        "ingested_images": n_images,
        # the bar: median over rounds of (bare wall time / ingest wall time) = ingest images/s ÷ bare images/s
        "ratio_ingest_vs_bare": round(ratio, 3),
        "ratio_ingest_vs_bare_rounds": [round(r, 3) for r in ratios],
        # the same from CPU time of this process (less sensitive to other jobs on a shared machine)
        "ratio_ingest_vs_bare_cpu": round(statistics.median(ratios_cpu), 3),
        "ratio_ingest_vs_bare_cpu_rounds": [round(r, 3) for r in ratios_cpu],
        "bare_images_per_s": round(n / statistics.median(bare), 1),
        "ingest_w1_images_per_s": round(n / statistics.median(one), 1),
        "bare_cpu_ms_per_image": round(statistics.median(bare_cpu) / n * 1e3, 3),
        "ingest_w1_cpu_ms_per_image": round(statistics.median(one_cpu) / n * 1e3, 3),
        # CPU ms per image, best of 3 timed passes each (timers add ~1 µs per call)
        "ingest_stage_cpu_ms_per_image": _min_per_key(stage_runs),
        "bare_step_cpu_ms_per_image": _min_per_key(bare_runs),
        "ingest_w1_s": [round(x, 3) for x in one],
        "bare_s": [round(x, 3) for x in bare],
        "ingest_w2_s": [round(x, 3) for x in two],
        "speedup_w2": round(min(one) / min(two), 3),
        "w1_w2_outputs_identical": same,
        "peak_rss_mb": {
            str(args.small): round(rss_small["maxrss_kb"] / 1024, 1),
            str(args.patients): round(rss_big["maxrss_kb"] / 1024, 1),
        },
        "bars": {
            "ratio_ingest_vs_bare>=0.8": ratio >= 0.8,
            "rss_growth<=1.15": rss_big["maxrss_kb"] <= 1.15 * rss_small["maxrss_kb"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp_out, args.out)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
