"""Input-pipeline benchmark, reporting part: pipeline.md from the rows of pipeline.jsonl."""
from __future__ import annotations

from typing import Any

from hvdweather.bench.machine import machine_line
from hvdweather.tables import markdown_table


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows, speed-ups against the naive loop measured in the same run."""
    cells = [[row["method"], f"{row['seconds']:.2f}", f"{row['images_per_s']:.0f}", f"{row['speedup_vs_naive']:.2f}x"]
             for row in rows]
    return markdown_table(["method", "seconds", "images/s", "speed-up vs naive loop"], cells, "lrrr")


def markdown_report(rows: list[dict[str, Any]], machine: dict[str, Any], data: str, unreadable: int) -> str:
    """pipeline.md: the machine, what was decoded, then the table."""
    first = rows[0]
    size = first["image_size"]
    return (f"{machine_line(machine)}\n\n{first['images']} images from {data} at {size}x{size}, "
            f"median of {first['repeats']}; {unreadable} unreadable skipped\n\n{format_table(rows)}\n")
