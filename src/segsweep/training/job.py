"""A training job as Snakemake runs it: retries for crashes, a `failed` cell on the last attempt.

- diverged, collapsed: a normal, successful job (metrics.json says so); the study goes on.
- a user error (`SegsweepError`: a missing split or data file, a bad config value): never a failed cell, and
  not worth retrying. It propagates at once (`segsweep.runner.run` makes it one line on stderr and in the log,
  exit 1) after writing ``{out_dir}/user_error.txt`` with the message; the retries Snakemake still makes
  find that marker and fail at once with the same message, without loading data or torch. Attempt 1 (every
  fresh ``snakemake`` invocation) removes the marker first, so fixing the cause and rerunning just works.
- a crash (any other exception: CUDA OOM, I/O error, RuntimeError) is counted in ``{out_dir}/attempts.json``
  (crashes of this ``snakemake`` invocation, `SEGSWEEP_RUN`): before the cell's ``1 + resources.train_retries``
  crashes it is re-raised, so Snakemake retries it (the run resumes from ``last.pt``); the last one writes
  metrics.json with status ``failed`` and the reason, and the job succeeds, so one broken cell never blocks
  the study's table and report (the report lists it with its log tail). The count is the job's own, not
  Snakemake's ``attempt``: a requeued Slurm job runs again with the same ``attempt``, and Snakemake's retries
  (``train_retries + train_max_stops``) also cover stops.
- stopped (`Preempted`: the Slurm job's time limit is near (`segsweep.training.slurm_job.stop_time`), SIGTERM /
  SIGUSR1 from a ``--signal`` warning, preemption or scancel; training wrote a mid-epoch ``last.pt``,
  `segsweep.training.preempt`): never a crash, never a failed cell, never a user error. In a Slurm job that
  still runs, the job requeues itself (`slurm_job.continue_later`) and the cell goes on in the same job id
  with a fresh time limit; otherwise the job exits non-zero (`segsweep.runner.run`: ``EXIT_PREEMPTED``) and
  Snakemake resubmits it (a Snakemake retry, not a crash).
A finished cell of a pack (several cells in one Slurm job, docs/slurm.md): a stop requeues the pack without
failing it, so the submitting Snakemake removes nothing, and the requeued job's Snakemake (``--force`` on its
targets) keeps ``metrics.json`` too, as the rule declares it ``update()``: the cell's job runs again and
returns it as it is. A pack that fails or is cancelled still loses it to the submitting Snakemake (it
removes every output of a failed group job). Within one ``snakemake`` invocation (``SEGSWEEP_RUN``, an id
the submitting invocation sets for its jobs, rules/common.smk) the job therefore keeps a copy,
``finished-<run>.json``: the rerun of that cell returns ``metrics.json`` (kept, or restored from the copy)
at once: no data load, no evaluation, the same bytes. A later invocation (a new id) never uses it: it resumes from ``last.pt`` and
re-evaluates, as before.
A job killed from outside without a signal it can catch in time (node failure, SIGKILL, OOM killer) writes
nothing and is retried by Snakemake, resuming from the latest ``last.pt``: the last epoch's by default, an
older one with ``resources.checkpoint_every_epochs`` / ``checkpoint_every_s`` (the epochs since are retrained,
to the same numbers).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from segsweep.errors import SegsweepError
from segsweep.io import write_bytes, write_text
from segsweep.paths import METRICS
from segsweep.training import preempt, slurm_job
from segsweep.training.params import CellParams
from segsweep.training.preempt import Preempted
from segsweep.training.record import CellMetrics

log = logging.getLogger("segsweep.jobs")

USER_ERROR_MARKER = "user_error.txt"
CRASHES_FILE = "attempts.json"  # crashes of the cell in this invocation (module docstring)
RUN_ENV = "SEGSWEEP_RUN"  # one id per submitting `snakemake` invocation (rules/common.smk), inherited by its jobs
T = TypeVar("T")


def _run_id() -> str | None:
    run = os.environ.get(RUN_ENV, "")
    return run if run.isalnum() else None


def crashes_so_far(out_dir: Path) -> int:
    """Crashes of the cell's training in this ``snakemake`` invocation (``attempts.json``; module docstring)."""
    run, path = _run_id(), Path(out_dir) / CRASHES_FILE
    if run is None or not path.exists():
        return 0
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    return int(kept.get("crashes", 0)) if kept.get("run") == run else 0


