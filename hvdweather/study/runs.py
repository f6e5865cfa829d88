"""Reading finished runs for a comparison, TensorFlow-free: one RunRecord per run directory, and the
check that runs are comparable at all (same classes, same test images).

    hvdweather-compare runs/a runs/b --out compare/
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.config import RESUMABLE, effective_top_k
from hvdweather.errors import ConfigError
from hvdweather.runfiles import (
    first_epoch_reaching,
    median_after_first,
    read_csv_rows,
    read_json,
    read_jsonl,
    split_root,
)

# Fields that never change what a run computes are not "settings" of a comparison; --epochs does.
NOT_SETTINGS = (RESUMABLE - {"epochs"}) | {"data"}


@dataclass(frozen=True)
class RunRecord:
    """What a comparison needs from one run directory."""

    name: str
    run_dir: Path
    config: dict[str, Any]  # config.json's "config": the resolved TrainConfig fields
    world_size: int
    class_names: tuple[str, ...]
    metrics: list[dict[str, Any]]  # metrics.jsonl rows
    tests: dict[str, dict[str, Any]]  # report/test_metrics.json: "best" and "last" sections ({} if none)
    test_set_digest: str  # SHA-256 of the test split's (class, path relative to --data) pairs


def read_run(run_dir: str | Path) -> RunRecord:
    """A run directory written by hvdweather-train; a ConfigError says what is missing."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "config.json") if run_dir.is_dir() else None
    if not record or "config" not in record:
        raise ConfigError(f"RUN_DIR {run_dir}: no config.json; give run directories written by hvdweather-train")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    if not metrics:
        raise ConfigError(f"RUN_DIR {run_dir}: metrics.jsonl has no epoch; the run never finished an epoch")
    config = record["config"]
    return RunRecord(run_dir.name, run_dir, config, int(record.get("world", {}).get("num_workers", 1)),
                     tuple(record.get("class_names", ())), metrics, _test_sections(run_dir),
                     _test_set_digest(run_dir, split_root(record)))


def _test_sections(run_dir: Path) -> dict[str, dict[str, Any]]:
    """report/test_metrics.json; a run from before it existed has only the best weights' report."""
    sections = read_json(run_dir / "report" / "test_metrics.json")
    if sections:
        return sections
    rows = {row["class"]: row for row in read_csv_rows(run_dir / "report" / "classification_report.csv")}
    if "accuracy" not in rows:
        return {}
    return {"best": {"test_accuracy": float(rows["accuracy"]["f1"]), "macro_f1": float(rows["macro avg"]["f1"]),
                     "top_k_accuracy": {}}}


def _test_set_digest(run_dir: Path, data: str) -> str:
    """The test images as (class, path under --data): equal for two runs tested on the same images,
    even when the data set was copied to another folder."""
    pairs = sorted((row["class_name"], os.path.relpath(row["path"], data) if data else row["path"])
                   for row in read_csv_rows(run_dir / "split.csv") if row["subset"] == "test")
    return hashlib.sha256(repr(pairs).encode()).hexdigest()


def check_comparable(records: list[RunRecord], other_tests_ok: bool = False) -> None:
    """Refuse, in one line, runs whose numbers cannot share a table: other classes or other test images
    (`other_tests_ok`: a seed study, where each seed's split has its own test images by design)."""
    first = records[0]
    for other in records[1:]:
        if other.class_names != first.class_names:
            raise ConfigError(f"{first.run_dir} and {other.run_dir} have different classes "
                              f"({len(first.class_names)}: {', '.join(first.class_names[:4])}... vs "
                              f"{len(other.class_names)}: {', '.join(other.class_names[:4])}...); "
                              "compare runs of one data set")
        if other.test_set_digest != first.test_set_digest and not other_tests_ok:
            raise ConfigError(f"{first.run_dir} and {other.run_dir} were tested on different images (split.csv: "
                              "another --data, --seed or --test-split); their test accuracies are not comparable, "
                              "except as a mean over --seed values: give runs of several --seed values")


def varied_settings(configs: list[dict[str, Any]]) -> list[str]:
    """The config fields whose values differ between the runs (in TrainConfig's order). A config may be
    partial (a failed sweep cell knows only its own settings): a field counts where it is present."""
    names = list(dict.fromkeys(name for c in configs for name in c if name not in NOT_SETTINGS))
    return [name for name in names if len({repr(c[name]) for c in configs if name in c}) > 1]


def _checkpoint_columns(prefix: str, section: dict[str, Any] | None, row: dict[str, Any] | None,
                        k: int) -> dict[str, Any]:
    section = section or {}
    return {f"{prefix}_epoch": section.get("epoch", row and row["epoch"]),
            f"{prefix}_val_loss": row and row.get("val_loss"),
            f"{prefix}_val_accuracy": row and row.get("val_accuracy"),
            f"{prefix}_test_accuracy": section.get("test_accuracy"), f"{prefix}_macro_f1": section.get("macro_f1"),
            f"{prefix}_top{k}_accuracy": section.get("top_k_accuracy", {}).get(str(k))}


def _setting(record: RunRecord, name: str) -> Any:
    """A setting as it took effect: --top-k 0 means 3 (>= 5 classes) or none, so the table says that."""
    value = record.config.get(name)
    if name == "top_k" and value is not None:
        return effective_top_k(int(value), len(record.class_names)) or "off"
    return value


def run_row(record: RunRecord, settings: list[str], k: int, target_accuracy: float) -> dict[str, Any]:
    """One table row: settings, best and last checkpoint, epochs to the target, speed and time."""
    rows = record.metrics
    by_epoch = {r["epoch"]: r for r in rows}
    scored = [r for r in rows if r.get("val_loss") is not None] or rows
    best_row = by_epoch.get(record.tests.get("best", {}).get("epoch")) or min(
        scored, key=lambda r: r.get("val_loss", r["loss"]))
    return {"run": record.name, "status": "ok", **{s: _setting(record, s) for s in settings},
            "world_size": record.world_size, "epochs_trained": len(rows),
            **_checkpoint_columns("best", record.tests.get("best"), best_row, k),
            **_checkpoint_columns("last", record.tests.get("last"), rows[-1] if "last" in record.tests else None, k),
            "epochs_to_target": first_epoch_reaching(rows, target_accuracy),
            "images_per_s": median_after_first(rows),
            "wall_s": sum(r["epoch_time_s"] for r in rows), "run_dir": str(record.run_dir), "error": None}
