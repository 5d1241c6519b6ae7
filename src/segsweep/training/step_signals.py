"""Pass the stop signals a Slurm job step's Snakemake receives on to the training script it runs.

Why: Slurm 22.05's ``ProctrackType=proctrack/cgroup`` (what real clusters use) delivers a signal other than
SIGKILL to a job step's *task* only, and in a cell's ``srun`` step that task is the jobstep's own
``python -m snakemake``. Snakemake does not pass it on to the rule's script, so ``scancel --signal=TERM``, the
SIGTERM of a ``scancel`` or a ``scontrol requeue``, and a preemption's never reached the training job: its cell
was killed instead of checkpointing mid-epoch (`segsweep.training.preempt`). Under ``proctrack/linuxproc``
Slurm signals every process of the step, so the script gets it directly.

How. In a job step whose targets are training jobs (`forward_in_job_step`, called from rules/common.smk, where
the step's Snakemake parses the Snakefile), `install` registers a pipe as Python's signal wakeup fd
(`signal.set_wakeup_fd`): the interpreter's C-level handler writes the number of every signal that has a Python
handler to it, whichever Python handler that is. A handler is needed because Snakemake's scheduler replaces
the SIGTERM handler after the parse (``JobScheduler.exit_gracefully``: finish the running jobs, then exit), and
a Python handler set here would be lost; the wakeup fd is not. A daemon thread reads the pipe and sends each
stop signal (`STOP_SIGNALS`) to every descendant of this process, as linuxproc would have: the script's
process, and a trainer worker it started itself (a worker the batch step's spawner started is not the step's,
as under linuxproc; its client forwards the stop). Snakemake's own handling is unchanged: it waits for the
script, which checkpoints and exits with ``EXIT_PREEMPTED``.

So that the wakeup fd sees them, a stop signal with the default disposition gets a Python handler: SIGTERM's
re-raises it with the default disposition (until the scheduler's handler comes, the process ends on SIGTERM,
as before); SIGUSR1's does nothing, so the step's Snakemake waits for the script it stopped instead of dying.

Under linuxproc the script gets a stop signal twice (from Slurm and from here). Harmless: its handler keeps
the first (`preempt.StopRequest`), and a trainer worker's client forwards a stop the worker already has.

Only the standard library and psutil (a Snakemake dependency): a Snakefile parse must not import torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping

import psutil  # Snakemake imports it anyway

from segsweep.training.spawner import TRAINING_RULES, in_slurm_batch_step

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # as segsweep.training.preempt catches (not imported: torch-free)

_installed = False  # once per process: a Snakefile parsed twice installs one forwarder


def in_slurm_job_step(environ: Mapping[str, str] = os.environ) -> bool:
    """This process runs in one of a Slurm job's ``srun`` steps: ``SLURM_JOB_ID`` and ``SLURM_STEP_ID`` are set,
    the step id not the batch step's (`segsweep.training.spawner.in_slurm_batch_step`)."""
    return bool(environ.get("SLURM_JOB_ID")) and not in_slurm_batch_step(environ)


def forward_in_job_step(
    target_rules: Iterable[str], environ: Mapping[str, str] = os.environ, notify: Callable[[str], None] | None = None
) -> bool:
    """`install` the forwarder (module docstring) when this is a Slurm job step whose target jobs include
    training jobs; True when it is installed. Nothing elsewhere (a local run, a batch step, ``snakemake -n``,
    which has no ``--target-jobs``)."""
    if not (in_slurm_job_step(environ) and TRAINING_RULES & set(target_rules)):
        return False
    return install(notify=notify)


def install(signals: tuple[int, ...] = STOP_SIGNALS, notify: Callable[[str], None] | None = None) -> bool:
    """Forward ``signals`` that reach this process to all its descendants, from now on, whatever Python handler
    is installed for them later (module docstring). Once per process, from the main thread only (False
    elsewhere). ``notify`` gets one line per forwarded signal (default: stderr)."""
    global _installed
    if _installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # set_wakeup_fd requires it: a full pipe drops a byte, never blocks a handler
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for sig in signals:
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _reraise_default if sig == signal.SIGTERM else _ignore)
    say = notify or (lambda msg: print(f"segsweep: {msg}", file=sys.stderr, flush=True))
    threading.Thread(
        target=_forward_loop, args=(read_fd, frozenset(signals), say), name="segsweep-step-signals", daemon=True
    ).start()
    _installed = True
    return True


def _reraise_default(signum: int, frame) -> None:
    # the default effect (end the process) after the wakeup fd has been written
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _ignore(signum: int, frame) -> None:
    pass


def _forward_loop(read_fd: int, signals: frozenset[int], notify: Callable[[str], None]) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        if not data:
            return
        for signum in dict.fromkeys(data):  # several of one signal at once: forwarded once
            if signum in signals:
                sent = forward(signum)
                notify(f"passed {signal.Signals(signum).name} on to {sent} process(es) of this Slurm job step")


def forward(signum: int) -> int:
    """Send ``signum`` to every descendant of this process; returns how many got it."""
    sent = 0
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(signum)
            sent += 1
    return sent
