"""Model-zoo benchmark, reporting part: medians, ratios and models.md from the lines of models.jsonl alone
(written by hvdweather.bench.models)."""
from __future__ import annotations

import statistics
from typing import Any

from hvdweather.bench.machine import machine_line
from hvdweather.bench.models import PHASES

Row = dict[str, Any]
REFERENCE = "weather_cnn"  # the package's own model: the others' speeds are given relative to it


def summarize(lines: list[Row]) -> list[Row]:
    """One row per model, in the order they were started: its model line, plus per phase the median,
    lowest and highest images/s over the repeats and how many repeats were timed."""
    timings = [line for line in lines if line["kind"] == "timing"]
    rows = []
    for model_line in (line for line in lines if line["kind"] == "model"):
        row = dict(model_line)
        for phase in PHASES:
            rates = [t["images_per_s"] for t in timings if t["model"] == row["model"] and t["phase"] == phase]
            row.update({f"{phase}_images_per_s": statistics.median(rates) if rates else None,
                        f"{phase}_min": min(rates, default=None), f"{phase}_max": max(rates, default=None),
                        f"{phase}_repeats": len(rates)})
        row["peak_rss_mb"] = max((t["peak_rss_mb"] for t in timings if t["model"] == row["model"]), default=None)
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
    lines = [f"| model | image size | trainable parameters | training images/s | inference images/s "
             f"| inference / training | training vs {ref} | inference vs {ref} | start-up (s) | peak memory (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['trainable_parameters']:,}" if r.get("trainable_parameters") is not None else "-"
        warmup = f"{r['build_s'] + r['warmup_s']:.1f}" if r.get("build_s") is not None else "-"
        memory = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") is not None else "-"
        lines.append(f"| {r['model']} | {r['image_size']} | {params} | {_rate(r, 'train')} | {_rate(r, 'inference')} "
                     f"| {_times(r['inference_to_train'])} | {_times(r['train_vs_reference'])} "
                     f"| {_times(r['inference_vs_reference'])} | {warmup} | {memory} |")
    return "\n".join(lines)


def markdown_report(lines: list[Row], machine: dict[str, Any]) -> str:
    """models.md: the machine, the command, the load before and after, how it was timed, the table, and
    one line per model that failed."""
    run = next(line for line in lines if line["kind"] == "benchmark")
    rows = summarize(lines)
    failed = [f"- {r['model']} failed: {r['error']}" for r in rows if r.get("status") != "ok"]
    text = [machine_line(machine), "", f"Command: `{run['command']}`", "",
            f"Load average (1, 5, 15 min): {run['loadavg_before'] or 'unknown'} before, "
            f"{run['loadavg_after'] or 'unknown'} after; {run['wall_s']:.0f} s in all.", "",
            f"Batch {run['per_worker_batch_size']}, {run['threads']} TensorFlow thread(s) per model process, "
            f"synthetic tensors (no decoding). Images/s: median (lowest-highest) of {run['repeats']} repeat(s) "
            f"of {run['steps']} step(s), the models taken in turn within each repeat; training = forward, "
            "loss, gradients and the SGD-momentum update; inference = forward pass in inference mode; start-up = "
            "TensorFlow import, build, compile and the untimed first step of each; peak memory: the model "
            "process's peak resident set, TensorFlow included.", "",
            format_table(rows)]
    return "\n".join(text + ([""] + failed if failed else [])) + "\n"
