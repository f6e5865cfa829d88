"""Inference benchmark: images/s per batch size and single-image latency, Keras model vs exported SavedModel,
on one thread and on all cores.

    hvdweather-bench inference runs/one [--batch-sizes 1,8,32,128 --threads 1,all --repeats 20 --out DIR]

TensorFlow fixes its thread pools at its first op, so each thread setting runs in its own child process
(`python -m hvdweather.bench.inference --child SPEC_JSON`), which prints one JSON line per measurement.
The Keras rows time the model on decoded, normalised pixels (what `model(x)` costs); the SavedModel rows
time the serving signature on encoded JPEG bytes, decoding and resizing included (what a TF Serving
client pays). Inputs are synthetic JPEGs (180-420 px wide, `hvdweather.data.synthetic.make_image`).
The parent exports the model once, collects the lines and builds the table (`inference_table`);
with --out it writes inference.jsonl and inference.md there.
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import available_cores, cpu_flags, cpu_model
from hvdweather.tables import markdown_table

ALL_CORES = "all"


@dataclass(frozen=True)
class InferenceSpec:
    """What `hvdweather-bench inference` runs; one field per flag."""

    model: str  # run directory or a .keras file in one
    checkpoint: str = "best"
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    threads: tuple[int, ...] = (1, 0)  # TF intra/inter-op threads per child; 0 = all cores
    repeats: int = 20  # timed calls per batch size (after 2 warm-up calls); single-image latency uses 5x
    out: str = ""  # inference.jsonl and inference.md go here ("" = print only)


def parse_counts(text: str, flag: str, allow_all: bool = False) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); with `allow_all`, 'all' -> 0 (every core). A ConfigError names the flag."""
    values = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if allow_all and item == ALL_CORES:
            values.append(0)
        elif item.isdigit() and int(item) > 0:
            values.append(int(item))
        else:
            extra = " or 'all'" if allow_all else ""
            raise ConfigError(f"{flag} must be comma-separated positive integers{extra}, got {text!r}")
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{flag} must list distinct values, got {text!r}")
    return tuple(values)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed_calls(call, repeats: int) -> list[float]:
    for _ in range(2):  # warm-up: tracing and first-touch allocations are not inference time
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _encoded_images(count: int, seed: int = 0) -> list[bytes]:
    import numpy as np

    from hvdweather.data.synthetic import WEAPD_CLASSES, make_image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        buffer = io.BytesIO()
        make_image(WEAPD_CLASSES[i % len(WEAPD_CLASSES)], rng).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def _measurers(spec: dict[str, Any], images: list[bytes]) -> dict[str, Any]:
    """name -> (input kind, function of a batch size returning a zero-argument call)."""
    import tensorflow as tf

    from hvdweather.data.decode_tf import decode_bytes
    from hvdweather.data.pipeline import to_unit_range
    from hvdweather.evaluate.predict import load_keras
    from hvdweather.evaluate.runmodel import resolve_model

    run_model = resolve_model(spec["model"], spec["checkpoint"])
    model = load_keras(run_model)
    keras_call = tf.function(lambda x: model(x, training=False))  # what model.predict runs per batch
    pixels = to_unit_range(tf.stack([decode_bytes(raw, run_model.image_size) for raw in images]))
    serve = tf.saved_model.load(spec["export"]).signatures["serving_default"]

    def keras(batch: int):
        x = tf.gather(pixels, [i % len(images) for i in range(batch)])
        return lambda: keras_call(x).numpy()

    def saved_model(batch: int):
        x = tf.constant([images[i % len(images)] for i in range(batch)])
        return lambda: serve(image_bytes=x)["probabilities"].numpy()

    return {"keras": ("decoded pixels", keras), "savedmodel": ("encoded JPEG bytes", saved_model)}


