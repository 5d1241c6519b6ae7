"""`python -m segsweep.plan.status`: where a run stands, per study, read from the run folder while it runs.

Per study: cells done (a ``metrics.json``: ok, collapsed or diverged), failed (``metrics.json`` status
``failed``), running (a training log whose last job started and has not finished, written to within the
last ``STALE_S`` seconds or three of its own epochs), pending (the rest; a started log that went quiet is
pending too: the next run resumes it from ``last.pt``). For each running cell: its epoch k/N, its mean epoch
time and what it has left. The ETA of a study is

    ETA = max over running cells of (N - k) · t̄_cell  +  Σ_pending N_cell · t̄ / max(1, n_running)

with t̄_cell a running cell's mean measured epoch time, t̄ the mean over every epoch logged so far (all
cells of the run) and n_running the cells training now (the parallelism the run is getting): epochs only,
not ingest, evaluation or the report. Cells of an optuna study exist once its rounds have proposed them
(round files); the view counts the cells known so far.

The plan is the one Snakemake builds from the same config (``segsweep.plan.cells.build_plan``), so a cell id
here is the id in ``results/cells/`` and ``logs/train/``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segsweep.paths import OPTUNA_DIR, cell_file

STALE_S = 120.0  # a log untouched this long (and for 3 epochs) belongs to a job that is no longer running
_EPOCH = re.compile(r"epoch (\d+)/(\d+) .*\(([\d.]+) s\)\s*$")
_JOB = re.compile(r"segsweep: rule train(?:_rung)?: (starting|done)")


@dataclass
class CellProgress:
    cell: str
    state: str  # done | failed | running | pending
    epoch: int = 0  # last logged epoch (running cells)
    epochs: int = 0  # the cell's planned epochs
    epoch_s: list[float] = field(default_factory=list)  # measured epoch times of its latest job

    @property
    def mean_epoch_s(self) -> float | None:
        return sum(self.epoch_s) / len(self.epoch_s) if self.epoch_s else None

    @property
    def left_s(self) -> float | None:
        m = self.mean_epoch_s
        return None if m is None else max(0, self.epochs - self.epoch) * m


@dataclass
class StudyProgress:
    name: str
    cells: list[CellProgress]
    eta_s: float | None

    def count(self, state: str) -> int:
        return sum(c.state == state for c in self.cells)


def read_log(path: Path) -> tuple[bool, list[tuple[int, int, float]]]:
    """(whether the log's last job is still open, that job's (epoch, epochs, seconds) lines)."""
    open_job, epochs = False, []
    for line in path.read_text(errors="replace").splitlines():
        if j := _JOB.search(line):
            open_job = j.group(1) == "starting"
            epochs = [] if open_job else epochs
        elif m := _EPOCH.search(line):
            epochs.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    return open_job, epochs


def cell_progress(cell: str, epochs: int, root: Path, now: float | None = None) -> CellProgress:
    """One cell's state from ``results/cells/<cell>/metrics.json`` and its training logs under ``root``."""
    now = time.time() if now is None else now
    logs = [root / "logs" / "train" / f"{cell}.log", *sorted((root / "logs" / "train_rung").glob(f"{cell}-*.log"))]
    logs = [p for p in logs if p.exists()]
    log = max(logs, key=lambda p: p.stat().st_mtime) if logs else None
    open_job, lines = read_log(log) if log else (False, [])
    times = [s for _, _, s in lines]  # a finished cell's too: they measure the run's epoch time
    metrics = root / cell_file(cell)
    if metrics.exists():
        try:
            status = json.loads(metrics.read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            status = None
        if status is not None:
            return CellProgress(cell, "failed" if status == "failed" else "done", epochs=epochs, epoch_s=times)
    if log is None:
        return CellProgress(cell, "pending", epochs=epochs)
    quiet_s = now - log.stat().st_mtime
    patience = max(STALE_S, 3 * (sum(times) / len(times))) if times else STALE_S
    state = "running" if open_job and quiet_s <= patience else "pending"
    epoch = lines[-1][0] if lines else 0
    return CellProgress(cell, state, epoch=epoch, epochs=lines[-1][1] if lines else epochs, epoch_s=times)


def study_progress(
    studies: Mapping[str, Sequence[str]], epochs: Mapping[str, int], root: Path, now: float | None = None
) -> list[StudyProgress]:
    """Each study's cells (ids, config order) → their states and the study's ETA (module doc)."""
    now = time.time() if now is None else now
    seen = {c: cell_progress(c, epochs[c], root, now) for cells in studies.values() for c in cells}
    measured = [s for c in seen.values() for s in c.epoch_s]
    mean_all = sum(measured) / len(measured) if measured else None
    running = sum(c.state == "running" for c in seen.values())
    out = []
    for name, ids in studies.items():
        cells = [seen[c] for c in dict.fromkeys(ids)]
        left = [c.left_s for c in cells if c.state == "running"]
        pending = [c.epochs for c in cells if c.state == "pending"]
        if (pending and mean_all is None) or any(v is None for v in left):
            eta = None  # nothing measured yet
        else:
            eta = max(left, default=0.0) + sum(pending) * (mean_all or 0.0) / max(1, running)
        out.append(StudyProgress(name, cells, eta))
    return out


def format_duration(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 10:
        return f"{s:.1f} s"
    if s < 90:
        return f"{math.ceil(s)} s"
    if s < 5400:
        return f"{math.ceil(s / 60)} min"
    return f"{s / 3600:.1f} h"


def render(progress: Sequence[StudyProgress], headers: Mapping[str, str] | None = None) -> str:
    headers = headers or {}
    width = max([len("study"), *(len(p.name) for p in progress)])
    lines = [f"{'study':<{width}}  {'cells':>5}  {'done':>5}  {'running':>7}  {'pending':>7}  {'failed':>6}  ETA"]
    for p in progress:
        lines.append(
            f"{p.name:<{width}}  {len(p.cells):>5}  {p.count('done'):>5}  {p.count('running'):>7}  "
            f"{p.count('pending'):>7}  {p.count('failed'):>6}  {format_duration(p.eta_s)}"
        )
    running = {c.cell: c for p in progress for c in p.cells if c.state == "running"}
    for c in running.values():
        what = f" ({headers[c.cell]})" if c.cell in headers else ""
        lines.append(
            f"  running {c.cell}{what}: epoch {c.epoch}/{c.epochs}, {format_duration(c.mean_epoch_s)}/epoch, "
            f"{format_duration(c.left_s)} left"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- command line
def load_run_config(configfiles: Sequence[str], overrides: Sequence[str]) -> dict:
    """The config Snakemake builds for the same command line: the demo's config/config.yaml only without
    config files, files merged in order, ``key=value`` overrides (values read as YAML) last."""
    from segsweep.plan import config as sc

    files = list(configfiles) or ["config/config.yaml"]
    cfg: dict = {}
    for f in files:
        try:
            cfg = sc.deep_merge(cfg, sc.load_yaml(Path(f).read_text()) or {})
        except FileNotFoundError:
            raise sc.ConfigError(f"config file not found: {f}") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise sc.ConfigError(f"--config {item}: expected key=value")
        cfg = sc.deep_merge(cfg, {key: sc.load_yaml(value)})
    sc.coerce_cli_scalars(cfg)
    return sc.prepare(cfg, base_dir=Path(__file__).resolve().parents[3])  # the repository (study_files)


def plan_cells(cfg: Mapping, root: Path) -> tuple[dict[str, list[str]], dict[str, int], dict[str, str]]:
    """study → cell ids (static cells, plus the trial cells an optuna study's round files name), cell →
    epochs, cell → header (`segsweep.plan.headers`)."""
    from segsweep.data.config import DataConfig, dataset_base, scan_dir
    from segsweep.data.scan import watch_root
    from segsweep.plan.cells import build_plan, used_datasets
    from segsweep.plan.headers import study_headers
    from segsweep.plan.optuna_rounds import trial_cells

    data = DataConfig.from_config(cfg)
    content = None if data.source == "phantom" else watch_root(data, root / scan_dir(data)).digest
    extra = {}
    for ds in used_datasets(cfg):
        d = DataConfig.from_config(cfg, ds)
        if d.source != "phantom":
            extra[ds] = watch_root(d, root / dataset_base(ds) / "raw" / "scan", key=f"datasets.{ds}").digest
    plan = build_plan(cfg, data_content=content, dataset_content=extra)
    studies = {n: list(s.cell_ids) for n, s in plan.studies.items()}
    epochs = {c: cell.params.epochs for c, cell in plan.cells.items()}
    for name, study in plan.studies.items():
        if study.adaptive:  # its trial cells so far: those its round files record (rules/adaptive.smk)
            rounds = sorted((root / OPTUNA_DIR.format(study=name)).glob("round*.json"))
            for cid, cell in trial_cells(rounds).items():
                studies[name].append(cid)
                epochs.setdefault(cid, cell.params.epochs)
    return studies, epochs, study_headers(plan.studies)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m segsweep.plan.status", description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="*", default=[], help="as given to snakemake (none: the demo)")
    ap.add_argument("--config", nargs="*", default=[], help="key=value overrides, as given to snakemake")
    ap.add_argument("-d", "--directory", default=".", help="the run folder (snakemake -d)")
    ap.add_argument("--watch", type=float, default=0, help="refresh every this many seconds (0: once)")
    args = ap.parse_args(argv)
    from segsweep.errors import SegsweepError

    root = Path(args.directory)
    try:
        cfg = load_run_config(args.configfile, args.config)
        studies, epochs, headers = plan_cells(cfg, root)
    except SegsweepError as exc:
        print(f"segsweep: {exc}", file=sys.stderr)
        return 2
    while True:
        text = render(study_progress(studies, epochs, root), headers)
        if not args.watch:
            print(text)
            return 0
        print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + "\n" + text, flush=True)
        time.sleep(args.watch)


if __name__ == "__main__":
    sys.exit(main())
