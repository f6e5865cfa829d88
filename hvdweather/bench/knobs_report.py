"""Knobs benchmark, reporting part: medians over repeats, differences and ratios against each variant's
reference, and knobs.md, from the lines of knobs.jsonl alone (written by hvdweather.bench.knobs)."""
from __future__ import annotations

import statistics
from typing import Any

from hvdweather.bench.machine import machine_line
from hvdweather.tables import markdown_table

Row = dict[str, Any]
# Per-run measurements; a variant's row holds the median of each over its repeats that finished.
METRICS = ("epochs_run", "final_val_accuracy", "final_val_loss", "test_accuracy", "images_per_s", "wall_s",
           "global_batch_size", "val_images", "test_images")
DIFFERENCES = ("epochs_run", "final_val_accuracy", "final_val_loss", "test_accuracy")  # variant - reference
RATIOS = ("images_per_s", "wall_s")  # variant / reference


def summarize(lines: list[Row]) -> list[Row]:
    """One row per variant, in the order they first ran: settings, how many repeats finished, and the
    median of each metric over those; a variant none of whose repeats finished keeps its last error."""
    runs = [line for line in lines if line["kind"] == "run"]
    rows = []
    for variant in dict.fromkeys(line["variant"] for line in runs):
        mine = [line for line in runs if line["variant"] == variant]
        ok = [line for line in mine if line["status"] == "ok"]
        row = {key: mine[0][key] for key in ("variant", "reference", "flags", "processes")}
        row.update(repeats=len(mine), ok_repeats=len(ok), status="ok" if ok else mine[-1]["status"],
                   error=None if ok else mine[-1]["error"])
        for key in METRICS:
            values = [line[key] for line in ok if line.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        rows.append(row)
    return add_relative(rows)


def add_relative(rows: list[Row]) -> list[Row]:
    """Each row against its reference row of the same benchmark: `<metric>_diff` = variant - reference for
    accuracies, losses and epochs run (a ratio of accuracies hides how many images moved), `<metric>_ratio`
    = variant / reference for images/s and wall time. None where either side is missing."""
    by_name = {row["variant"]: row for row in rows}
    derived = []
    for row in rows:
        ref = by_name.get(row["reference"], {})
        extra = {}
        for key in DIFFERENCES:
            mine, theirs = row.get(key), ref.get(key)
            extra[f"{key}_diff"] = None if mine is None or theirs is None else mine - theirs
        for key in RATIOS:
            mine, theirs = row.get(key), ref.get(key)
            extra[f"{key}_ratio"] = mine / theirs if mine is not None and theirs else None
        derived.append({**row, **extra})
    return derived


def _cell(row: Row, key: str, digits: int) -> str:
    """'0.697 (+0.045)' for differences, '243.1 (0.95x)' for ratios, 'failed' for a failed variant."""
    value = row.get(key)
    if value is None:
        return row["status"] if row["status"] != "ok" else "-"
    text = f"{value:.{digits}f}"
    if row.get(f"{key}_diff") is not None:
        return f"{text} ({row[f'{key}_diff']:+.{digits}f})"
    if row.get(f"{key}_ratio") is not None:
        return f"{text} ({row[f'{key}_ratio']:.2f}x)"
    return text


def format_table(rows: list[Row]) -> str:
    """Markdown: one row per variant; each figure with its difference or ratio against `vs` in brackets."""
    header = ["variant", "flags", "processes", "vs", "epochs run", "final val accuracy", "final val loss",
              "test accuracy", "images/s", "wall (s)"]
    cells = [[r["variant"], f"`{r['flags']}`" if r["flags"] else "(defaults)", str(r["processes"]), str(r["reference"]),
              _cell(r, "epochs_run", 0), _cell(r, "final_val_accuracy", 3), _cell(r, "final_val_loss", 3),
              _cell(r, "test_accuracy", 3), _cell(r, "images_per_s", 1), _cell(r, "wall_s", 0)] for r in rows]
    return markdown_table(header, cells, "llrlrrrrrr")


def _sizes(rows: list[Row]) -> str:
    """How many images one validation / test image is worth, to read the accuracy differences by."""
    ok = next((r for r in rows if r.get("val_images")), None)
    if ok is None:
        return ""
    parts = [f"{ok['val_images']:.0f} validation images (one image = {1 / ok['val_images']:.3f} accuracy)"]
    if ok.get("test_images"):
        parts.append(f"{ok['test_images']:.0f} test images ({1 / ok['test_images']:.3f})")
    return "; " + ", ".join(parts)


def markdown_report(lines: list[Row], machine: dict[str, Any]) -> str:
    """knobs.md: the machine, the command, the load before and after, how to read it, the table, and the
    error of every variant that failed."""
    run = next(line for line in lines if line["kind"] == "benchmark")
    rows = summarize(lines)
    failed = [f"- {r['variant']} {r['status']}: {r['error']}" for r in rows if r["status"] != "ok"]
    text = [machine_line(machine), "", f"Command: `{run['command']}`", "",
            f"Load average (1, 5, 15 min): {run['loadavg_before'] or 'unknown'} before, "
            f"{run['loadavg_after'] or 'unknown'} after; {run['wall_s']:.0f} s in all.", "",
            f"{run['model']}, {run['image_size']} px, {run['epochs']} epochs, per-process batch "
            f"{run['per_worker_batch_size']}, seed {run['seed']}"
            f"{_sizes(rows)}. Final val accuracy/loss: the last epoch's; test accuracy: the best checkpoint's "
            "(lowest val loss), as the run's report; images/s: median of the training epochs after the first; "
            f"each the median of {run['repeats']} repeat(s), the variants run in turn within a repeat. In "
            "brackets: the difference from (epochs, accuracy, loss) or the ratio to (images/s, wall time) the "
            "run named in `vs`, from the same benchmark.", "",
            format_table(rows)]
    return "\n".join(text + ([""] + failed if failed else [])) + "\n"
