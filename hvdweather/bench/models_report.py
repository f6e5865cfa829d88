"""Model-zoo benchmark, reporting part: medians, ratios and models.md from the lines of models.jsonl alone
(written by hvdweather.bench.models)."""
from __future__ import annotations

import statistics
from typing import Any

from hvdweather.bench.machine import machine_line
from hvdweather.tables import markdown_table

Row = dict[str, Any]
PHASES = ("train", "inference")  # what hvdweather.bench.models times per model
REFERENCE = "weather_cnn"  # the package's own model: the others' speeds are given relative to it


def summarize(lines: list[Row]) -> list[Row]:
    """One row per model, in the order of its first measurement: its parameters, and per phase the
    median, lowest and highest images/s over the repeats that finished; start-up as a median, memory
    as the highest. A model none of whose repeats finished keeps its last error."""
    measured = [line for line in lines if line["kind"] == "measurement"]
    rows = []
    for model in dict.fromkeys(line["model"] for line in measured):
        mine = [line for line in measured if line["model"] == model]
        ok = [line for line in mine if line["status"] == "ok"]
        row = {"model": model, "image_size": mine[0]["image_size"], "repeats": len(mine), "ok_repeats": len(ok),
               "status": "ok" if ok else mine[-1]["status"], "error": None if ok else mine[-1]["error"],
               "trainable_parameters": ok[0]["trainable_parameters"] if ok else None,
               "startup_s": statistics.median(r["build_s"] + r["warmup_s"] for r in ok) if ok else None,
               "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None)}
        for phase in PHASES:
            rates = [r[f"{phase}_images_per_s"] for r in ok]
            row.update({f"{phase}_images_per_s": statistics.median(rates) if rates else None,
                        f"{phase}_min": min(rates, default=None), f"{phase}_max": max(rates, default=None)})
        rows.append(row)
    return add_ratios(rows)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def reference_model(rows: list[Row]) -> str | None:
    """The weather CNN when it was measured, else the first model that was: the rows' common yardstick."""
    measured = [r["model"] for r in rows if r.get("train_images_per_s") and r.get("inference_images_per_s")]
    return REFERENCE if REFERENCE in measured else (measured[0] if measured else None)


def add_ratios(rows: list[Row]) -> list[Row]:
    """inference_to_train: a model's median inference images/s over its median training images/s;
    train_vs_reference / inference_vs_reference: its median over the reference model's (same run, same
    load), so the ratios hold better than the absolute rates on a shared machine."""
    name = reference_model(rows)
    ref = next((r for r in rows if r["model"] == name), {})
    return [{**r, "reference": name,
             "inference_to_train": _ratio(r.get("inference_images_per_s"), r.get("train_images_per_s")),
             "train_vs_reference": _ratio(r.get("train_images_per_s"), ref.get("train_images_per_s")),
             "inference_vs_reference": _ratio(r.get("inference_images_per_s"), ref.get("inference_images_per_s"))}
            for r in rows]


def _rate(row: Row, phase: str) -> str:
    median = row.get(f"{phase}_images_per_s")
    if median is None:
        return "failed" if row.get("status") != "ok" else "-"
    return f"{median:.1f} ({row[f'{phase}_min']:.1f}-{row[f'{phase}_max']:.1f})"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: list[Row]) -> str:
    """Markdown: one row per model; images/s as median (lowest-highest) over the repeats."""
    ref = rows[0].get("reference") if rows else None
    header = ["model", "image size", "trainable parameters", "training images/s", "inference images/s",
              "inference / training", f"training vs {ref}", f"inference vs {ref}", "start-up (s)", "peak memory (MB)"]
    cells = []
    for r in rows:
        params = f"{r['trainable_parameters']:,}" if r.get("trainable_parameters") is not None else "-"
        warmup = f"{r['startup_s']:.1f}" if r.get("startup_s") is not None else "-"
        memory = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") is not None else "-"
        cells.append([r["model"], str(r["image_size"]), params, _rate(r, "train"), _rate(r, "inference"),
                      _times(r["inference_to_train"]), _times(r["train_vs_reference"]),
                      _times(r["inference_vs_reference"]), warmup, memory])
    return markdown_table(header, cells, "l" + "r" * 9)


def markdown_report(lines: list[Row], machine: dict[str, Any]) -> str:
    """models.md: the machine, the command, the load before and after, how it was timed, the table, and
    one line per model that failed."""
    run = next(line for line in lines if line["kind"] == "benchmark")
    rows = summarize(lines)
    failed = [f"- {r['model']} {r['status']}: {r['error']}" for r in rows if r["status"] != "ok"]
    failed += [f"- {r['model']}: {r['repeats'] - r['ok_repeats']} of {r['repeats']} repeats failed; the figures "
               "are from the others" for r in rows if r["status"] == "ok" and r["ok_repeats"] < r["repeats"]]
    text = [machine_line(machine), "", f"Command: `{run['command']}`", "",
            f"Load average (1, 5, 15 min): {run['loadavg_before'] or 'unknown'} before, "
            f"{run['loadavg_after'] or 'unknown'} after; {run['wall_s']:.0f} s in all.", "",
            f"Batch {run['per_worker_batch_size']}, {run['threads']} TensorFlow thread(s) per model process, "
            f"synthetic tensors (no decoding). Images/s: median (lowest-highest) of {run['repeats']} repeat(s) "
            f"of {run['steps']} step(s), each model in its own process, the models taken in turn within each repeat; "
            "training = forward, loss, gradients and the SGD-momentum update; inference = forward pass in "
            "inference mode; start-up = TensorFlow import, build, compile and the untimed first step and pass "
            "(median); peak memory: the model process's peak resident set, TensorFlow included.", "",
            format_table(rows)]
    return "\n".join(text + ([""] + failed if failed else [])) + "\n"
