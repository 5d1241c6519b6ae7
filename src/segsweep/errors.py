"""Errors a user can cause. Each message names the file or config key at fault."""

import signal
from pathlib import Path


class SegsweepError(Exception):
    """Base class: a problem with the user's input, reported as one clear line (no traceback)."""


class ConfigError(SegsweepError):
    """A configuration key is missing, misspelled or holds an invalid value."""


class DataError(SegsweepError):
    """The data root is missing, empty, has another layout than configured, or failed strict QC."""


class QCError(DataError):
    """One input file that cannot be used: ingestion records it as a QC row (``reason``, a stable code from
    the subclass's ``reasons`` table) and goes on with the rest."""

    reasons: dict = {}

    def __init__(self, reason: str, message: str, path=None):
        assert reason in self.reasons, reason
        self.reason = reason
        self.path = None if path is None else Path(path)
        self.detail = message
        super().__init__(f"{path}: {message}" if path is not None else message)


# A stop request, not a user error: here (shared) because the runner, below every stage, turns it into an exit
# code; the signal handling that raises it is segsweep.training.preempt.
# sysexits EX_TEMPFAIL: "a temporary failure; the user is invited to retry". Any non-zero code makes
# Snakemake retry; this one tells a preempted job's exit apart from a crash (1) in sacct and the logs.
EXIT_PREEMPTED = 75


class Preempted(BaseException):
    """A stop signal ended training at a safe point; ``last.pt`` holds the state to resume from.

    A BaseException, like KeyboardInterrupt: it is a request to stop, not an error, so no ``except
    Exception`` on its way (the job's crash path, a caller's catch-all) may turn it into a ``failed`` cell.
    """

    def __init__(self, signum: int, epoch: int, step: int, steps: int, checkpoint: Path | None):
        self.signum, self.epoch, self.step, self.steps = int(signum), int(epoch), int(step), int(steps)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        saved = f"{self.checkpoint.name} written" if self.checkpoint is not None else "nothing trained yet"
        super().__init__(
            f"{_signal_name(self.signum)}: preempted at epoch {self.epoch} step {self.step}/{self.steps}; "
            f"{saved}; exiting for the retry"
        )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
