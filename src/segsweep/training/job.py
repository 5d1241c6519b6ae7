"""A training job as Snakemake runs it: retries for crashes, a `failed` cell on the last attempt.

- diverged, collapsed: a normal, successful job (metrics.json says so); the study goes on.
- a user error (`SegsweepError`: a missing split or data file, a bad config value): never a failed cell, and
  not worth retrying. It propagates at once (`segsweep.runner.run` makes it one line on stderr and in the log,
  exit 1) after writing ``{out_dir}/user_error.txt`` with the message; the retries Snakemake still makes
  find that marker and fail at once with the same message, without loading data or torch. Attempt 1 (every
  fresh ``snakemake`` invocation) removes the marker first, so fixing the cause and rerunning just works.
- a crash (any other exception: CUDA OOM, I/O error, RuntimeError) on an attempt before the last: re-raised,
  so Snakemake/Slurm retries it (the run resumes from ``last.pt``).
- a crash on the last attempt: metrics.json with status ``failed`` and the reason, and the job succeeds, so
  one broken cell never blocks the study's table and report (the report lists it with its log tail).
- preempted (`Preempted`: SIGTERM / SIGUSR1 from Slurm's time-limit warning, preemption or scancel; training
  wrote a mid-epoch ``last.pt``, `segsweep.training.preempt`): never a failed cell and never a user error,
  on any attempt. Re-raised, so the job exits non-zero (`segsweep.runner.run`: ``EXIT_PREEMPTED``) and
  Snakemake retries, resuming inside the epoch. It does use up one of Snakemake's attempts (nothing can give
  one back), but never takes the failure path: preempted on the last attempt, the job still exits non-zero,
  the cell stays unrecorded and the next ``snakemake`` run (attempt 1 again) resumes it. Only a crash on the
  last attempt records ``failed``, however many attempts before it were preemptions.
A finished cell of a pack (several cells in one Slurm job, docs/slurm.md) whose pack-mate fails or is stopped:
Snakemake removes the declared outputs of every job of a failed group, the finished cell's ``metrics.json``
too, and runs the whole pack again. Within one ``snakemake`` invocation (``SEGSWEEP_RUN``, an id the
submitting invocation sets for its jobs, rules/common.smk) the job keeps a copy, ``finished-<run>.json``, and
the rerun of that cell restores ``metrics.json`` from it at once: no data load, no evaluation, the same bytes.
A later invocation (a new id) never uses it: it resumes from ``last.pt`` and re-evaluates, as before.
A job killed from outside without a signal it can catch in time (node failure, SIGKILL, OOM killer) writes
nothing and is retried by Snakemake, resuming from the latest ``last.pt``: the last epoch's by default, an
older one with ``resources.checkpoint_every_epochs`` / ``checkpoint_every_s`` (the epochs since are retrained,
to the same numbers).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from segsweep.errors import SegsweepError
from segsweep.io import write_bytes, write_text
from segsweep.training.params import CellParams
from segsweep.training.preempt import Preempted
from segsweep.training.record import CellMetrics

log = logging.getLogger("segsweep.jobs")

USER_ERROR_MARKER = "user_error.txt"
RUN_ENV = "SEGSWEEP_RUN"  # one id per submitting `snakemake` invocation (rules/common.smk), inherited by its jobs
T = TypeVar("T")


def run_attempt(
    run: Callable[[], T],
    record_failure: Callable[[BaseException, float], T],
    *,
    out_dir: Path,
    attempt: int = 1,
    max_attempts: int = 1,
) -> T:
    """One Snakemake attempt of a training job (module docstring): ``run()``, with the user-error marker in
    ``out_dir``, preemption passed through, and a crash re-raised for the retry or, on the last attempt,
    turned into ``record_failure(exc, seconds)`` (whose result the job returns). The train and rung jobs."""
    out_dir = Path(out_dir)
    marker = out_dir / USER_ERROR_MARKER
    if attempt <= 1:
        marker.unlink(missing_ok=True)
    elif marker.exists():
        log.error(
            "attempt %d of %d: not retrying, an earlier attempt stopped on a user error (%s)",
            attempt,
            max_attempts,
            marker,
        )
        raise SegsweepError(marker.read_text().strip())
    t0 = time.time()
    try:
        return run()
    except SegsweepError as exc:  # the user's to fix: no retry, no failed cell
        write_text(marker, f"{exc}\n")
        raise
    except Preempted as exc:  # a BaseException, so never the crash path below: exit for the retry
        log.warning(
            "attempt %d of %d: %s%s",
            attempt,
            max_attempts,
            exc,
            "" if attempt < max_attempts else " (no Snakemake retry left: run the same snakemake command again)",
        )
        raise
    except Exception as exc:  # noqa: BLE001 - any other crash becomes a retry or a recorded failure
        if attempt < max_attempts:
            log.error("attempt %d of %d failed (%s); Snakemake will retry", attempt, max_attempts, exc)
            raise
        log.error("attempt %d of %d failed; recording it as failed:\n%s", attempt, max_attempts, traceback.format_exc())
        return record_failure(exc, time.time() - t0)


# The execution settings a training job takes from its rule's resources (config `resources.*`, cast here):
# how a cell runs, never what it computes, so they are resources (no rerun trigger, not in the cell id), and
# the workflow scripts pass them on whole (`execution_settings`), so a new one changes no script.
EXECUTION_SETTINGS = {
    "checkpoint_every_epochs": int,
    "checkpoint_every_s": int,
    "worker": bool,
    "worker_idle_s": int,
    # resources.amp / channels_last "auto" (decided on the training device); their params say only "true"
    # (`segsweep.plan.resources.ResourceConfig.rerun_params`)
    "amp_auto": bool,
    "channels_last_auto": bool,
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
    **kwargs,
):
    """`loop.train_cell` with ``kwargs``: in this process, or with ``worker`` in this job's trainer worker
    (`segsweep.training.worker`: torch and CUDA started once per slot, not once per cell)."""
    if worker:
        from segsweep.training.worker import train_in_worker

        args = {"data_dir": str(data_dir), "split_path": str(split_path), "out_dir": str(out_dir), **kwargs}
        return train_in_worker("train_cell", params, args, idle_s=worker_idle_s, job_log=log)
    from segsweep.training.loop import train_cell  # torch import only when a cell really trains

    return train_cell(params, data_dir, split_path, out_dir, log=log, **kwargs)


def failure_reason(exc: BaseException) -> str:
    # a crash in a trainer worker reads as the same crash in the job's own process
    return (getattr(exc, "crash_reason", None) or f"{type(exc).__name__}: {exc}")[:500]


def run_train_job(
    params: CellParams,
    *,
    data_dir: Path,
    split_path: Path,
    out_dir: Path,
    threads: int = 1,
    device: str = "auto",
    attempt: int = 1,
    max_attempts: int = 1,
    amp: bool = False,
    channels_last: bool = False,
    evaluation: Mapping | None = None,
    checkpoint_every_epochs: int = 1,
    checkpoint_every_s: float = 0,
    worker: bool = False,
    worker_idle_s: float = 60,
    amp_auto: bool = False,
    channels_last_auto: bool = False,
) -> CellMetrics:
    """Run `train_cell` as one Snakemake attempt (module docstring); ``evaluation`` is the config's
    ``evaluation`` section, passed on for the final evaluation; ``checkpoint_every_epochs`` / ``_s`` (config
    ``resources``, rule resources: no rerun trigger) say how often ``last.pt`` is written; ``worker``: train
    in the job's trainer worker (`train`); ``amp_auto`` / ``channels_last_auto``: that setting is "auto"
    (`speed_settings`)."""
    out_dir = Path(out_dir)
    amp, channels_last = speed_settings(amp, amp_auto), speed_settings(channels_last, channels_last_auto)

    def run() -> CellMetrics:
        return train(
            params,
            data_dir,
            split_path,
            out_dir,
            worker=worker,
            worker_idle_s=worker_idle_s,
            threads=threads,
            device=device,
            amp=amp,
            channels_last=channels_last,
            evaluation=evaluation,
            checkpoint_every_epochs=checkpoint_every_epochs,
            checkpoint_every_s=checkpoint_every_s,
        )

    def failed(exc: BaseException, seconds: float) -> CellMetrics:
        metrics = CellMetrics(
            cell=out_dir.name,
            status="failed",
            reason=failure_reason(exc),
            wall_s=round(seconds, 2),
            device=device,
            params=params.to_dict(),
        )
        metrics.write(out_dir / "metrics.json")
        return metrics

    restored = restore_finished(out_dir)
    if restored is not None:
        return restored
    metrics = run_attempt(run, failed, out_dir=out_dir, attempt=attempt, max_attempts=max_attempts)
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
    write_bytes(kept, (out_dir / "metrics.json").read_bytes())


def restore_finished(out_dir: Path) -> CellMetrics | None:
    """metrics.json again from this invocation's copy, when Snakemake removed it because a pack-mate failed."""
    kept = _kept(out_dir)
    if kept is None or not kept.exists() or (out_dir / "metrics.json").exists():
        return None
    raw = kept.read_bytes()
    write_bytes(out_dir / "metrics.json", raw)
    metrics = CellMetrics.read(out_dir / "metrics.json")
    log.info(
        "cell %s finished earlier in this snakemake run (status %s); Snakemake removed its metrics.json when a job "
        "of its pack failed: restored from %s",
        out_dir.name,
        metrics.status,
        kept,
    )
    return metrics
