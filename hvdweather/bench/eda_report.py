"""EDA and prepare benchmark, reporting part: eda_scaling.csv, eda_scaling.md and eda_speedup.png, built
from the results.jsonl rows alone (medians, speed-ups against the sequential executor of the same run)."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any, Protocol

from hvdweather.bench.machine import machine_line
from hvdweather.tables import markdown_table

STAGES = ("eda", "prepare")
REFERENCE = "reference project: PIL getchannel(c).histogram() per channel"  # the kernel speed-ups' base


class ReportSpec(Protocol):
    """What the report reads of the benchmark's spec (hvdweather.bench.eda.EdaBenchSpec)."""

    out: str


def scaling_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median per stage x executor x workers, with speed-up and efficiency against sequential (the rows
    keep the key "backend" for the executor, as results.jsonl does)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row["part"] == "scaling":
            groups.setdefault((row["stage"], row["backend"], row["workers"]), []).append(row)
    table = []
    for (stage, executor, workers), runs in groups.items():
        times = [r["time_s"] for r in runs]
        table.append({"stage": stage, "backend": executor, "workers": workers, "cores": runs[0]["cores"],
                      "oversubscribed": runs[0]["oversubscribed"], "repeats": len(runs),
                      "time_s": statistics.median(times), "time_min_s": min(times), "time_max_s": max(times),
                      "wall_s": statistics.median(r["wall_s"] for r in runs),
                      "tensorflow_import_s": _median_or_none([r.get("tensorflow_import_s") for r in runs]),
                      "same_result": all(r["same_result"] for r in runs)})
    base = {r["stage"]: r["time_s"] for r in table if r["backend"] == "sequential"}
    for row in table:
        row["speedup"] = base[row["stage"]] / row["time_s"]
        row["efficiency"] = row["speedup"] / row["workers"]
    return table


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


CSV_COLUMNS = ("stage", "backend", "workers", "cores", "oversubscribed", "repeats", "time_s", "time_min_s",
               "time_max_s", "wall_s", "tensorflow_import_s", "speedup", "efficiency", "same_result")


def scaling_markdown(table: list[dict[str, Any]], images: int) -> str:
    """The reference PyTorch project's table shape: time, speed-up and efficiency per executor and workers."""
    lines = []
    for stage, title in (("eda", "EDA (per-class RGB histograms and statistics)"),
                         ("prepare", "prepare (decode + resize + TFRecord shards)")):
        rows = [r for r in table if r["stage"] == stage]
        if not rows:
            continue
        tf_column = stage == "prepare"  # each prepare process imports TensorFlow once, inside the time
        header = ["backend", "workers", "time (s)", "speed-up vs sequential", "efficiency",
                  *(["of which TF import (s)"] if tf_column else []), "note"]
        cells = []
        for r in rows:
            note = "baseline" if r["backend"] == "sequential" else ""
            note = "oversubscribed" if r["oversubscribed"] else note
            note += "" if r["same_result"] else " RESULT DIFFERS"
            tf_cell = [f"{r['tensorflow_import_s']:.2f}"] if tf_column else []
            cells.append([r["backend"], str(r["workers"]), f"{r['time_s']:.2f}", f"{r['speedup']:.2f}",
                          f"{r['efficiency']:.2f}", *tf_cell, note.strip()])
        lines += [f"**{title}**, {images} images, {rows[0]['cores']} cores, median of {rows[0]['repeats']}", "",
                  markdown_table(header, cells, "lrrrr" + ("r" if tf_column else "")), ""]
    return "\n".join(lines)


