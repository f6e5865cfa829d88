"""hvdweather.tables: the one Markdown table writer."""
from __future__ import annotations

from hvdweather.tables import markdown_table


def test_header_rule_and_rows_with_alignment_per_column():
    text = markdown_table(["name", "images/s", "note"], [["a", "1.0", ""], ["b", "22.5", "slow"]], "lr")
    assert text == "| name | images/s | note |\n|---|---:|---|\n| a | 1.0 |  |\n| b | 22.5 | slow |"


def test_no_rows_is_the_header_alone_and_left_aligned_by_default():
    assert markdown_table(["run", "status"], []) == "| run | status |\n|---|---|"
