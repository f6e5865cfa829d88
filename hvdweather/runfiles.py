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