def kernel_markdown(rows: list[dict[str, Any]]) -> str:
    """Each kernel vs the reference project's kernel, same images, medians; speed-up > 1 means faster."""
    keys = list(dict.fromkeys((r["scope"], r["method"]) for r in rows))  # first-seen order: reference first
    medians = {key: statistics.median(r["time_s"] for r in rows if (r["scope"], r["method"]) == key)
               for key in keys}
    images = rows[0]["images"]
    cells = [[method, scope, f"{medians[(scope, method)]:.3f}", f"{1000 * medians[(scope, method)] / images:.2f}",
              f"{medians[(scope, REFERENCE)] / medians[(scope, method)]:.2f}"] for scope, method in keys]
    return (f"**histogram kernel**, {images} images, median of {len({r['repeat'] for r in rows})}; "
            f"same totals as the reference kernel: {'yes' if all(r['same_result'] for r in rows) else 'NO'}\n\n"
            + markdown_table(["kernel", "scope", "time (s)", "ms / image", "speed-up vs reference kernel"], cells,
                             "llrrr") + "\n")


def train_markdown(rows: list[dict[str, Any]]) -> str:
    """Epoch 1 vs epoch 2 training from prepared shards and from class folders (decode on the fly).

    Training traces its graph before fit, so epoch 1 - epoch 2 is filling the cache: decoding from
    folders, reading the records from shards; the difference of the differences is the decode left.
    """
    prepare = next(r for r in rows if r["source"] == "prepare")
    cells = []
    for source, label in (("shards", "prepared shards"), ("folders", "class folders, decoded on the fly")):
        epochs = {r["epoch"]: r["train_time_s"] for r in rows if r["source"] == source}
        if 1 in epochs and 2 in epochs:
            cells.append([label, f"{epochs[1]:.2f}", f"{epochs[2]:.2f}", f"{epochs[1] / epochs[2]:.2f}",
                          f"{epochs[1] - epochs[2]:.2f}"])
    header = ["training data", "epoch 1 train (s)", "epoch 2 train (s)", "epoch 1 / epoch 2", "epoch 1 - epoch 2 (s)"]
    return (f"**prepare + train** (prepare: {prepare['time_s']:.2f} s on {prepare['workers']} workers; one "
            "training process; the graph is traced before epoch 1, so it is not in these times)\n\n"
            + markdown_table(header, cells, "lrrrr") + "\n")


def plot_speedup(table: list[dict[str, Any]]) -> Any:
    """Speed-up vs workers per executor, one panel per stage, with the ideal line and the core count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if any(r["stage"] == s for r in table)]
    figure, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in table if r["stage"] == stage]
        top = max(r["workers"] for r in rows)
        ax.plot([1, top], [1, top], "k--", linewidth=1, label="ideal")
        ax.axvline(rows[0]["cores"], color="grey", linestyle=":", label=f"{rows[0]['cores']} cores")
        for executor in sorted({r["backend"] for r in rows} - {"sequential"}):
            mine = sorted((r for r in rows if r["backend"] == executor), key=lambda r: r["workers"])
            ax.plot([r["workers"] for r in mine], [r["speedup"] for r in mine], "o-", label=executor)
        ax.set_title(f"{stage}: speed-up vs sequential", fontsize=10)
        ax.set_xticks(sorted({r["workers"] for r in rows} | {rows[0]["cores"]}))  # whole numbers only
        ax.set_xlabel("workers (processes / ranks)")
        ax.set_ylabel("speed-up")
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_tables(spec: ReportSpec, rows: list[dict[str, Any]], images: int, machine: dict[str, Any]) -> str:
    """eda_scaling.csv, eda_scaling.md and eda_speedup.png from the measurement rows; the markdown."""
    out, parts = Path(spec.out), [machine_line(machine) + "\n"]
    table = scaling_summary(rows)
    if table:
        with open(out / "eda_scaling.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in CSV_COLUMNS} for r in table)
        _save(plot_speedup(table), out / "eda_speedup.png")
        parts.append(scaling_markdown(table, images))
    kernel_rows = [r for r in rows if r["part"] == "kernel"]
    if kernel_rows:
        parts.append(kernel_markdown(kernel_rows))
    train_rows = [r for r in rows if r["part"] == "train"]
    if train_rows:
        parts.append(train_markdown(train_rows))
    markdown = "\n".join(parts)
    (out / "eda_scaling.md").write_text(markdown)
    return markdown


