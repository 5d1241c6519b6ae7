"""Errors a user can cause. Each message names the file or config key at fault."""


class SegsweepError(Exception):
    """Base class: a problem with the user's input, reported as one clear line (no traceback)."""


class ConfigError(SegsweepError):
    """A configuration key is missing, misspelled or holds an invalid value."""


class DataError(SegsweepError):
    """The data root is missing, empty, has another layout than configured, or failed strict QC."""
