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

from hvdweather import host
from hvdweather.runfiles import read_csv_rows, read_json, read_jsonl


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
        self._summaries: dict[str, Any] = {}  # TensorBoard writers by folder, made on first use (primary only)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    @_primary_only
    def log(self, message: str) -> None:
        """One line on the primary's stdout (one voice for the whole job)."""
        host.say(message)

    def keras_verbose(self, level: int) -> int:
        """Keras's `verbose` for this process: its bar only on the primary, at level 1, in a terminal, not
        under a launcher. Everywhere else (other ranks, launchers, log files, level 0 or 2)
        callbacks.ProgressLog writes whole lines."""
        from hvdweather.host import under_launcher

        return 1 if self.is_primary and level == 1 and sys.stdout.isatty() and not under_launcher() else 0

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

    def read_json(self, name: str) -> Any:
        """A JSON file of the run, or None when missing; other ranks get None (broadcast it)."""
        return read_json(self.path(name)) if self.is_primary else None

    def read_csv(self, name: str) -> list[dict[str, str]]:
        """Rows of a CSV file of the run; other ranks get none (broadcast them)."""
        return read_csv_rows(self.path(name)) if self.is_primary else []

    def exists(self, name: str) -> bool:
        """Whether the run holds `name`; False on other ranks (broadcast the answer)."""
        return self.is_primary and self.path(name).exists()

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
    def write_scalars(self, folder: str, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at `step` (the epoch) into an event file under `folder` (tensorboard --logdir)."""
        summary = self._summary(folder)
        with summary.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, float(value))
        summary.flush()  # a killed run keeps every epoch it logged

    @_primary_only
    def write_figure_summary(self, folder: str, tag: str, step: int, make_figure: Callable[[], Any]) -> None:
        """A matplotlib figure (built on the primary only) as a TensorBoard image at `step`."""
        import io

        import matplotlib.pyplot as plt

        figure, buffer = make_figure(), io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(figure)
        summary = self._summary(folder)
        with summary.as_default(step=step):
            tf.summary.image(tag, tf.image.decode_png(buffer.getvalue(), channels=4)[None])
        summary.flush()

    @_primary_only
    def clear_summaries(self, folder: str) -> None:
        """Remove `folder`'s event files (and close its writer): a resumed run logs again from metrics.jsonl,
        because TensorBoard would show both copies of an epoch logged before a kill and again after."""
        import shutil

        summary = self._summaries.pop(folder, None)
        if summary is not None:
            summary.close()
        shutil.rmtree(self.run_dir / folder, ignore_errors=True)

    def _summary(self, folder: str) -> Any:
        if folder not in self._summaries:
            self._summaries[folder] = tf.summary.create_file_writer(str(self._target(folder)))
        return self._summaries[folder]

    @_primary_only
    def save_model(self, name: str, model: tf.keras.Model) -> None:
        self._atomic(name, model.save)

    @_primary_only
    def copy_file(self, source: str, name: str) -> None:
        """`name` as a copy of the run's file `source`, atomically: a hard link where the file system has
        them (no bytes copied; the writer replaces files by renaming, never in place, so the link keeps
        this version of `source` when `source` is written again), else a copy, fsynced."""
        target = self._target(name)
        tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
        tmp.unlink(missing_ok=True)  # left by a kill between link and rename
        try:
            os.link(self.path(source), tmp)
        except OSError:  # no hard links here (some network and FUSE file systems)
            import shutil

            shutil.copyfile(self.path(source), tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)

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