def count_crash(out_dir: Path) -> int:
    """One more crash of this invocation in ``attempts.json``; returns the count (0 without a run id)."""
    run = _run_id()
    if run is None:
        return 0
    crashes = crashes_so_far(out_dir) + 1
    write_text(Path(out_dir) / CRASHES_FILE, json.dumps({"run": run, "crashes": crashes}) + "\n")
    return crashes


def run_attempt(
    run: Callable[[], T],
    record_failure: Callable[[BaseException, float], T],
    *,
    out_dir: Path,
    attempt: int = 1,
    max_attempts: int = 1,
    max_stops: int = 0,
) -> T:
    """One run of a training job (module docstring): ``run()``, with the user-error marker in ``out_dir``, a
    stop passed through (after requeueing a Slurm job that still runs, at most ``max_stops`` times), and a crash
    counted: re-raised for the retry or, at the ``max_attempts``-th crash of this invocation, turned into
    ``record_failure(exc, seconds)`` (whose result the job returns). ``attempt`` is Snakemake's; without a run
    id (`RUN_ENV`) it counts the crashes instead of ``attempts.json``. The train and rung jobs."""
    out_dir = Path(out_dir)
    marker = out_dir / USER_ERROR_MARKER
    if attempt <= 1:
        marker.unlink(missing_ok=True)
    elif marker.exists():
        log.error(
            "attempt %d: not retrying, an earlier attempt stopped on a user error (%s)",
            attempt,
            marker,
        )
        raise SegsweepError(marker.read_text().strip())
    counted = _run_id() is not None
    crash = crashes_so_far(out_dir) + 1 if counted else attempt
    log.info(
        "crash attempt %d of %d (resources.train_retries; a stop is not a crash), Snakemake attempt %d",
        crash,
        max_attempts,
        attempt,
    )
    t0 = time.time()
    try:
        return run()
    except SegsweepError as exc:  # the user's to fix: no retry, no failed cell
        write_text(marker, f"{exc}\n")
        raise
    except Preempted as exc:  # a BaseException, so never the crash path below
        used = f": {crash - 1} of {max_attempts} crash attempts used" if counted else ""
        log.warning("%s (a stop, not a crash%s)", exc, used)
        slurm_job.continue_later(max_stops)
        raise
    except Exception as exc:  # noqa: BLE001 - any other crash becomes a retry or a recorded failure
        try:
            crash = count_crash(out_dir) if counted else attempt
        except OSError as io_exc:  # a cell folder that cannot be written (read-only, full): retried, not recorded
            log.error("cannot count this crash in %s (%s)", out_dir / CRASHES_FILE, io_exc)
            raise exc from None
        if crash < max_attempts:
            log.error("crash %d of %d allowed (%s); Snakemake will retry", crash, max_attempts, exc)
            raise
        log.error("crash %d of %d allowed; recording it as failed:\n%s", crash, max_attempts, traceback.format_exc())
        return record_failure(exc, time.time() - t0)


# The execution settings a training job takes from its rule's resources (config `resources.*`, cast here):
# how a cell runs, never what it computes, so they are resources (no rerun trigger, not in the cell id), and
# the workflow scripts pass them on whole (`execution_settings`), so a new one changes no script.
EXECUTION_SETTINGS = {
    "checkpoint_every_epochs": int,
    "checkpoint_every_s": int,
    "checkpoint_auto": bool,  # neither of the two set: decided on the training device (loop.CheckpointEvery)
    "worker": bool,
    "worker_idle_s": int,
    # resources.amp / channels_last "auto" (decided on the training device); their params say only "true"
    # (`segsweep.plan.resources.ResourceConfig.rerun_params`)
    "amp_auto": bool,
    "channels_last_auto": bool,
    "train_stop_margin_s": int,
    "train_max_stops": int,
}


