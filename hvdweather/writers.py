"""Everything that lands in the run directory. Writers know whether they are the primary process;
on other ranks they do nothing, so callers never test the rank.

Run directory: see `hvdweather.runfiles.RUN_FILES`.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from hvdweather.runfiles import read_jsonl


def _primary_only(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a writer method on the primary process; on other ranks it is a no-op returning None."""

    @functools.wraps(method)
    def wrapper(self: RunWriter, *args: Any, **kwargs: Any) -> Any:
        return method(self, *args, **kwargs) if self.is_primary else None

    return wrapper


class RunWriter:
    """Writes (and reads back) files under `run_dir` on the primary process only."""

    def __init__(self, run_dir: str | Path, is_primary: bool):
        self.run_dir = Path(run_dir)
        self.is_primary = is_primary

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @_primary_only
    def log(self, message: str) -> None:
        """One line on the primary's stdout (one voice for the whole job)."""
        print(message, flush=True)

    def keras_verbose(self, level: int) -> int:
        """Keras's `verbose` for this process: its bar only on the primary, at level 1, in a terminal.
        Everywhere else (other ranks, log files, level 0 or 2) callbacks.ProgressLog writes whole lines."""
        return 1 if self.is_primary and level == 1 and sys.stdout.isatty() else 0

    @_primary_only
    def write_json(self, name: str, obj: Any) -> None:
        self._atomic(name, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n"))

    @_primary_only
    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Replace a JSON-lines file as a whole (a resume cuts metrics.jsonl back to its checkpoint)."""
        self._atomic(name, lambda tmp: tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in rows)))

    @_primary_only
    def save_state(self, name: str, make_state: Callable[[], Any]) -> None:
        """Pickle `make_state()` (numpy arrays and numbers) atomically: the resume state of a run.
        Built on the primary only, so other ranks do not copy their weights for nothing."""
        state = make_state()
        self._atomic(name, lambda tmp: tmp.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)))

    def read_state(self, name: str) -> Any:
        """The pickled state, or None when absent; other ranks get None (see broadcast_object)."""
        path = self.path(name)
        return pickle.loads(path.read_bytes()) if self.is_primary and path.is_file() else None

    @_primary_only
    def append_jsonl(self, name: str, row: dict[str, Any]) -> None:
        with self._target(name).open("a") as handle:
            handle.write(json.dumps(row, default=float) + "\n")

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """Rows of a JSON-lines file of the run; other ranks get none (the file may be on rank 0's disk)."""
        return read_jsonl(self.path(name)) if self.is_primary else []

    @_primary_only
    def write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with self._target(name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    @_primary_only
    def write_text(self, name: str, text: str) -> None:
        self._target(name).write_text(text)

    @_primary_only
    def write_with(self, name: str, write: Callable[[Path], None]) -> None:
        """Let `write(path)` produce the file (for formats other modules own, e.g. split.csv)."""
        write(self._target(name))

    @_primary_only
    def save_figure(self, name: str, make_figure: Callable[[], Any]) -> None:
        """Build a matplotlib figure with `make_figure()` and save it (built on the primary only)."""
        import matplotlib.pyplot as plt

        figure = make_figure()
        figure.savefig(self._target(name), dpi=110, bbox_inches="tight")
        plt.close(figure)

    @_primary_only
    def save_model(self, name: str, model: tf.keras.Model) -> None:
        self._atomic(name, model.save)

    def _atomic(self, name: str, write: Callable[[Path], Any]) -> None:
        """Write to a temporary file beside the target, fsync it, then rename it over the target: a kill
        at any moment leaves the old file or the new one, never half of one. The temporary name keeps
        the suffix, because Keras picks the format from it."""
        target = self._target(name)
        tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def _target(self, name: str) -> Path:
        target = self.run_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
