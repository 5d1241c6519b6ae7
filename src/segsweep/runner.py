"""The one way workflow scripts run library code: logging to the rule's log file, clear user errors.

A `SegsweepError` (bad config, unreadable data root, strict QC failure) becomes one line on stderr and in the
log, and a non-zero exit, instead of a traceback. A preempted training job (`Preempted`: a stop signal, a
mid-epoch last.pt written) exits with `EXIT_PREEMPTED` (75), also without a traceback, so Snakemake retries
it. Anything else is a bug and keeps its traceback.

A job with retries (its rule has an ``attempt`` resource: train, train_rung) keeps every attempt's log lines:
Snakemake deletes a job's log file before each attempt (``Job.remove_existing_output``), so the lines also go
to ``<log folder>/.history/<log name>``, which Snakemake does not know about; each attempt first copies it
back into the fresh log and then marks itself with a header line ``==== rule R: attempt k of n ====``.
The history is never truncated: a later ``snakemake`` invocation (attempt 1 again, e.g. after a preemption on
the last attempt) appends to it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segsweep.errors import EXIT_PREEMPTED, Preempted, SegsweepError


def history_path(log_path: str | os.PathLike) -> Path:
    """Where a retried job's log lines are kept across attempts (module docstring)."""
    log_path = Path(log_path)
    return log_path.parent / ".history" / log_path.name


def setup_logging(
    log_path: str | os.PathLike | None, level: int = logging.INFO, keep_history: bool = False
) -> logging.Logger:
    """Log to stderr and ``log_path``; with ``keep_history``, the log starts with the earlier attempts' lines
    and every line also goes to `history_path` (module docstring)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        if keep_history:
            history = history_path(log_path)
            history.parent.mkdir(parents=True, exist_ok=True)
            if history.exists():
                shutil.copyfile(history, log_path)
            handlers.append(logging.FileHandler(history, mode="a"))
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    # weasyprint and fontTools log every layout step at INFO; only their warnings belong in a job log.
    for noisy in ("weasyprint", "fontTools", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("segsweep")


def run(smk: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` for a Snakemake `script:` job (``smk`` is the `snakemake` object)."""
    attempt = getattr(getattr(smk, "resources", None), "attempt", None)
    log = setup_logging(smk.log[0] if len(smk.log) else None, keep_history=attempt is not None)
    if attempt is not None:
        of = getattr(smk.resources, "max_attempts", "?")
        log.info("==== rule %s: attempt %s of %s ====", smk.rule, attempt, of)
    log.info("rule %s: starting", smk.rule)
    try:
        result = func(*args, **kwargs)
    except SegsweepError as exc:
        log.error("%s", exc)
        print(f"segsweep: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Preempted as exc:  # already logged by the job; the exit code tells Snakemake/sacct what happened
        print(f"segsweep: {exc}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    log.info("rule %s: done", smk.rule)
    return result
