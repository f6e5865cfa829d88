"""GitHub Markdown tables: the one writer behind every table the benchmarks and hvdweather-compare print
and write (scaling.md, models.md, compare.md, ...). Cells arrive as text, already formatted by the caller,
because each table has its own decimals."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """The table as lines joined by newlines, no newline at the end. `align`: one letter per column, "l"
    (text, the default for columns it does not reach) or "r" (numbers, so their digits line up)."""
    rules = ["---:" if kind == "r" else "---" for kind in align.ljust(len(header), "l")]
    lines = [_line(header), "|" + "".join(f"{rule}|" for rule in rules)]
    return "\n".join(lines + [_line(row) for row in rows])


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
