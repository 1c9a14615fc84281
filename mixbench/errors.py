"""Errors that carry a message meant for the person running the benchmark.

Entry points catch ``MixbenchError`` and print its message without a traceback, so every
message must say what is wrong and what to do about it.
"""


class MixbenchError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(MixbenchError):
    """The configuration is invalid (schema, unknown strategy, bad hyperparameter)."""


class DataError(MixbenchError):
    """Input data is missing or corrupt (corpus source, token file, checksum)."""


class TrainingError(MixbenchError):
    """Training cannot go on (weights off the simplex, NaN loss)."""