def run_child(spec: dict[str, Any]) -> None:
    """One thread setting: set TF's pools before its first op, then print one JSON line per measurement."""
    import tensorflow as tf

    threads = spec["threads"] or available_cores()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    measurers = _measurers(spec, _encoded_images(16))
    for name, (input_kind, make_call) in measurers.items():
        row = {"model": name, "input": input_kind, "threads": threads}
        for batch in spec["batch_sizes"]:
            median_s = statistics.median(_timed_calls(make_call(batch), spec["repeats"]))
            print(json.dumps(row | {"measure": "throughput", "batch_size": batch, "median_batch_s": median_s,
                                    "images_per_s": batch / median_s, "repeats": spec["repeats"]}), flush=True)
        latency = _timed_calls(make_call(1), 5 * spec["repeats"])
        print(json.dumps(row | {"measure": "latency", "batch_size": 1, "calls": len(latency),
                                "latency_p50_ms": 1000 * _percentile(latency, 0.50),
                                "latency_p95_ms": 1000 * _percentile(latency, 0.95)}), flush=True)


def _run_children(spec: InferenceSpec, export_dir: str) -> list[dict[str, Any]]:
    rows = []
    for threads in spec.threads:
        child = asdict(spec) | {"threads": threads, "export": export_dir}
        result = subprocess.run([sys.executable, "-m", "hvdweather.bench.inference", "--child", json.dumps(child)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"inference child ({threads or 'all'} threads) failed:\n{result.stderr[-3000:]}")
        rows += [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return rows


def machine_header() -> str:
    """The CPU every figure belongs to: model, speed-relevant flags and the cores this process may use."""
    return (f"CPU: {cpu_model() or 'unknown'} ({available_cores()} cores available; flags: "
            f"{', '.join(cpu_flags()) or 'none of the AVX2/AVX-512/AMX set'})")


def inference_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (model, threads), images/s per batch size, then latency p50/p95 (ms)."""
    batches = sorted({r["batch_size"] for r in rows if r["measure"] == "throughput"})
    keys = list(dict.fromkeys((r["model"], r["input"], r["threads"]) for r in rows))
    header = ["model", "input", "threads", *[f"images/s @ batch {b}" for b in batches],
              "latency p50 (ms)", "latency p95 (ms)"]
    lines = []
    for model, input_kind, threads in keys:
        mine = [r for r in rows if (r["model"], r["input"], r["threads"]) == (model, input_kind, threads)]
        speed = {r["batch_size"]: r["images_per_s"] for r in mine if r["measure"] == "throughput"}
        latency = next((r for r in mine if r["measure"] == "latency"), {})
        cells = [f"{speed[b]:.1f}" if b in speed else "" for b in batches]
        cells += [f"{latency[k]:.2f}" if k in latency else "" for k in ("latency_p50_ms", "latency_p95_ms")]
        lines.append([model, input_kind, str(threads), *cells])
    return markdown_table(header, lines, "llr" + "r" * (len(batches) + 2)) + "\n"


def run_inference_bench(spec: InferenceSpec) -> list[dict[str, Any]]:
    """Check, export once, time each thread setting in its own process, print and write the table."""
    from hvdweather.evaluate.export import export_model
    from hvdweather.evaluate.runmodel import resolve_model

    if spec.repeats < 1:
        raise ConfigError(f"--repeats must be an integer >= 1, got {spec.repeats}")
    run_model = resolve_model(spec.model, spec.checkpoint)  # a DataError names MODEL before any timing
    out = Path(spec.out) if spec.out else None
    if out:
        check_output_dir(out)
    with tempfile.TemporaryDirectory(prefix="hvdweather-inference-") as scratch:
        export_dir = str(export_model(run_model, scratch))
        rows = _run_children(spec, export_dir)
    publish(rows, out)
    return rows


def publish(rows: list[dict[str, Any]], out: Path | None) -> None:
    """The table on stdout; the JSON lines into OUT (--out), or after the table when there is no OUT to
    hold them (printing them after the table too only buried it)."""
    table = f"{machine_header()}\n\n{inference_table(rows)}"
    print(table, flush=True)
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    if out:
        (out / "inference.jsonl").write_text(lines)
        (out / "inference.md").write_text(table)
        print(f"wrote {out / 'inference.jsonl'} and {out / 'inference.md'}", flush=True)
    else:
        print(lines, end="", flush=True)


if __name__ == "__main__":  # the per-thread-setting child started by _run_children
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        run_child(json.loads(sys.argv[2]))
    else:
        sys.exit("usage: python -m hvdweather.bench.inference --child SPEC_JSON (started by hvdweather-bench)")
