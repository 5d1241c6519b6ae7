"""Benchmark 8 (issue 21): what a training cell costs besides its epochs, and what planning costs, side by
side with a baseline revision (a ``git worktree``), in one run on this machine.

For each of (baseline, this tree), from scratch in a temporary directory:

1. **The demo** (config/config.yaml, ``--cores 2``): wall time and the report's numbers, ``--rounds`` times
   (default 2), alternating the two trees so that a slow spell of this shared VM hits both; the bar uses the
   median wall of each, and the ratio of each round is listed beside it. Then, for the
   per-cell figure, the first ``SERIAL_CELLS`` demo cells again from scratch with ``--cores 1`` (one job at a
   time, so an epoch's wall seconds are its CPU seconds): per training cell its *fixed cost* =
   the cell's CPU seconds − Σ ``epoch_s`` of its history.csv (the epochs' own time: training + validation
   passes, one thread). A cell's CPU seconds: in-process (baseline), the job's ``cpu_time`` from its
   Snakemake ``benchmark:`` file; with trainer workers, the CPU the worker spent on the cell (its job log:
   "trained in worker ...: X CPU s in the worker") + the job process's own CPU (median ``cpu_time`` of the
   jobs that found their worker running: a job that starts a worker is, for psutil, its parent while it
   lives, so its ``cpu_time`` also counts the worker's start). Worker start-ups are reported on their own.
   The report's numbers must be equal: every study's cells.csv without its timing columns.
2. ``snakemake -n`` **with nothing to do** in the finished demo directory (3 runs, CPU = user + sys of the
   child), and on the seed studies (``config/seed_studies.yaml``, everything to do, 3 runs).

Bars (issue 21): demo wall ≤ 0.70× the baseline's; median fixed cost ≤ 2 CPU s; ``-n`` ≤ 2.5 CPU s on the
demo and ≤ 4 on the seed studies.

Run: .venv/bin/python benchmarks/bench_fixed_cost.py [--baseline REV] [--rounds N]   → benchmarks/results/fixed_cost.json
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from machine import machine, save  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKER_LINE = re.compile(r"trained in worker pid \d+ \(slot \d+, cell (\d+) of this worker\): ([0-9.]+) CPU s")
TIMING_COLUMNS = {"wall_s", "epoch_s", "execution", "hardware", "log_tail"}  # log_tail: timestamps
SERIAL_CELLS = 6


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def snakemake(tree: Path, workdir: Path, *args: str, env: dict | None = None) -> tuple[float, float]:
    """Run snakemake of ``tree`` in ``workdir``: (wall s, CPU s of the process tree that waited)."""
    c0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(tree / "Snakefile"), "-d", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode:
        sys.exit(f"snakemake failed in {workdir}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, child_cpu() - c0


def _tsv_cpu(path: Path) -> float:
    with path.open() as fh:
        return float(next(csv.DictReader(fh, delimiter="\t"))["cpu_time"])


def cell_costs(workdir: Path) -> dict:
    """Per training cell: CPU s, Σ epoch_s, fixed = CPU − epochs (module doc)."""
    cells = sorted(p.name for p in (workdir / "results" / "cells").iterdir() if (p / "history.csv").exists())
    job_cpu = {c: _tsv_cpu(workdir / "benchmarks" / "runs" / "train" / f"{c}.tsv") for c in cells}
    in_worker, started = {}, set()  # cell → the worker's CPU for it; cells whose job started a worker
    for c in cells:
        text = (workdir / "logs" / "train" / f"{c}.log").read_text()
        if m := WORKER_LINE.search(text):
            in_worker[c] = float(m.group(2))
            if "started a training worker" in text:
                started.add(c)
    reused = [job_cpu[c] for c in in_worker if c not in started]
    client = statistics.median(reused) if reused else 0.0
    rows = {}
    for c in cells:
        with (workdir / "results" / "cells" / c / "history.csv").open() as fh:
            epochs = sum(float(r["epoch_s"]) for r in csv.DictReader(fh))
        cpu = in_worker[c] + client if c in in_worker else job_cpu[c]
        rows[c] = {"cpu_s": round(cpu, 2), "epochs_s": round(epochs, 2), "fixed_s": round(cpu - epochs, 2)}
    fixed = [r["fixed_s"] for r in rows.values()]
    return {
        "cells": len(rows),
        "in_worker": len(in_worker),
        "worker_starts": len(started),
        "client_cpu_s_median": round(client, 2) if in_worker else None,
        "fixed_cpu_s": {"median": round(statistics.median(fixed), 2), "min": min(fixed), "max": max(fixed)},
        "cpu_s_total": round(sum(r["cpu_s"] for r in rows.values()), 1),
        "epochs_s_total": round(sum(r["epochs_s"] for r in rows.values()), 1),
        "per_cell": rows,
    }


def study_numbers(workdir: Path) -> dict:
    """Every study's cells.csv without timing columns: what the report is made of."""
    out = {}
    for f in sorted((workdir / "results" / "studies").glob("*/cells.csv")):
        with f.open() as fh:
            out[f.parent.name] = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(fh)]
    return out


