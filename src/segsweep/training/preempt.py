"""Stop a training job cleanly on SIGTERM or SIGUSR1, so that its retry resumes where it stopped.

Why: on a cluster a long training job is ended from outside, and dying at once would lose everything since
the last epoch's ``last.pt``:

* Slurm's time limit: SIGTERM to every process of the job, SIGKILL ``KillWait`` seconds later (30 s default);
* a warning ahead of it, ``sbatch --signal=TERM@120`` (profiles/slurm asks it for the train rule;
  docs/slurm.md says why TERM to the job steps and not USR1 or ``B:``, the batch shell only);
* preemption by a more urgent job (SIGTERM, then SIGKILL after the partition's ``GraceTime``), or an admin's
  or user's ``scancel [--signal=TERM|USR1] <jobid>``;
* SIGUSR1: the usual "checkpoint and stop" signal of hand-written sbatch scripts and ``kill -USR1 <pid>``.

While `catch_stop_signals` is active the handler only notes the signal (`StopRequest`). The training loop
(`segsweep.training.loop.train_cell`) asks `requested` after every optimizer step (a Python attribute read,
no device sync); when set it writes a mid-epoch ``last.pt`` and raises `Preempted`. The job
(`segsweep.training.job.run_train_job`) never records that as a failed cell, and `segsweep.runner.run`
exits with `EXIT_PREEMPTED`, so Snakemake (or Slurm's requeue) runs the job again and the run resumes inside
the epoch, to the same numbers as an uninterrupted run.

Handlers can only be installed in the main thread; elsewhere nothing is installed and both signals keep
whatever disposition they had (a run then stops the old way, at the last epoch's checkpoint).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from segsweep.errors import EXIT_PREEMPTED, Preempted, _signal_name  # noqa: F401 - re-exported for training code

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_F = TypeVar("_F", bound=Callable)


signal_name = _signal_name  # 'SIGTERM', for logs


@dataclass
class StopRequest:
    """Set by the handler: the first stop signal received (later ones change nothing)."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


_active: list[StopRequest] = []  # innermost last; signal handlers are process-wide, so is this


@contextlib.contextmanager
def catch_stop_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
    """Within the block, ``signals`` only set the yielded `StopRequest`; the previous handlers come back
    afterwards (also on an exception). Outside the main thread nothing is installed."""
    request = StopRequest(_pending.pop() if _pending else None)

    def handler(signum: int, frame) -> None:
        if request.signum is None:
            request.signum = signum

    with handling(handler, signals) as installed:
        if not installed:
            logging.getLogger("segsweep.train").debug("not the main thread: stop signals are not caught")
        _active.append(request)
        try:
            yield request
        finally:
            _active.remove(request)


@contextlib.contextmanager
def handling(handler: Callable[[int, object], None], signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[bool]:
    """Within the block ``signals`` go to ``handler``, and the previous handlers come back afterwards (also on
    an exception). Only the main thread can install handlers: elsewhere nothing changes (yields False)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield True
    finally:
        for sig, old in previous.items():
            # None: a handler not installed from Python; the default is the closest Python can restore
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


_pending: list[int] = []  # a stop requested (request_stop) while no block was active: the next block's


def request_stop(signum: int) -> None:
    """Ask the innermost active `catch_stop_signals` block to stop, as if ``signum`` had arrived, from any
    thread (a trainer worker forwards its client's signals: `segsweep.training.worker`). With no block
    active, the next block to start begins stopped (a request just before training starts is not lost)."""
    if _active:
        if _active[-1].signum is None:
            _active[-1].signum = signum
    else:
        _pending[:] = [signum]


def clear_pending_stop() -> None:
    """Forget a stop requested while no block was active (a trainer worker, before its next cell)."""
    _pending.clear()


def requested() -> int | None:
    """The stop signal the innermost active `catch_stop_signals` received, or None (also outside one)."""
    return _active[-1].signum if _active else None


def stop_signals_caught(func: _F) -> _F:
    """Decorator: run ``func`` inside `catch_stop_signals` (``func`` polls `requested`)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with catch_stop_signals():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


DEADLINE_SIGNAL = signal.SIGALRM  # the stop a deadline asks for (`stop_by`): told apart from Slurm's SIGTERM in logs


@contextlib.contextmanager
def stop_by(deadline: float | None) -> Iterator[None]:
    """Within the block, a stop is requested (`request_stop`, as `DEADLINE_SIGNAL`) at ``deadline`` (epoch
    seconds; None: never): a Slurm job stops its cell before its time limit (`segsweep.training.slurm_job`)."""
    if deadline is None:
        yield
        return

    def fire() -> None:
        logging.getLogger("segsweep.train").warning(
            "the Slurm job's time limit is near: stopping at the next optimizer step (a mid-epoch last.pt)"
        )
        request_stop(DEADLINE_SIGNAL)

    timer = threading.Timer(max(0.0, deadline - time.time()), fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
