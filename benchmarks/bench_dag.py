"""Bar 3: `snakemake -n` on a 300-cell vs a 3,000-cell config; time ratio ≤ 12 (no quadratic work).

Run: .venv/bin/python benchmarks/bench_dag.py   → benchmarks/results/dag.json
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def config_with(n_lr: int) -> dict:
    # 3 optimizers × 5 fractions × 2 repeats × n_lr learning rates = 30·n_lr cells
    lrs = [float(f"{1e-5 * 1.01**i:.6g}") for i in range(n_lr)]
    return {
        "studies": {
            "scale_test": {
                "axes": {"optimizer": ["adam", "rmsprop", "sgd"], "fraction": [0.2, 0.4, 0.6, 0.8, 1.0], "lr": lrs},
                "repeats": 2,
                "table": {"rows": ["optimizer", "fraction"], "cols": ["lr"]},
            }
        },
        "select": ["scale_test"],
    }


def dry_run(n_lr: int, repeats: int = 3) -> tuple[float, int]:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(config_with(n_lr)))
        for _ in range(repeats):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [
                    SNAKEMAKE,
                    "-s",
                    str(ROOT / "Snakefile"),
                    "-d",
                    tmp,
                    "-n",
                    "--cores",
                    "2",
                    "--quiet",
                    "rules",
                    "--configfile",
                    str(ROOT / "config" / "config.yaml"),
                    str(cfg),
                ],
                capture_output=True,
                text=True,
            )
            times.append(time.perf_counter() - t0)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
        out = proc.stdout + proc.stderr
        n = next(int(line.split()[1]) for line in out.splitlines() if line.split()[:1] == ["train"])
    return min(times), n


def main() -> None:
    small_t, small_n = dry_run(10)
    big_t, big_n = dry_run(100)
    result = {
        "benchmark": "dag_scale",
        "cells_small": small_n,
        "cells_large": big_n,
        "dry_run_s_small": round(small_t, 2),
        "dry_run_s_large": round(big_t, 2),
        "ratio": round(big_t / small_t, 2),
        "bar": "ratio <= 12",
        "passed": big_t / small_t <= 12,
        "machine": machine(),
    }
    save("dag", result)


if __name__ == "__main__":
    main()
