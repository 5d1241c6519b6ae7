"""Bar 7: adaptive search (issue 14). One grid of configurations searched three ways on the phantom at CPU
scale, each in its own fresh working directory (no cell is reused between methods, wall times are honest):

* ``grid`` — every configuration trained for the full ``epochs``;
* ``asha`` — the same grid under ``pruner: {name: asha, rungs, eta}`` (synchronous successive halving);
* ``tpe``  — ``mode: optuna`` with sampler ``tpe`` over the same axes (the grid's values as categorical
  choices), ``n_trials = round(ASHA cell-epochs of that seed / epochs)``, i.e. the same training budget as
  ASHA, every trial at the full ``epochs`` (the same maximum per-trial budget as the grid and ASHA).

Per seed (the study's base ``seed`` = the training seed, and TPE's ``sample_seed``) the three methods run one
after the other (asha, tpe, grid: TPE's n_trials needs ASHA's count), so slow phases of a shared machine hit
every method. Recorded per method and seed: cell-epochs trained (rows of each cell's history.csv), the
snakemake wall time, the jobs and their job-seconds / CPU-seconds (Snakemake ``benchmark:`` files), the best
finished configuration of the study's table (table.json ``best``: validation ``val_dice_patient``; pruned
configurations never count) and that configuration's test Dice (metrics.json ``test.dice_patient``).

Bar: compute_ratio = ASHA cell-epochs / grid cell-epochs ≤ 0.35 with dice_gap = mean over seeds of
(grid best − ASHA best) ≤ 0.01 (validation); the grid's own seed-to-seed sd of its best is reported beside it.

Run: .venv/bin/python benchmarks/bench_adaptive.py [--quick] [--cores 2] [--keep DIR]
     → benchmarks/results/adaptive.json (``--quick``: a tiny version for checking the script; it writes
       $TMPDIR/adaptive_quick.json, never the committed result)
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine, save  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
METHODS = ("asha", "tpe", "grid")  # run order within a seed (tpe's n_trials comes from asha's count)
BAR_RATIO, BAR_GAP = 0.35, 0.01

PRESETS = {
    # 24 configurations × 9 epochs × 3 seeds; sized to finish in < 30 min on 2 cores. 32 patients × 8 slices:
    # 16 training patients (~100 images, ~24 optimizer steps an epoch) and 8 validation patients. The first
    # version (16 × 6: 10 steps an epoch, 4 validation patients) left every configuration at rung 1 still in
    # its first transient (validation Dice 0.2–0.4 for all, Spearman ρ of rung vs final 0.08–0.41).
    "full": {
        "phantom": {
            "patients": 32,
            "slices": 8,
            "rows": 128,
            "cols": 112,
            "layout": "rvsc",
            "no_contour_fraction": 0.2,
        },
        "size": [64, 56],
        "tile_grid": [8, 8],
        "splits": {"seed": 0, "test_fraction": 0.25, "val_fraction": 0.25, "folds": 4},  # 8 test, 8 val, 16 train
        "train": {"depth": 3, "base_width": 8, "batch_size": 4, "epochs": 9},
        "axes": {
            "optimizer": ["adam", "rmsprop", "sgd"],
            "lr": [0.001, 0.003, 0.01, 0.03],
            "weight_decay": [0.0, 0.001],
        },
        "rungs": [1, 3, 9],
        "eta": 3,
        "seeds": [0, 1, 2],
        "parallel": 2,
    },
    # 4 configurations × 2 epochs × 2 seeds, tiny images: checks the script in a few minutes
    "quick": {
        "phantom": {"patients": 8, "slices": 4, "rows": 96, "cols": 80, "layout": "rvsc", "no_contour_fraction": 0.2},
        "size": [32, 32],
        "tile_grid": [4, 4],
        "splits": {"seed": 0, "test_fraction": 0.25, "val_fraction": 0.25, "folds": 3},
        "train": {"depth": 2, "base_width": 4, "batch_size": 4, "epochs": 2},
        "axes": {"optimizer": ["adam", "sgd"], "lr": [0.003, 0.03], "weight_decay": [0.0]},
        "rungs": [1, 2],
        "eta": 2,
        "seeds": [0, 1],
        "parallel": 2,
    },
}


# ------------------------------------------------------------------------------------------- configs
def base_config(p: dict) -> dict:
    return {
        "title": "bench_adaptive",
        "seed": 7,  # phantom (the data) and everything else fixed; only the training seed varies
        "data": {"source": "phantom", "target": "endo", "phantom": dict(p["phantom"])},
        "preprocess": {"size": list(p["size"]), "clahe": {"clip_limit": 2.0, "tile_grid": list(p["tile_grid"])}},
        "splits": dict(p["splits"]),
        "train": {
            "optimizer": "adam",
            "lr": 0.001,
            "loss": "dice",
            "patience": None,  # no early stopping: every finished cell trains `epochs` epochs
            "augment": {"flip": True, "rotate_deg": 10, "scale": 0.1, "intensity": 0.1},
            **p["train"],
        },
        "resources": {"train_threads": 1, "ingest_threads": 2, "train_retries": 0},
        "studies": {},
    }


def study_spec(method: str, p: dict, seed: int, n_trials: int | None = None) -> dict:
    axes = copy.deepcopy(p["axes"])
    names = list(axes)
    spec: dict = {"title": f"{method}, seed {seed}", "base": {"seed": seed}, "axes": axes}
    if method == "tpe":
        spec.update(mode="optuna", sampler="tpe", sample_seed=seed, n_trials=int(n_trials), parallel=p["parallel"])
        spec["table"] = {"rows": ["trial"], "cols": []}
    else:
        spec["table"] = {"rows": names[:-1], "cols": names[-1:]}
        if method == "asha":
            spec["pruner"] = {"name": "asha", "rungs": list(p["rungs"]), "eta": p["eta"]}
    return spec


# -------------------------------------------------------------------------------------------- running
def run_snakemake(wd: Path, study: str, cores: int, label: str, t_start: float) -> float:
    targets = [f"results/studies/{study}/table.json", f"results/studies/{study}/cells.csv"]
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(wd), "--configfile", str(wd / "config.yaml")]
    cmd += ["--cores", str(cores), *targets]
    log = wd / "snakemake.log"
    step = re.compile(r"^(\d+) of (\d+) steps")
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            fh.write(line)
            m = step.match(line.strip())
            if m:
                print(
                    f"  [{(time.perf_counter() - t_start) / 60:5.1f} min] {label}: {m.group(1)}/{m.group(2)} steps",
                    flush=True,
                )
        rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc:
        sys.exit(f"{label}: snakemake failed (rc {rc}); log {log}:\n" + log.read_text()[-6000:])
    return wall


def read_csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def job_stats(wd: Path) -> dict:
    """Jobs per rule, their wall seconds and CPU seconds, from the Snakemake benchmark files."""
    out: dict = defaultdict(lambda: {"jobs": 0, "job_s": 0.0, "cpu_s": 0.0})
    runs = wd / "benchmarks" / "runs"
    for tsv in runs.rglob("*.tsv"):
        rel = tsv.relative_to(runs)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        out[rule]["jobs"] += 1
        out[rule]["job_s"] += float(row["s"])
        out[rule]["cpu_s"] += float(row.get("cpu_time") or 0.0)
    return {r: {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()} for r, d in sorted(out.items())}


def test_dice(m: dict) -> float | None:
    v = m.get("test_dice_patient")
    if v is None:
        v = (m.get("test") or {}).get("dice_patient")
    return v


def collect(wd: Path, study: str) -> dict:
    cells_dir = wd / "results" / "cells"
    epochs = {}
    vals = {}
    for d in sorted(p for p in cells_dir.iterdir() if p.is_dir()):
        h = d / "history.csv"
        epochs[d.name] = len(read_csv(h)) if h.exists() else 0
        m = d / "metrics.json"
        if m.exists():
            mj = json.loads(m.read_text())
            if mj.get("status") == "ok" and mj.get("val_dice_patient") is not None:
                vals[d.name] = mj["val_dice_patient"]
    sdir = wd / "results" / "studies" / study
    table = json.loads((sdir / "table.json").read_text())
    rows = read_csv(sdir / "cells.csv")
    statuses: dict[str, int] = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
    best = table.get("best")
    best_out = None
    if best:
        (cell,) = {r["cell"] for r in rows if r["config"] == best["config"]}
        m = json.loads((cells_dir / cell / "metrics.json").read_text())
        best_out = {
            "config": best["config"],
            "cell": cell,
            "val_dice_patient": best["mean"],
            "test_dice_patient": test_dice(m),
        }
    out = {
        "cells": len(epochs),
        "cell_epochs": sum(epochs.values()),
        "epochs_per_cell": dict(sorted(epochs.items())),
        "table_rows_by_status": dict(sorted(statuses.items())),
        "best": best_out,
        "val_by_cell": vals,
    }
    prune = sdir / "prune"
    if prune.is_dir():
        stages = sorted(prune.glob("stage*.json"), key=lambda f: int(f.stem[5:]))
        out["asha_alive_per_stage"] = [len(json.loads(f.read_text())["alive"]) for f in stages]
    trials = sdir / "optuna" / "trials.json"
    if trials.exists():
        t = json.loads(trials.read_text())["trials"]
        out["n_trials"] = len(t)
        out["trial_states"] = dict(
            sorted({s: sum(x["status"] == s for x in t) for s in {x["status"] for x in t}}.items())
        )
        out["unique_trial_cells"] = len({x["cell"] for x in t if x["cell"]})
    return out


def one_run(tmp: Path, method: str, p: dict, seed: int, cores: int, t_start: float, n_trials=None) -> dict:
    wd = tmp / f"{method}-seed{seed}"
    wd.mkdir(parents=True)
    cfg = base_config(p)
    cfg["studies"] = {method: study_spec(method, p, seed, n_trials)}
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    label = f"{method} seed {seed}" + (f" (n_trials {n_trials})" if n_trials else "")
    print(f"[{(time.perf_counter() - t_start) / 60:5.1f} min] start {label}", flush=True)
    load0 = os.getloadavg()[0]
    wall = run_snakemake(wd, method, cores, label, t_start)
    res = {"method": method, "seed": seed, "wall_s": round(wall, 1)}
    res.update(collect(wd, method))
    res["jobs"] = job_stats(wd)
    res["train_job_s"] = round(sum(v["job_s"] for r, v in res["jobs"].items() if r in ("train", "train_rung")), 1)
    res["train_cpu_s"] = round(sum(v["cpu_s"] for r, v in res["jobs"].items() if r in ("train", "train_rung")), 1)
    res["load_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if n_trials is not None:
        res["n_trials_asked"] = n_trials
    b = res["best"] or {}
    print(
        f"[{(time.perf_counter() - t_start) / 60:5.1f} min] done  {label}: {wall:.0f} s, {res['cells']} cells, "
        f"{res['cell_epochs']} cell-epochs, best val {b.get('val_dice_patient')} ({b.get('config')}), "
        f"test {b.get('test_dice_patient')}",
        flush=True,
    )
    return res


# -------------------------------------------------------------------------------------------- summary
def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _sd(xs):
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def _r(x, n=4):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(x, n)


def summarise(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for method, rs in runs.items():
        bv = [(r["best"] or {}).get("val_dice_patient") for r in rs]
        bt = [(r["best"] or {}).get("test_dice_patient") for r in rs]
        out[method] = {
            "cell_epochs": [r["cell_epochs"] for r in rs],
            "cell_epochs_mean": _r(_mean([r["cell_epochs"] for r in rs]), 1),
            "cells": [r["cells"] for r in rs],
            "wall_s": [r["wall_s"] for r in rs],
            "wall_s_total": round(sum(r["wall_s"] for r in rs), 1),
            "train_job_s_total": round(sum(r["train_job_s"] for r in rs), 1),
            "train_cpu_s_total": round(sum(r["train_cpu_s"] for r in rs), 1),
            "best_val": [_r(v) for v in bv],
            "best_val_mean": _r(_mean(bv)),
            "best_val_sd": _r(_sd(bv)),
            "best_test": [_r(v) for v in bt],
            "best_test_mean": _r(_mean(bt)),
            "best_config": [(r["best"] or {}).get("config") for r in rs],
        }
    return out


def asha_trace(grid_wd: Path, asha_wd: Path, rungs) -> dict:
    """Where the grid's best configuration went under ASHA, from the same seed's files: its rank among all
    configurations by the ASHA monitor (best_val_dice so far, read from the grid cells' history.csv, which equal
    ASHA's cells: same ids, same numbers) at each rung, the decision that pruned it, and how well each rung's
    monitor ranks the configurations' final table values (Spearman ρ over the grid's finished configurations)."""
    from scipy.stats import spearmanr

    sdir = grid_wd / "results" / "studies" / "grid"
    rows = read_csv(sdir / "cells.csv")
    best = (json.loads((sdir / "table.json").read_text()).get("best") or {}).get("config")
    final, at = {}, {r: {} for r in rungs[:-1]}
    for row in rows:
        h = [float(x["val_dice"]) for x in read_csv(grid_wd / "results" / "cells" / row["cell"] / "history.csv")]
        for r in at:
            at[r][row["config"]] = max(h[:r])
        if row["status"] == "ok" and row["val_dice_patient"]:
            final[row["config"]] = float(row["val_dice_patient"])
    out: dict = {"grid_best": best, "rank_at_rung": {}, "spearman_rung_vs_final": {}}
    for r, sc in at.items():
        if best:
            out["rank_at_rung"][str(r)] = 1 + sorted(sc, key=lambda c: -sc[c]).index(best)
        ok = sorted(final)
        rho = spearmanr([sc[c] for c in ok], [final[c] for c in ok])[0] if len(ok) > 2 else None
        out["spearman_rung_vs_final"][str(r)] = _r(float(rho), 3) if rho is not None else None
    out["asha_decision"] = "finished" if best else None
    for f in sorted((asha_wd / "results" / "studies" / "asha" / "prune").glob("stage*.json")):
        for pr in json.loads(f.read_text())["pruned"]:
            if pr["config"] == best:
                out["asha_decision"] = pr["reason"]
    return out


def _startup_trials() -> int | None:
    try:
        import inspect

        import optuna

        return int(inspect.signature(optuna.samplers.TPESampler).parameters["n_startup_trials"].default)
    except Exception:  # noqa: BLE001 - a fact for the record only
        return None


def paired_gap(ref: list[dict], other: list[dict]) -> tuple[float | None, list]:
    """Mean over seeds of ref best − other best (validation); seeds where either found no finished
    configuration are left out (and listed)."""
    d, used = [], []
    for a, b in zip(ref, other):
        va, vb = (a["best"] or {}).get("val_dice_patient"), (b["best"] or {}).get("val_dice_patient")
        if va is not None and vb is not None:
            d.append(va - vb)
            used.append(a["seed"])
    return (_mean(d), used)


def same_cell_check(runs: dict[str, list[dict]], seeds) -> dict:
    """The same cell id (same configuration and seed) trained in two working directories: |Δ val Dice|."""
    diffs, shared = [], 0
    for i in range(len(seeds)):
        by = [runs[m][i]["val_by_cell"] for m in runs]
        for a in range(len(by)):
            for b in range(a + 1, len(by)):
                for c in set(by[a]) & set(by[b]):
                    shared += 1
                    diffs.append(abs(by[a][c] - by[b][c]))
    return {"shared_cells": shared, "max_abs_diff_val_dice": _r(max(diffs), 6) if diffs else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny version (a few minutes) for checking the script")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", default=None, help="keep the working directories under this folder")
    args = ap.parse_args()
    preset = "quick" if args.quick else "full"
    p = PRESETS[preset]
    n_configs = math.prod(len(v) for v in p["axes"].values())
    epochs = p["train"]["epochs"]
    assert p["rungs"][-1] == epochs
    print(
        f"bench_adaptive ({preset}): {n_configs} configurations × {epochs} epochs, seeds {p['seeds']}, "
        f"ASHA rungs {p['rungs']} η {p['eta']}, {args.cores} cores",
        flush=True,
    )
    tmp_ctx = tempfile.TemporaryDirectory(prefix="bench_adaptive_")
    tmp = Path(tmp_ctx.name)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    t_start = time.perf_counter()
    try:
        traces = []
        for seed in p["seeds"]:
            asha = one_run(tmp, "asha", p, seed, args.cores, t_start)
            runs["asha"].append(asha)
            n_trials = max(1, round(asha["cell_epochs"] / epochs))
            runs["tpe"].append(one_run(tmp, "tpe", p, seed, args.cores, t_start, n_trials=n_trials))
            runs["grid"].append(one_run(tmp, "grid", p, seed, args.cores, t_start))
        total = time.perf_counter() - t_start
        for seed in p["seeds"]:
            t = asha_trace(tmp / f"grid-seed{seed}", tmp / f"asha-seed{seed}", p["rungs"])
            traces.append({"seed": seed, **t})
    finally:
        if args.keep:
            dest = Path(args.keep)
            dest.mkdir(parents=True, exist_ok=True)
            for d in tmp.iterdir():
                shutil.copytree(d, dest / d.name, dirs_exist_ok=True)
        tmp_ctx.cleanup()
    summary = summarise(runs)
    grid_ce = sum(summary["grid"]["cell_epochs"])
    ratio = sum(summary["asha"]["cell_epochs"]) / grid_ce
    tpe_ratio = sum(summary["tpe"]["cell_epochs"]) / grid_ce
    gap, gap_seeds = paired_gap(runs["grid"], runs["asha"])
    tpe_gap, tpe_gap_seeds = paired_gap(runs["grid"], runs["tpe"])
    grid_sd = summary["grid"]["best_val_sd"]
    passed = ratio <= BAR_RATIO and gap is not None and gap <= BAR_GAP
    notes = []
    if total > 1800:
        notes.append(
            f"the whole run took {total / 60:.1f} min (> 30 min) at a 1-min load average of "
            f"{_mean([x for rs in runs.values() for r in rs for x in r['load_1min']]):.1f} on {os.cpu_count()} cores"
        )
    n_start = _startup_trials()
    if n_start and max(r["n_trials_asked"] for r in runs["tpe"]) <= n_start:
        notes.append(
            f"TPE's first {n_start} trials are random draws (Optuna's n_startup_trials): with n_trials ≤ {n_start} "
            "every TPE trial here is a seeded random sample of the space"
        )
    for m, rs in runs.items():
        missing = [r["seed"] for r in rs if not r["best"]]
        if missing:
            notes.append(f"{m}: no finished (ok) configuration at seed(s) {missing}: left out of the gaps")
    if grid_sd is not None and grid_sd > BAR_GAP:
        notes.append(
            f"the grid's own seed-to-seed sd of its best validation Dice ({grid_sd:.3f}) is larger than the "
            f"{BAR_GAP} dice_gap bar: a gap below {BAR_GAP} could not be told from seed noise at this scale"
        )
    check = same_cell_check(runs, p["seeds"])
    for rs in runs.values():
        for x in rs:
            x.pop("val_by_cell")
    result = {
        "benchmark": "adaptive_search",
        "preset": preset,
        "command": ".venv/bin/python benchmarks/bench_adaptive.py" + (" --quick" if args.quick else ""),
        "cores": args.cores,
        "setup": {
            "phantom": p["phantom"],
            "preprocess_size": p["size"],
            "splits": p["splits"],
            "train": {**base_config(p)["train"]},
            "axes": p["axes"],
            "n_configurations": n_configs,
            "epochs": epochs,
            "asha": {"rungs": p["rungs"], "eta": p["eta"]},
            "tpe": {
                "sampler": "tpe (Optuna TPESampler, the library's defaults)",
                "n_startup_trials": _startup_trials(),
                "space": "the grid's axis values as categorical choices (the same configurations)",
                "sample_seed": "= the seed",
                "parallel": p["parallel"],
                "n_trials_rule": "n_trials = round(ASHA cell-epochs of the same seed / epochs): ASHA's training budget, "
                "each trial at the full epochs",
                "n_trials": [r["n_trials_asked"] for r in runs["tpe"]],
            },
            "seeds": p["seeds"],
            "seed_meaning": "the study's base `seed` (training seed) and TPE's sample_seed; data, split fixed",
            "workdirs": "one fresh snakemake working directory per method and seed (nothing reused)",
        },
        "runs": runs,
        "summary": summary,
        "compute_ratio": _r(ratio),
        "dice_gap": _r(gap),
        "dice_gap_seeds": gap_seeds,
        "grid_best_sd": grid_sd,
        "tpe_compute_ratio": _r(tpe_ratio),
        "tpe_dice_gap": _r(tpe_gap),
        "tpe_dice_gap_seeds": tpe_gap_seeds,
        "wall_ratio_asha_vs_grid": _r(summary["asha"]["wall_s_total"] / summary["grid"]["wall_s_total"], 3),
        "same_cell_check": check,
        "asha_trace": traces,
        "bar": f"compute_ratio ≤ {BAR_RATIO} with dice_gap ≤ {BAR_GAP} (validation Dice, mean over seeds)",
        "passed": passed,
        "ratio_passed": ratio <= BAR_RATIO,
        "gap_passed": gap is not None and gap <= BAR_GAP,
        "notes": notes,
        "total_wall_s": round(total, 1),
        "machine": machine(),
        "load_1min_end": round(os.getloadavg()[0], 2),
    }
    if args.quick:  # a check of the script, not a result: never over the committed adaptive.json
        out = Path(tempfile.gettempdir()) / "adaptive_quick.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"(quick: written to {out}, not to benchmarks/results)")
    else:
        save("adaptive", result)


if __name__ == "__main__":
    main()
