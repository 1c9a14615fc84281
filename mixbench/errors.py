"""Errors that carry a message meant for the person running the benchmark.

Entry points catch ``MixbenchError`` and print its message without a traceback, so every
message must say what is wrong and what to do about it.
"""

from __future__ import annotations


class MixbenchError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(MixbenchError):
    """The configuration is invalid (schema, unknown strategy, bad hyperparameter)."""


class DataError(MixbenchError):
    """Input data is missing or corrupt (corpus source, token file, checksum)."""


class StorageError(MixbenchError, OSError):
    """A write found no room: the disk is full, the quota used up or the file-size limit reached.
    Also an OSError (its ``errno`` and ``filename`` set), so code that handles a failed write
    still sees one."""

    def __init__(self, message: str, number: int, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = number, filename

    def __str__(self) -> str:
        return self.args[0]


class TrainingError(MixbenchError):
    """Training cannot go on (weights off the simplex, NaN loss)."""
