"""Benchmark 5b (issue 21's GPU bar): the seed-000 grid end to end through Snakemake on one GPU.

What a user runs, timed: ``snakemake --configfile config/seed_studies.yaml --config select=[seed000_lr_optimizer]
--cores C --resources gpu=K results/studies/seed000_lr_optimizer/cells.csv`` from an empty working directory:
phantom (16 patients × 10 slices at 256×216, the RVSC training set's size) → ingest → split → the 75 cells
(3 optimizers × 5 training fractions × 5 learning rates; U-Net depth 4 / width 16, batch 16, Dice loss,
30 epochs) → the study's table. Each training job hands its cell to a trainer worker (one per slot, torch and
CUDA started once per slot); ``--resources gpu=K`` lets K cells share the GPU, each in its own worker
process (docs/architecture.md, "Trainer workers"); optionally under CUDA MPS (``--mps``) so that the K
processes' kernels run concurrently rather than time-sliced. bf16 autocast and channels_last are the
``auto`` defaults (on for a GPU with native bf16).

Measured: the whole run's wall time (the bar: ≤ 300 s on one H100, goal 180 s), the training window (first
training job's start → last one's end, from Snakemake's log), GPU utilisation sampled every 0.5 s with
``nvidia-smi`` (mean over the training window; the bar: ≥ 60 %), the cells' statuses, the pooled training
images/s (Σ n_train × epochs / Σ history.csv ``epoch_s``, read by column name) and the precision the jobs
chose (metrics.json ``execution``). ``last.pt`` follows the config's default, which a GPU job resolves to every 60 s (every epoch would be 75 × 30
fsynced writes of 23.4 MB). The run is
time-boxed (``--budget-s``): on overrun Snakemake is stopped
(SIGTERM: the running cells checkpoint) and the grid's time is estimated from the cells finished.

``--dry``: the very same command on the CPU at the seed studies' ``smoke`` scale (2 × 2 × 2 cells at 48×40),
with CPU utilisation from /proc/stat in place of nvidia-smi → ``gpu_grid_dry.json``, so this script is tested
without a GPU. Run by ``benchmarks/gpu.sh`` (or ``python benchmarks/bench_gpu_grid.py [--dry]``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from cell_history import epoch_times, pooled_images_per_s  # noqa: E402
from machine import machine, save  # noqa: E402

STUDY = "seed000_lr_optimizer"
CONFIG = ROOT / "config" / "seed_studies.yaml"
TARGET = f"results/studies/{STUDY}/cells.csv"  # segsweep.paths.STUDY_DIR
GRID_BAR_S, GRID_GOAL_S, UTIL_BAR = 300.0, 180.0, 60.0
SAMPLE_S = 0.5
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\w+):$")
_FINISH = re.compile(r"^Finished jobid: \d+ \(Rule: (\w+)\)$")


# ------------------------------------------------------------------------------------------ sampling
class Sampler(threading.Thread):
    """Utilisation samples (time.time(), percent) every SAMPLE_S: the GPU's from nvidia-smi, else the CPU's."""

    def __init__(self, gpu: bool):
        super().__init__(daemon=True)
        self.gpu, self.samples, self.stop = gpu, [], threading.Event()
        self.source = "nvidia-smi utilization.gpu" if gpu else "/proc/stat (all cores busy share)"

    def run(self) -> None:
        if self.gpu:
            self._nvidia_smi()
        else:
            self._proc_stat()

    def _nvidia_smi(self) -> None:
        # one query per sample, not `nvidia-smi -lms`: into a pipe its output is block-buffered, so lines would
        # arrive late (mis-timed against the training window) and the last ones be lost at the stop
        cmd = ["nvidia-smi", "-i", "0", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self.stop.is_set():
            t = time.time()
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
            util, _, mem = out.partition(",")
            if util.strip().isdigit():
                self.samples.append((t, float(util), float(mem.strip() or "nan")))
            self.stop.wait(max(0.0, SAMPLE_S - (time.time() - t)))

    def _proc_stat(self) -> None:
        def busy_total() -> tuple[int, int]:
            with open("/proc/stat") as fh:
                v = [int(x) for x in fh.readline().split()[1:]]
            idle = v[3] + v[4]  # idle + iowait
            return sum(v) - idle, sum(v)

        prev = busy_total()
        while not self.stop.wait(SAMPLE_S):
            cur = busy_total()
            if cur[1] > prev[1]:
                self.samples.append((time.time(), 100.0 * (cur[0] - prev[0]) / (cur[1] - prev[1]), math.nan))
            prev = cur


def mean_in(samples: list[tuple], t0: float, t1: float) -> float | None:
    vals = [s[1] for s in samples if t0 <= s[0] <= t1]
    return round(sum(vals) / len(vals), 1) if vals else None


# ------------------------------------------------------------------------------------ Snakemake's log
def job_times(log_text: str, rule: str) -> list[tuple[float, float | None]]:
    """(start, end) epoch seconds of each ``rule`` job, from a Snakemake log: a job's start is the timestamp
    line before its ``rule NAME:`` header, its end the one before its ``Finished jobid: N (Rule: NAME)``.
    Jobs are paired in order (only the window's ends are used: the first start, the last end)."""
    stamp, starts, ends = None, [], []
    for line in log_text.splitlines():
        if m := _STAMP.match(line):
            stamp = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
        elif (m := _START.match(line)) and m.group(1) == rule and stamp is not None:
            starts.append(stamp)
        elif (m := _FINISH.match(line)) and m.group(1) == rule and stamp is not None:
            ends.append(stamp)
    return [(s, ends[i] if i < len(ends) else None) for i, s in enumerate(starts)]


# ------------------------------------------------------------------------------------------ the cells
def read_cells(work: Path) -> list[dict]:
    """Per finished cell: status, n_train, epochs, Σ epoch_s (by column name), execution settings."""
    rows = []
    for metrics in sorted((work / "results" / "cells").glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        hist = metrics.with_name("history.csv")
        epoch_s = epoch_times(hist) if hist.exists() else []
        ex = m.get("execution") or {}
        rows.append(
            {
                "cell": metrics.parent.name,
                "status": m.get("status"),
                "n_train": m.get("n_train"),
                "epochs_run": len(epoch_s),
                "train_epochs_s": round(sum(epoch_s), 3),
                "amp": ex.get("amp"),
                "channels_last": ex.get("channels_last"),
                "device": m.get("device"),
                "hardware": m.get("hardware"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ MPS
def start_mps(tmp: Path, env: dict) -> bool:
    """Start the CUDA MPS control daemon (K processes' kernels share the GPU concurrently); False if absent
    or it does not start. Its pipe and log directories go to ``env`` for every process that uses CUDA."""
    if shutil.which("nvidia-cuda-mps-control") is None:
        return False
    for key, sub in (("CUDA_MPS_PIPE_DIRECTORY", "mps-pipe"), ("CUDA_MPS_LOG_DIRECTORY", "mps-log")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(tmp / sub)
    return subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, check=False).returncode == 0


def stop_mps(env: dict) -> None:
    subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env=env, check=False)


# ------------------------------------------------------------------------------------------------ run
def command(work: Path, cores: int, k: int, dry: bool, checkpoint_every_s: int) -> list[str]:
    threads = max(1, cores // k)
    resources = f"train_gpus: 1, train_threads: {threads}"
    if checkpoint_every_s:  # the schema's advice for a fast GPU: last.pt by time, not every epoch
        resources += f", checkpoint_every_epochs: 0, checkpoint_every_s: {checkpoint_every_s}"
    overrides = [f"select=[{STUDY}]", f"resources={{{resources}}}"]
    if dry:
        overrides += ["scale=smoke"]
    return [
        sys.executable, "-m", "snakemake", TARGET, "-s", str(ROOT / "Snakefile"), "-d", str(work),
        "--configfile", str(CONFIG), "--config", *overrides,
        "--cores", str(cores), "--resources", f"gpu={k}",
    ]  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="the same run on the CPU at smoke scale")
    ap.add_argument(
        "--k", type=int, default=None, help="cells at once on the GPU (--resources gpu=K; default 8, dry: 2)"
    )
    ap.add_argument("--cores", type=int, default=None, help="Snakemake --cores (default: all; dry: 2)")
    ap.add_argument("--mps", action="store_true", help="run the K workers under CUDA MPS")
    ap.add_argument("--budget-s", type=float, default=330.0, help="stop Snakemake after this long")
    ap.add_argument(
        "--checkpoint-every-s",
        type=int,
        default=0,
        help="set resources.checkpoint_every_s (with checkpoint_every_epochs 0); 0 (default): the config's default, "
        "which a GPU job resolves to every 60 s",
    )
    ap.add_argument("--keep", type=Path, default=None, help="keep the working directory here")
    ap.add_argument(
        "--artifacts",
        type=Path,
        default=None,
        help="copy Snakemake's log and the workers' logs here (the device's $OUT)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    k = args.k or (2 if args.dry else 8)
    cores = args.cores or (2 if args.dry else os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="sgg", dir="/tmp"))  # short: the workers' Unix sockets live under it
    work = args.keep or tmp / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, SEGSWEEP_WORKER_DIR=str(tmp / "w"), PYTHONUNBUFFERED="1")
    if args.dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even where a GPU is visible
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    mps = start_mps(tmp, env) if args.mps and not args.dry else False
    cmd = command(work, cores, k, args.dry, args.checkpoint_every_s)

    sampler = Sampler(gpu=not args.dry)
    sampler.start()
    log_path = tmp / "snakemake.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=args.budget_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.send_signal(signal.SIGTERM)  # Snakemake passes it on: the running cells checkpoint and stop
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    wall = time.time() - t0
    sampler.stop.set()
    sampler.join(timeout=5)
    if mps:
        stop_mps(env)
    subprocess.run(["pkill", "-f", f"segsweep.training.worker {tmp}"], check=False)
    if args.artifacts:  # what a failed run on a lent machine needs to be understood afterwards
        args.artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, args.artifacts / "gpu_grid_snakemake.log")
        with open(args.artifacts / "gpu_grid_workers.log", "w") as out:
            for slot_log in sorted((tmp / "w").glob("*/slot-*.log")):
                out.write(f"==== {slot_log.name}\n{slot_log.read_text(errors='replace')[-200_000:]}\n")

    log_text = log_path.read_text(errors="replace")
    trains = job_times(log_text, "train")
    first = min((s for s, _ in trains), default=None)
    last = max((e for _, e in trains if e is not None), default=None)
    cells = read_cells(work)
    finished = [c for c in cells if c["status"] is not None]
    n_grid = int(m.group(1)) if (m := re.search(r"^train\s+(\d+)$", log_text, re.M)) else None  # Job stats
    statuses = {s: sum(c["status"] == s for c in finished) for s in sorted({c["status"] for c in finished})}
    if rc == 0 and not timed_out:
        estimate = wall
    else:  # cut short (or failed): the cells finished so far, extrapolated
        estimate = wall * n_grid / len(finished) if finished and n_grid else None
    util_train = mean_in(sampler.samples, first, last) if first and last else None
    result = {
        "benchmark": "gpu_grid_snakemake",
        "dry": args.dry,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(cmd[2:]).replace(str(work), "<work>").replace(str(ROOT), "<repo>"),
        "setup": {
            "study": STUDY,
            "k_cells_per_gpu": k,
            "cores": cores,
            "mps": mps,
            "budget_s": args.budget_s,
            "checkpoint_every_s": args.checkpoint_every_s or None,
        },
        "rc": rc,
        "timed_out": timed_out,
        "wall_s": round(wall, 1),
        "grid_cells": n_grid,
        "cells_finished": len(finished),
        "statuses": statuses,
        "grid_estimate_s": round(estimate, 1) if estimate else None,
        "training_window_s": round(last - first, 1) if first and last else None,
        "before_first_training_s": round(first - t0, 1) if first else None,
        "after_last_training_s": round(t0 + wall - last, 1) if last else None,
        "utilisation": {
            "source": sampler.source,
            "samples": len(sampler.samples),
            "mean_training_window_pct": util_train,
            "mean_whole_run_pct": mean_in(sampler.samples, t0, t0 + wall),
            "peak_memory_mib": max((s[2] for s in sampler.samples if not math.isnan(s[2])), default=None),
        },
        "images_per_s_pooled": pooled_images_per_s(finished),
        "precision": sorted({(c["hardware"], c["amp"], c["channels_last"]) for c in finished}, key=str),
        "cells": finished,
        "log_tail": log_text.splitlines()[-15:],
    }
    result["bar"] = {
        "grid_s_max": GRID_BAR_S,
        "grid_s_goal": GRID_GOAL_S,
        "util_pct_min": UTIL_BAR,
        "meets": None
        if args.dry
        else bool(estimate and estimate <= GRID_BAR_S and util_train is not None and util_train >= UTIL_BAR),
    }
    name = "gpu_grid_dry" if args.dry else ("gpu_grid_mps" if mps else "gpu_grid")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    else:
        save(name, result)
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