def fake_torch_home(base: Path) -> Path:
    """seed008 looks for ImageNet ResNet-18 weights: a random torchvision state dict stands in (shapes only)."""
    import torch
    import torchvision

    (base / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), base / "hub/checkpoints/resnet18-f37072fd.pth")
    return base


def demo(tree: Path, work: Path) -> float:
    """The demo from scratch in ``work`` (``--cores 2``): wall seconds."""
    return snakemake(tree, work, "--configfile", str(tree / "config/config.yaml"))[0]


def measure(tree: Path, tmp: Path, torch_home: Path, walls: list[float]) -> tuple[dict, dict]:
    """The rest for one tree, after its demo rounds (``tmp``/demo0 ...): per-cell costs, ``-n``, the numbers."""
    work = tmp / "demo0"
    first = sorted(p.name for p in (work / "results" / "cells").iterdir())[:SERIAL_CELLS]
    serial = tmp / "serial"
    targets = [f"results/cells/{c}/metrics.json" for c in first]
    snakemake(tree, serial, "--configfile", str(tree / "config/config.yaml"), "--cores", "1", *targets)
    dry = [snakemake(tree, work, "-n", "--configfile", str(tree / "config/config.yaml"))[1] for _ in range(3)]
    seed = [
        snakemake(
            tree,
            tmp / f"seed{i}",
            "-n",
            "--configfile",
            str(tree / "config/seed_studies.yaml"),
            env={"TORCH_HOME": str(torch_home)},
        )[1]
        for i in range(3)
    ]
    numbers = [study_numbers(tmp / f"demo{r}") for r in range(len(walls))]
    return (
        {
            "demo_wall_s": round(statistics.median(walls), 1),
            "demo_wall_s_rounds": [round(w, 1) for w in walls],
            "demo_rounds_same_numbers": all(n == numbers[0] for n in numbers),
            "demo_train": {k: v for k, v in cell_costs(work).items() if k != "fixed_cpu_s"},
            "serial_cells": cell_costs(serial),
            "dry_run_cpu_s": {
                "demo_nothing_to_do": [round(x, 2) for x in dry],
                "seed_studies": [round(x, 2) for x in seed],
            },
        },
        numbers[0],
    )


def summarise(before: dict, after: dict, numbers_before: dict, numbers_after: dict) -> dict:
    """The bars (module doc) and both results, the demo's per-cell rows dropped."""
    ratio = after["demo_wall_s"] / before["demo_wall_s"]  # medians over the rounds

    def med(xs):
        return round(statistics.median(xs), 2)

    def bar(value, limit):
        return {"value": value, "bar": limit, "passed": value <= limit}

    differing = sorted(
        f"{study}/{row.get('cell')}"
        for study in set(numbers_before) | set(numbers_after)
        for row in numbers_before.get(study, [])
        if row not in numbers_after.get(study, [])
    )
    bars = {
        "demo_wall_ratio": bar(round(ratio, 3), 0.70),
        "demo_wall_ratio_by_round": [
            round(a / b, 3) for a, b in zip(after["demo_wall_s_rounds"], before["demo_wall_s_rounds"], strict=True)
        ],
        "fixed_cpu_s_median": bar(after["serial_cells"]["fixed_cpu_s"]["median"], 2.0),
        "dry_run_demo_cpu_s": bar(med(after["dry_run_cpu_s"]["demo_nothing_to_do"]), 2.5),
        "dry_run_seed_studies_cpu_s (everything to do)": bar(med(after["dry_run_cpu_s"]["seed_studies"]), 4.0),
        "same_report_numbers": {
            "passed": numbers_before == numbers_after
            and before["demo_rounds_same_numbers"]
            and after["demo_rounds_same_numbers"],
            "differing_rows": differing,
        },
    }
    for r in (before, after):  # keep the file short: the demo's per-cell rows only as a summary
        r["demo_train"].pop("per_cell", None)
    return {"baseline_result": before, "head_result": after, "bars": bars}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="520c570", help="revision to compare with (default: main before issue 21)")
    ap.add_argument("--rounds", type=int, default=2, help="demo runs per tree, alternating baseline / this tree")
    args = ap.parse_args()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ssbench") as tmp_s:
        tmp = Path(tmp_s)
        base = tmp / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), rev], check=True, capture_output=True
        )
        try:
            home = fake_torch_home(tmp / "torch_home")
            trees = {"baseline": base, "head": ROOT}
            walls = {name: [] for name in trees}
            for r in range(args.rounds):  # alternating, so a slow spell of this shared VM hits both
                for name, tree in trees.items():
                    walls[name].append(demo(tree, tmp / f"run_{name}" / f"demo{r}"))
            before, numbers_before = measure(base, tmp / "run_baseline", home, walls["baseline"])
            after, numbers_after = measure(ROOT, tmp / "run_head", home, walls["head"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    result = summarise(before, after, numbers_before, numbers_after)
    save(
        "fixed_cost",
        {"benchmark": "fixed_cost (issue 21)", "baseline": rev, "head": head, **result, "machine": machine()},
    )
    bars = result["bars"]
    for k, v in bars.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
