"""Layer benchmark, reporting part: layers-<onednn>.md from the rows of layers-<onednn>.jsonl alone (the
measuring part is hvdweather.bench.layers)."""
from __future__ import annotations

from hvdweather.tables import markdown_table


def _fmt(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def layers_table(rows: list[dict]) -> str:
    """Markdown: per layer, TF reference form vs package form vs PyTorch (best-of-N ms: on a shared machine
    the fastest call is the one least disturbed by other processes; ratios > 1 = faster)."""
    ms = {(r["framework"], r["form"], r["layer"]): r.get("ms_min", r["ms"]) for r in rows}
    tf_rows = [r for r in rows if r["framework"] == "tensorflow"]
    onednn = "on" if tf_rows and tf_rows[0]["onednn"] else "off"
    best_of = len(rows[0].get("ms_all", [])) or 1
    lines = [f"CPU: {rows[0]['cpu_model']}; flags: {' '.join(rows[0]['cpu_flags'])}; TensorFlow oneDNN {onednn}; "
             f"batch {rows[0]['batch']}, 1 thread, forward + backward, ms (best of {best_of})", ""]
    cells = []
    for layer in dict.fromkeys(r["layer"] for r in rows):
        before = ms.get(("tensorflow", "reference", layer))
        after = ms.get(("tensorflow", "package", layer), before)  # pools: one layer in both forms
        torch_ms = ms.get(("torch", "reference", layer))
        cells.append([layer, _fmt(before), _fmt(after), _ratio(before, after), _fmt(torch_ms), _ratio(torch_ms, after)])
    header = ["layer", "TF reference form", "TF package form", "TF speed-up", "PyTorch", "package vs PyTorch"]
    return "\n".join([*lines, markdown_table(header, cells, "lrrrrr")])
