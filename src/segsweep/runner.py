"""The one way workflow scripts run library code: logging to the rule's log file, clear user errors.

A `SegsweepError` (bad config, unreadable data root, strict QC failure) becomes one line on stderr and in the
log, and a non-zero exit, instead of a traceback. A preempted training job (`Preempted`: a stop signal, a
mid-epoch last.pt written) exits with `EXIT_PREEMPTED` (75), also without a traceback, so Snakemake retries
it. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segsweep.errors import EXIT_PREEMPTED, Preempted, SegsweepError


def setup_logging(log_path: str | os.PathLike | None, level: int = logging.INFO) -> logging.Logger:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
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
    log = setup_logging(smk.log[0] if len(smk.log) else None)
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
