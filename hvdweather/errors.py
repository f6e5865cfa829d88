"""The input errors that every command reports as one line and exit code 2 (see cli.run_command).

Kept free of heavy imports so that a bad flag is answered before TensorFlow loads.
"""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad flag or config value, reported before any long work starts."""


class DataError(ValueError):
    """Bad data input, reported naming the path and what to do."""


class OutputError(ValueError):
    """An output directory that cannot be used."""


INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, OutputError)
