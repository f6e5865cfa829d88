"""Mean ± standard deviation over --seed values: a comparison's runs that differ in --seed, grouped by
their other settings, one row per group (seed_spread.csv, seed_spread.md).

    hvdweather-compare studies/mwd/* --out studies/mwd    # seed varies: seed_spread.md beside compare.md

Every seed draws its own split, so runs of different --seed values are tested on different images; the spread
over --seed values is the figure that carries, and the only one a single split cannot give.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from hvdweather.tables import markdown_table

Row = dict[str, Any]
# The columns summarised (mean and std over the --seed values), in table order.
SUMMARISED = ("best_test_accuracy", "best_macro_f1", "last_test_accuracy", "last_macro_f1", "best_epoch",
              "images_per_s", "wall_s")


def varies_seed(settings: list[str]) -> bool:
    return "seed" in settings


def seed_groups(rows: list[Row], settings: list[str]) -> list[tuple[tuple[Any, ...], list[Row]]]:
    """Finished runs grouped by every varied setting but the seed, in the order they first appear."""
    others = [s for s in settings if s != "seed"]
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(tuple(repr(row.get(s)) for s in others), []).append(row)
    return list(groups.items())


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def seed_rows(rows: list[Row], settings: list[str]) -> list[Row]:
    """One row per group: its settings, its --seed values, and mean/std of each SUMMARISED column."""
    others = [s for s in settings if s != "seed"]
    summary = []
    for _, group in seed_groups(rows, settings):
        row: Row = {s: group[0].get(s) for s in others}
        row["seed_values"] = " ".join(str(r.get("seed")) for r in group)
        for column in SUMMARISED:
            row[f"{column}_mean"], row[f"{column}_std"] = _mean_std([r.get(column) for r in group])
        summary.append(row)
    return summary


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    digits = 4 if abs(mean) < 10 else 1
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write_seed_summary(rows: list[Row], settings: list[str], out: Path) -> str:
    """seed_spread.csv (every mean and std) and seed_spread.md (mean ± std); returns the markdown table."""
    summary = seed_rows(rows, settings)
    others = [s for s in settings if s != "seed"]
    names = [*others, "seed_values", *(f"{c}_{stat}" for c in SUMMARISED for stat in ("mean", "std"))]
    with (out / "seed_spread.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(summary)
    header = [*others, "seed_values", *SUMMARISED]
    cells = [[*(str(r[s]) for s in others), r["seed_values"],
              *(_cell(r[f"{c}_mean"], r[f"{c}_std"]) for c in SUMMARISED)] for r in summary]
    table = markdown_table(header, cells) + "\n"
    (out / "seed_spread.md").write_text(f"Mean ± standard deviation over --seed values ({len(summary)} group(s)); "
                                        "each seed is its own split, so its own test images.\n\n" + table)
    return table