def execution_settings(resources: object) -> dict:
    """``{setting: value}`` for each of `EXECUTION_SETTINGS` that the job's resources hold."""
    return {k: cast(getattr(resources, k)) for k, cast in EXECUTION_SETTINGS.items() if hasattr(resources, k)}


def speed_settings(forced: bool, auto: bool) -> bool | str:
    """``amp`` / ``channels_last`` for `loop.train_cell` from the rule's param (true only when set to true)
    and resource (set to "auto"): True, False or "auto" (`segsweep.training.device.resolve_speed_settings`)."""
    return "auto" if auto and not forced else bool(forced)


def train(
    params: CellParams,
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    *,
    worker: bool = False,
    worker_idle_s: float = 60,
    train_stop_margin_s: float = 0,
    **kwargs,
):
    """`loop.train_cell` with ``kwargs``: in this process, or with ``worker`` in this job's trainer worker
    (`segsweep.training.worker`: torch and CUDA started once per slot, not once per cell). In a Slurm job,
    training stops ``train_stop_margin_s`` before the job's time limit (`slurm_job.stop_time`); a job that
    starts inside that margin stops at once (`Preempted`, nothing trained)."""
    stop_by = slurm_job.stop_time(train_stop_margin_s)
    if stop_by is not None and time.time() >= stop_by:
        log.warning("the Slurm job's time limit is too near to start training (resources.train_stop_margin_s)")
        raise Preempted(preempt.DEADLINE_SIGNAL, 0, 0, 0, None)
    if worker:
        from segsweep.training.worker import train_in_worker

        args = {"data_dir": str(data_dir), "split_path": str(split_path), "out_dir": str(out_dir), **kwargs}
        return train_in_worker("train_cell", params, args, idle_s=worker_idle_s, job_log=log, stop_by=stop_by)
    from segsweep.training.loop import train_cell  # torch import only when a cell really trains

    with preempt.stop_by(stop_by):
        return train_cell(params, data_dir, split_path, out_dir, log=log, **kwargs)


def failure_reason(exc: BaseException) -> str:
    # a crash in a trainer worker reads as the same crash in the job's own process
    return (getattr(exc, "crash_reason", None) or f"{type(exc).__name__}: {exc}")[:500]


def run_cell_attempt(
    params: CellParams,
    *,
    data_dir: Path,
    split_path: Path,
    cell_dir: Path,
    record_failure: Callable[[BaseException, float], Any],
    attempt: int = 1,
    max_attempts: int = 1,
    train_max_stops: int = 0,
    threads: int = 1,
    device: str = "auto",
    amp: bool = False,
    channels_last: bool = False,
    amp_auto: bool = False,
    channels_last_auto: bool = False,
    evaluation: Mapping | None = None,
    checkpoint_every_epochs: int = 1,
    checkpoint_every_s: float = 0,
    checkpoint_auto: bool = False,
    worker: bool = False,
    worker_idle_s: float = 60,
    train_stop_margin_s: float = 0,
    stop_at: int | None = None,
):
    """One Snakemake attempt at training a cell (`run_attempt`), shared by the ``train`` job
    (`run_train_job`) and a pruner's rung job (`segsweep.training.rungs.run_rung_job`, with ``stop_at``).
    ``evaluation`` is the config's ``evaluation`` section, passed on for the final evaluation;
    ``checkpoint_every_epochs`` / ``_s`` (config ``resources``, rule resources: no rerun trigger) say how often
    ``last.pt`` is written, or ``checkpoint_auto`` leaves that to the training device
    (`loop.CheckpointEvery.for_device`); ``worker``: train in the job's trainer worker (`train`); ``amp_auto`` /
    ``channels_last_auto``: that setting is "auto" (`speed_settings`); ``train_stop_margin_s``,
    ``train_max_stops``: stops in a Slurm job (`train`, `run_attempt`); ``record_failure``: what the last
    allowed crash records."""
    amp_mode, channels_last_mode = speed_settings(amp, amp_auto), speed_settings(channels_last, channels_last_auto)
    until = {} if stop_at is None else {"stop_at": stop_at}

    def run():
        return train(
            params,
            data_dir,
            split_path,
            cell_dir,
            worker=worker,
            worker_idle_s=worker_idle_s,
            train_stop_margin_s=train_stop_margin_s,
            threads=threads,
            device=device,
            amp=amp_mode,
            channels_last=channels_last_mode,
            evaluation=evaluation,
            **until,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_s=checkpoint_every_s,
            checkpoint_auto=checkpoint_auto,
        )

    return run_attempt(
        run, record_failure, out_dir=cell_dir, attempt=attempt, max_attempts=max_attempts, max_stops=train_max_stops
    )


