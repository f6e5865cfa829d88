"""Reading a run directory back (metrics.jsonl, config.json), TensorFlow-free: the benchmarks' parent
processes, `hvdweather-bench collect` and resume checks read runs without importing TensorFlow."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file has none."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or None when the file is missing."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def timed_epochs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs a speed figure is taken over: all but epoch 1 (tracing, cache filling), unless it is
    the only one."""
    return rows[1:] if len(rows) > 1 else rows


def median_after_first(rows: list[dict[str, Any]], key: str = "images_per_s") -> float:
    """The median of `key` over timed_epochs(rows): how every table states a run's speed."""
    return statistics.median(float(r[key]) for r in timed_epochs(rows))


def first_epoch_reaching(rows: list[dict[str, Any]], target: float) -> int | None:
    """The first epoch whose val_accuracy (else accuracy) is >= target; None if none or target is 0."""
    if target <= 0:
        return None
    for row in rows:
        value = row.get("val_accuracy", row.get("accuracy"))
        if value is not None and value >= target:
            return int(row["epoch"])
    return None


# What a training run writes into its directory (a new run removes exactly these with --overwrite).
RUN_FILES = ("config.json", "split.csv", "skipped.csv", "duplicates.csv", "shards.csv", "ranks.json", "metrics.jsonl",
             "best.keras", "last.keras", "resume_state.pkl", "report", "tensorboard")


def run_files_in(run_dir: str | Path) -> list[str]:
    """The names of RUN_FILES present in `run_dir` (empty when it holds no run)."""
    run_dir = Path(run_dir)
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def clear_run(run_dir: str | Path) -> None:
    """Remove a previous run's files from `run_dir`, and nothing else the user put there."""
    import shutil

    run_dir = Path(run_dir)
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)  # another rank of this job may be removing it too
        else:
            target.unlink(missing_ok=True)


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header, as dicts; a missing file has none."""
    import csv

    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# Where a run's data set lies. config.json records it absolute (`config.data`, updated by a resume from
# another place), the folder split.csv's paths lie under (`split_root`, fixed when the split is written),
# and the data set's place relative to the run folder (`data_from_run`), so that a run folder copied
# together with its data set finds it. Runs from before these fields recorded `config.data` as typed,
# relative to the folder training started in, and split.csv's paths likewise.
def split_root(record: dict[str, Any]) -> str:
    """The folder split.csv's paths lie under (as recorded; relative in runs from before it was absolute)."""
    return record.get("split_root") or record.get("config", {}).get("data", "")


def data_fields(data: str, run_dir: str | Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """config.json's location fields for a run training on `data` (a resume keeps its split's root)."""
    root = os.path.abspath(data)
    return {"split_root": split_root(previous) if previous else root,
            "data_from_run": os.path.relpath(root, os.path.abspath(run_dir))}


def locate_data(record: dict[str, Any], run_dir: str | Path) -> str:
    """Where the run's data set lies now: where it was recorded, else at the same place relative to the run
    folder (both copied together); '' when neither exists."""
    recorded = record.get("config", {}).get("data", "")
    if recorded and os.path.isdir(recorded):
        return recorded
    beside = record.get("data_from_run")
    if beside:  # lexical, as data_fields wrote it: runs/r/../../data is data even if runs/r is missing
        candidate = os.path.normpath(Path(run_dir).absolute() / beside)
        if os.path.isdir(candidate):
            return candidate
    return ""


def data_not_found(record: dict[str, Any], flag: str) -> str:
    """Why `locate_data` found nothing and what to do, naming the flag that says where the data lies now."""
    recorded = record.get("config", {}).get("data", "")
    where = "in config.json" if os.path.isabs(recorded) else "relative to the folder training started in"
    return (f"the run's data set {recorded} ({where}) is not found from here; pass {flag} DIR: the folder "
            "of class folders it trained on, where it lies now")


def rebase(paths: tuple[str, ...] | list[str], old_root: str, new_root: str) -> tuple[str, ...]:
    """`paths` lying under `old_root` moved to the same place under `new_root`; other paths (a prepared
    set's original files, which are names of its records) unchanged."""
    if not old_root or not new_root:
        return tuple(paths)
    moved = []
    for path in paths:
        relative = os.path.relpath(path, old_root)
        outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
        moved.append(path if outside else os.path.join(os.path.abspath(new_root), relative))
    return tuple(moved)
