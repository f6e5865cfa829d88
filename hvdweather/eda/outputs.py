"""The EDA's files, written by the primary only (it alone holds the totals):

    histograms.npz   histograms (classes, 3, 256) int64, class_names, images_per_class, and per
                     decoded image: paths, labels, widths, heights
    histograms.csv   one row per class and channel: class, channel, count_0 ... count_255
    class_counts.csv class, images, skipped, fraction (of the decoded images)
    summary.json     per class and overall: images, formats, width/height stats, mean/std per channel
                     (0-255 and 0-1 scales: the normalisation constants), plus how the run was made
    skipped.csv      path, reason for every file that does not decode
    *.png            see hvdweather.eda.plots
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from hvdweather.eda.kernel import CHANNELS, HIST_BINS


def write_outputs(out: str | Path, totals, summary: dict[str, Any]) -> None:
    """Write every table of the EDA (not the plots) under `out`."""
    out = Path(out)
    catalog, decoded = totals.catalog, totals.decoded()
    labels = np.asarray(catalog.labels)
    np.savez_compressed(out / "histograms.npz", histograms=totals.histograms,
                        class_names=np.asarray(catalog.class_names), channels=np.asarray(CHANNELS),
                        images_per_class=np.bincount(labels[decoded], minlength=len(catalog.class_names)),
                        paths=np.asarray(catalog.paths)[decoded], labels=labels[decoded],
                        widths=totals.sizes[decoded, 0], heights=totals.sizes[decoded, 1])
    with open(out / "histograms.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "channel", *[f"count_{v}" for v in range(HIST_BINS)]])
        for name, per_channel in zip(catalog.class_names, totals.histograms):
            for channel, counts in zip(CHANNELS, per_channel):
                writer.writerow([name, channel, *counts.tolist()])
    decoded_total = max(1, summary["all"]["images"])
    write_csv(out / "class_counts.csv", ["class", "images", "skipped", "fraction"],
              [[name, c["images"], c["skipped"], f"{c['images'] / decoded_total:.6f}"]
               for name, c in summary["classes"].items()])
    write_csv(out / "skipped.csv", ["path", "reason"],
              [[catalog.paths[i], reason] for i, reason in totals.skipped.items()])
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _triple(values: list[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:5.1f}" for v in values)


def format_summary(summary: dict[str, Any]) -> str:
    """The per-class table printed at the end: images, skipped, mean and std of R G B (0-255)."""
    lines = [f"{'class':<12} {'images':>6} {'skipped':>7}   {'mean R G B':<17}   std R G B"]
    rows = [*summary["classes"].items(), ("all", summary["all"])]
    for name, group in rows:
        lines.append(f"{name:<12} {group['images']:>6} {group['skipped']:>7}   "
                     f"{_triple(group['mean']):<17}   {_triple(group['std'])}")
    return "\n".join(lines)


def print_summary(summary: dict[str, Any], out: str | Path, plots: bool) -> None:
    """Print the table and where the files went (primary only: only it calls this)."""
    run = summary["run"]
    print(format_summary(summary))
    print(f"{summary['all']['images']} images decoded, {summary['all']['skipped']} skipped "
          f"(see skipped.csv) in {run['elapsed_s']:.2f} s with {run['executor']} x {run['workers']}; "
          f"wrote {out}/: summary.json, histograms.npz/.csv, class_counts.csv, skipped.csv"
          f"{', histograms.png, class_counts.png, image_sizes.png' if plots else ''}", flush=True)