def run_train_job(
    params: CellParams, *, data_dir: Path, split_path: Path, out_dir: Path, device: str = "auto", **settings
) -> CellMetrics:
    """Train a cell as one Snakemake attempt (module docstring) into ``out_dir``: `run_cell_attempt` with
    ``settings`` (attempt, retries, execution settings), a failed cell recorded as ``failed`` metrics.json, and
    a cell that finished earlier in this invocation returned as it is (`restore_finished`)."""
    out_dir = Path(out_dir)

    def failed(exc: BaseException, seconds: float) -> CellMetrics:
        metrics = CellMetrics(
            cell=out_dir.name,
            status="failed",
            reason=failure_reason(exc),
            wall_s=round(seconds, 2),
            device=device,
            params=params.to_dict(),
        )
        metrics.write(out_dir / METRICS)
        return metrics

    restored = restore_finished(out_dir)
    if restored is not None:
        return restored
    metrics = run_cell_attempt(
        params,
        data_dir=data_dir,
        split_path=split_path,
        cell_dir=out_dir,
        record_failure=failed,
        device=device,
        **settings,
    )
    keep_finished(out_dir)
    return metrics


def _kept(out_dir: Path) -> Path | None:
    run = os.environ.get(RUN_ENV, "")
    return out_dir / f"finished-{run}.json" if run.isalnum() else None


def keep_finished(out_dir: Path) -> None:
    """Copy the cell's metrics.json for this invocation's reruns of it (module docstring); drop older copies."""
    kept = _kept(out_dir)
    if kept is None:
        return
    for old in out_dir.glob("finished-*.json"):
        if old != kept:
            old.unlink(missing_ok=True)
    write_bytes(kept, (out_dir / METRICS).read_bytes())


def restore_finished(out_dir: Path) -> CellMetrics | None:
    """The cell's result when it finished earlier in this invocation (module docstring): metrics.json as it is
    (its pack was requeued: the rule's output is ``update()``, so Snakemake kept it), or again from this
    invocation's copy (its pack failed or was cancelled, and Snakemake removed it). None otherwise."""
    kept, metrics_path = _kept(out_dir), out_dir / METRICS
    if kept is None or not kept.exists():
        return None
    raw = kept.read_bytes()
    if metrics_path.exists():
        if metrics_path.read_bytes() != raw:  # not this run's result (cannot be, but never serve a stale one)
            return None
        how = "its pack ran again: kept"
    else:
        write_bytes(metrics_path, raw)
        how = f"Snakemake removed its metrics.json when its pack failed: restored from {kept}"
    metrics = CellMetrics.read(metrics_path)
    log.info("cell %s finished earlier in this snakemake run (status %s); %s", out_dir.name, metrics.status, how)
    return metrics
