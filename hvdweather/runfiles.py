"""Reading a run directory back (metrics.jsonl, config.json), TensorFlow-free: the benchmarks' parent
processes, `hvdweather-bench collect` and resume checks read runs without importing TensorFlow."""
from __future__ import annotations

import json
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
