"""User-facing errors.

Every problem a user can cause (a bad config value, a missing file, an unknown name) raises a subclass of
:class:`VispromptError` whose message is one line naming the file, field or value and what was expected. The
CLI prints that line and exits non-zero; programming errors keep their tracebacks.
"""

from __future__ import annotations


class VispromptError(Exception):
    """Base class of the errors the CLI reports as one line (``error: <message>``)."""


class ConfigError(VispromptError):
    """A config key or value is unknown or invalid."""


class DataError(VispromptError):
    """A dataset root, layout, split file, image or label is missing or malformed."""


class WeightsError(VispromptError):
    """Model weights are missing, corrupt, or do not match the requested architecture."""


class UnknownNameError(VispromptError, KeyError):
    """A name was looked up in a registry that does not hold it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
