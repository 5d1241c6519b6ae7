"""Bar 4: time to report. Runs the README demo (config/config.yaml) from scratch in a temp working
directory on this machine and breaks the wall time down by rule from the Snakemake `benchmark:` files.

Run: .venv/bin/python benchmarks/bench_demo.py [--cores 2]   → benchmarks/results/demo.json
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, save  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", default=str(ROOT / "config" / "config.yaml"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                SNAKEMAKE,
                "-s",
                str(ROOT / "Snakefile"),
                "-d",
                tmp,
                "--cores",
                str(args.cores),
                "--configfile",
                args.configfile,
            ],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(proc.stderr[-4000:])
        per_rule: dict[str, list[float]] = defaultdict(list)
        for tsv in Path(tmp, "benchmarks", "runs").rglob("*.tsv"):
            rel = tsv.relative_to(Path(tmp, "benchmarks", "runs"))
            rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
            with tsv.open() as fh:
                row = next(csv.DictReader(fh, delimiter="\t"))
            per_rule[rule].append(float(row["s"]))
    breakdown = {
        r: {"jobs": len(v), "total_s": round(sum(v), 1), "max_s": round(max(v), 1), "mean_s": round(sum(v) / len(v), 2)}
        for r, v in sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))
    }
    result = {
        "benchmark": "time_to_report",
        "config": str(Path(args.configfile).relative_to(ROOT))
        if args.configfile.startswith(str(ROOT))
        else args.configfile,
        "cores": args.cores,
        "wall_s": round(wall, 1),
        "bar": "demo under 10 minutes on 2 cores",
        "passed": wall < 600,
        "job_seconds_by_rule": breakdown,
        "slowest_rule": next(iter(breakdown)),
        "machine": machine(),
    }
    save("demo", result)


if __name__ == "__main__":
    main()
