"""The input errors that every command reports as one line and exit code 2 (see cli.run_command),
and the output-directory check every command runs first.

Kept free of heavy imports so that a bad flag is answered before TensorFlow loads.
"""
from __future__ import annotations

import os
from pathlib import Path


class ConfigError(ValueError):
    """A bad flag or config value, reported before any long work starts."""


class DataError(ValueError):
    """Bad data input, reported naming the path and what to do."""


class OutputError(ValueError):
    """An output directory that cannot be used."""


INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, OutputError)


def check_output_dir(out: str | Path, flag: str = "--out", subdirs: tuple[str, ...] = ()) -> Path:
    """Create `out` (and its `subdirs`) and prove it is writable (each process its own probe), before any
    long work; returns `out` as a Path. The one such check: training, the EDA, benchmarks and studies."""
    out = Path(out)
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for sub in subdirs:
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{flag} {out}: not writable ({exc.strerror or exc}); "
                          "choose a directory you can write to") from None
    return out
