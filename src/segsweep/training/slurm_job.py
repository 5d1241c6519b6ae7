"""What a training job knows about the Slurm job it runs in: when it must stop, and how it continues later.

Why (docs/slurm.md, "Time limits, preemption, stop signals"): a stop is not a failure. A job that runs into its
time limit must end before it (a job that overruns ends TIMEOUT, and Snakemake removes the outputs of every cell
of its pack), and its cell must go on without using one of the cell's crash attempts and without the user
typing the command again.

* `stop_time`: Slurm's end time of this job (``squeue -o %S|%e``) less a margin: the training job stops there
  (mid-epoch ``last.pt``, `segsweep.training.preempt.stop_by`) so that saving, the pack's other steps and
  Snakemake's own exit fit before the limit. The margin is ``resources.train_stop_margin_s``, at most a quarter
  of the job's time limit (a short limit still trains).
* `continue_later`: after a stop, ``scontrol requeue`` of this job while Slurm still reports it RUNNING (a
  time-limit stop, a ``--signal`` warning, ``scancel --signal=TERM``). Slurm puts the same job id back in the
  queue (after ``AuthInfo=cred_expire``, 120 s by default) and runs it again with a fresh time limit; the
  submitting Snakemake, which polls that id, sees PENDING/RUNNING and keeps waiting: no failed job, so no
  output of the pack is removed and no Snakemake retry is used. A job already CANCELLED (``scancel``, or
  Snakemake's own cancel on Ctrl-C: the two look the same from inside) is left to end: when Snakemake still
  runs, it resubmits it (one of ``resources.train_max_stops``), and after a Ctrl-C nothing comes back.
  A job already requeued by Slurm (``scontrol requeue``, ``PreemptMode=REQUEUE``) comes back by itself.
Outside Slurm (no ``SLURM_JOB_ID``) both do nothing: a local run keeps its behaviour.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import threading

log = logging.getLogger("segsweep.jobs")

JOB_ENV = "SLURM_JOB_ID"
RESTARTS_ENV = "SLURM_RESTART_COUNT"  # how often Slurm requeued this job (unset before the first requeue)
_TIMEOUT_S = 30  # a Slurm command that hangs (controller down) must not hold the job


def job_id() -> str | None:
    """This process's Slurm job, if any (a batch job's steps inherit it)."""
    jid = os.environ.get(JOB_ENV, "").strip()
    return jid or None


def _squeue(jid: str, fmt: str) -> str | None:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", jid, "-o", fmt], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def _timestamp(value: str) -> float | None:
    """Slurm's ``2026-12-07T09:22:28`` (the controller's local time, as this node's) in epoch seconds."""
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:  # N/A, Unknown, NONE: no limit
        return None


def stop_time(margin_s: float) -> float | None:
    """When this job's training must stop (module docstring), in epoch seconds; None outside Slurm, without a
    time limit, or when Slurm cannot be asked (the time limit's own SIGTERM is then the stop)."""
    jid = job_id()
    row = _squeue(jid, "%S|%e") if jid else None
    if row is None:
        return None
    start, _, end = row.partition("|")
    t_start, t_end = _timestamp(start), _timestamp(end)
    if t_end is None:
        return None
    if t_start is not None and t_end > t_start:
        margin_s = min(margin_s, (t_end - t_start) / 4)
    return t_end - margin_s


def state() -> str | None:
    """Slurm's state of this job (RUNNING, COMPLETING after a scancel, REQUEUED, ...); None outside Slurm."""
    jid = job_id()
    return _squeue(jid, "%T") if jid else None


def continue_later(max_requeues: int) -> bool:
    """After a stop: requeue this job while it still runs (module docstring). True when requeued."""
    jid = job_id()
    if jid is None:
        return False
    restarts = int(os.environ.get(RESTARTS_ENV, "0") or 0)
    st = state()
    if st != "RUNNING":
        log.warning(
            "Slurm job %s is %s (cancelled, or requeued by Slurm): not requeueing it; Snakemake resubmits a "
            "cancelled job while it runs",
            jid,
            st or "unknown",
        )
        return False
    if restarts >= max_requeues:
        log.warning(
            "Slurm job %s was requeued %d times already (resources.train_max_stops): ending it instead; "
            "Snakemake resubmits it",
            jid,
            restarts,
        )
        return False
    # The requeue sends SIGTERM to every process of the job, this one too: it is on its way out already.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        out = subprocess.run(
            ["scontrol", "requeue", jid], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("scontrol requeue %s failed (%s): Snakemake resubmits the job instead", jid, exc)
        return False
    if out.returncode != 0:
        log.warning(
            "scontrol requeue %s failed (%s): Snakemake resubmits the job instead (a cluster with JobRequeue=0 "
            "or sbatch --no-requeue)",
            jid,
            (out.stderr or out.stdout).strip(),
        )
        return False
    log.warning(
        "requeued Slurm job %s (requeue %d): it runs again with a fresh time limit and this cell resumes from "
        "last.pt; the submitting Snakemake keeps waiting for the same job",
        jid,
        restarts + 1,
    )
    return True
