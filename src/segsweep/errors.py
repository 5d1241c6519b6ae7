"""Errors a user can cause. Each message names the file or config key at fault."""

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
