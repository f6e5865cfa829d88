"""EDA and prepare benchmark: each backend at each worker count, the histogram kernel against the
seeds' PIL kernel, and training from prepared shards against decoding on the fly, in one run.

    hvdweather-bench eda --data DIR --backends sequential,multiprocessing,mpi --workers 1,2,4 \\
        --out bench/eda [--repeats 3 --image-size 256 --kernel-images 100 --train-epochs 2]

Every EDA and prepare run is its own process tree (`hvdweather-eda ...`, `mpirun -np N
hvdweather-eda ... --executor mpi`), and repeats are interleaved across configurations so a burst of
load on the machine does not land on one row. A run's time is the stage's own clock (listing the
files, starting the pool or reaching the first MPI barrier, computing, combining; not the Python
start-up or writing the outputs), read from its summary.json / prepared.json; the wall time of the
whole command is recorded too. Speed-up and efficiency are against the sequential backend measured
in the same run. Worker counts above the core count run (mpirun gets --oversubscribe) and are marked.

Written to --out: results.jsonl (one line per measurement), eda_scaling.csv and eda_scaling.md (the
tables, also printed), eda_speedup.png, logs/<run>.log, and work/ (the runs' own outputs).
"""
from __future__ import annotations

import json
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdweather.bench.launch import launch
from hvdweather.config import ConfigError
from hvdweather.eda.executors import EXECUTORS as BACKENDS  # --backends: the EDA executors to time
from hvdweather.host import available_cores

STAGES = ("eda", "prepare")
PARTS = ("scaling", "kernel", "train")


@dataclass(frozen=True)
class EdaBenchSpec:
    """What `hvdweather-bench eda` runs; one field per flag."""

    data: str  # class-folder data set
    out: str = "bench/eda"  # results, tables, plot, logs and the runs' outputs
    backends: tuple[str, ...] = BACKENDS  # the sequential baseline always runs as well
    workers: tuple[int, ...] = (1, 2, 4)  # processes (multiprocessing) or ranks (mpi)
    repeats: int = 3  # runs per configuration; tables show the median
    image_size: int = 256  # prepare and training image size
    kernel_images: int = 100  # images the kernel comparison uses (evenly spaced over the data)
    train_epochs: int = 2  # epochs of each training run (epoch 1 vs epoch 2 needs >= 2)
    batch_size: int = 16  # per-worker batch of the training runs
    parts: tuple[str, ...] = PARTS  # scaling (eda + prepare), kernel, train
    timeout_s: float = 900.0  # a run still going after this is killed and the benchmark stops


def parse_list(text: str, flag: str, allowed: tuple[str, ...] | None = None) -> tuple[Any, ...]:
    """'1,2,4' -> (1, 2, 4) (or names checked against `allowed`); a ConfigError names the flag."""
    items = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if allowed is not None:
        if not items or set(items) - set(allowed) or len(set(items)) != len(items):
            raise ConfigError(f"{flag} must be a comma-separated subset of {','.join(allowed)}, got {text!r}")
        return items
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        values = ()
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise ConfigError(f"{flag} must be distinct comma-separated positive integers, got {text!r}")
    return values


def check_spec(spec: EdaBenchSpec) -> None:
    """Everything that can fail in seconds, before the first run."""
    from hvdweather.data.discovery import discover

    for name in ("repeats", "kernel_images", "batch_size", "image_size"):
        if getattr(spec, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(spec, name)}")
    if "train" in spec.parts and spec.train_epochs < 2:
        raise ConfigError(f"--train-epochs must be >= 2 to compare epoch 1 with epoch 2, got {spec.train_epochs}")
    if "train" in spec.parts and spec.image_size < 253:
        raise ConfigError(f"--image-size {spec.image_size} is too small for the weather CNN (needs >= 253)")
    discover(spec.data)  # DataError names --data
    if "mpi" in spec.backends and "scaling" in spec.parts and not shutil.which("mpirun"):
        raise ConfigError("--backends mpi: mpirun not found on PATH (install openmpi-bin)")
    try:
        (Path(spec.out) / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {spec.out}: not writable ({exc.strerror or exc})") from None


def tool(name: str) -> str:
    """An hvdweather-* command next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def run_command(command: list[str], log: Path, timeout_s: float) -> float:
    """Run `command` (see `bench.launch`); wall seconds. Raises if it fails or times out."""
    code, wall_s = launch(command, log, timeout_s)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        why = "timed out" if code is None else f"exit code {code}"
        raise RuntimeError(f"{shlex.join(command)}: {why}; see {log}: {' | '.join(tail)}")
    return wall_s


@dataclass(frozen=True)
class StageRun:
    """One timed configuration: a stage (eda or prepare) on a backend with some workers."""

    stage: str
    backend: str
    workers: int

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.backend}-w{self.workers}"


def plan_scaling(spec: EdaBenchSpec) -> list[StageRun]:
    """The sequential baseline, then every other backend at every worker count, for both stages."""
    runs = []
    for stage in STAGES:
        runs.append(StageRun(stage, "sequential", 1))
        runs += [StageRun(stage, backend, workers) for backend in spec.backends if backend != "sequential"
                 for workers in spec.workers]
    return runs


def stage_command(spec: EdaBenchSpec, run: StageRun, out_dir: Path) -> list[str]:
    """The exact command line of one run (also written at the top of its log)."""
    args = [tool(f"hvdweather-{run.stage}"), spec.data, "--out", str(out_dir), "--executor", run.backend,
            "--no-progress"]
    args += ["--no-plots"] if run.stage == "eda" else ["--image-size", str(spec.image_size)]
    if run.backend == "multiprocessing":
        args += ["--workers", str(run.workers)]
    if run.backend == "mpi":  # --oversubscribe: worker counts above the core count are part of the table
        return ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(run.workers), *args]
    return args


def stage_result(stage: str, out_dir: Path) -> tuple[dict[str, Any], str]:
    """(the run's own timings, a digest of its result) from the files the run wrote."""
    import hashlib

    digest = hashlib.sha256()
    if stage == "eda":
        summary = json.loads((out_dir / "summary.json").read_text())
        timings = {"time_s": summary.pop("run")["elapsed_s"]}
        digest.update(json.dumps(summary, sort_keys=True).encode())
        with np.load(out_dir / "histograms.npz") as arrays:
            for key in ("histograms", "widths", "heights", "labels"):
                digest.update(arrays[key].tobytes())
    else:
        run = json.loads((out_dir / "prepared.json").read_text())["run"]
        timings = {"time_s": run["elapsed_s"], "tensorflow_import_s": run["tensorflow_import_s"]}
        for name in ("images.csv", "skipped.csv"):  # shard names differ with the worker count
            lines = (out_dir / name).read_text().splitlines()
            digest.update("\n".join(",".join(line.split(",")[:2]) for line in lines).encode())
    return timings, digest.hexdigest()


def append_row(spec: EdaBenchSpec, row: dict[str, Any]) -> dict[str, Any]:
    """One measurement -> one line of results.jsonl, written at once (a later failure keeps it)."""
    with open(Path(spec.out) / "results.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    return row


def measure_scaling(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """Every configuration `repeats` times, interleaved; each result checked against the first."""
    cores, rows, reference = available_cores(), [], {}
    runs = plan_scaling(spec)
    for repeat in range(spec.repeats):
        for run in runs:
            out_dir = Path(spec.out) / "work" / run.stage  # reused: a prepare run writes the whole set
            log = Path(spec.out) / "logs" / f"{run.name}-r{repeat}.log"
            wall_s = run_command(stage_command(spec, run, out_dir), log, spec.timeout_s)
            timings, digest = stage_result(run.stage, out_dir)
            reference.setdefault(run.stage, digest)
            rows.append(append_row(spec, {
                "part": "scaling", "stage": run.stage, "backend": run.backend, "workers": run.workers,
                "repeat": repeat, **timings, "wall_s": wall_s, "cores": cores,
                "oversubscribed": run.workers > cores, "same_result": digest == reference[run.stage]}))
            print(f"  {run.name} repeat {repeat + 1}/{spec.repeats}: {timings['time_s']:.2f} s", flush=True)
    return rows


def kernel_sample(data: str, count: int) -> list[str]:
    """`count` decodable images spread evenly over the (class-sorted) data set."""
    from hvdweather.data.discovery import discover, find_unreadable

    paths = discover(data).paths
    picked = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int))]
    bad = find_unreadable(picked)
    return [p for p in picked if p not in bad]


def seeds_kernel_pass(paths: list[str]) -> np.ndarray:
    """The seeds' loop: PIL convert, `getchannel(c).histogram()` per channel, lists summed at the end."""
    from PIL import Image

    histograms: dict[str, list[list[int]]] = {"R": [], "G": [], "B": []}
    for path in paths:
        with Image.open(path) as img:
            img_rgb = img.convert("RGB")
            for channel, color in zip(range(3), ["R", "G", "B"]):
                histograms[color].append(img_rgb.getchannel(channel).histogram())
    return np.array([[sum(x) for x in zip(*histograms[color])] for color in "RGB"], np.int64)


SEEDS = "seeds: PIL getchannel(c).histogram() per channel"
OURS = "hvdweather: Image.histogram(), all channels in one call"
NUMPY = "numpy: one np.bincount for all channels"


def ours_kernel_pass(paths: list[str]) -> np.ndarray:
    """The EDA's kernel: `open_rgb` once per image, one C histogram call, summed into int64."""
    from hvdweather.data.decode import open_rgb
    from hvdweather.eda.kernel import rgb_histograms

    total = np.zeros((3, 256), np.int64)
    for path in paths:
        with open_rgb(path) as (rgb, _):
            total += rgb_histograms(rgb)
    return total


def numpy_kernel_pass(paths: list[str]) -> np.ndarray:
    """The numpy alternative: `load_rgb` to an array, one np.bincount, summed into int64."""
    from hvdweather.data.decode import load_rgb
    from hvdweather.eda.kernel import bincount_histograms

    total = np.zeros((3, 256), np.int64)
    for path in paths:
        total += bincount_histograms(load_rgb(path))
    return total


def histogram_only_pass(paths: list[str]) -> tuple[dict[str, float], bool]:
    """Seconds of the histogram step alone (decoding untimed) per kernel; do all totals agree?

    The seeds' kernel keeps its per-channel lists and sums them at the end, as the seeds did.
    """
    from PIL import Image

    from hvdweather.eda.kernel import bincount_histograms, rgb_histograms

    seconds = {SEEDS: 0.0, OURS: 0.0, NUMPY: 0.0}
    lists: dict[int, list[list[int]]] = {0: [], 1: [], 2: []}
    ours, numpy_total = np.zeros((3, 256), np.int64), np.zeros((3, 256), np.int64)
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # a decoded copy that outlives the file
        pixels = np.asarray(rgb)
        start = time.perf_counter()
        for channel in range(3):
            lists[channel].append(rgb.getchannel(channel).histogram())
        seeds_end = time.perf_counter()
        ours += rgb_histograms(rgb)
        ours_end = time.perf_counter()
        numpy_total += bincount_histograms(pixels)
        seconds[SEEDS] += seeds_end - start
        seconds[OURS] += ours_end - seeds_end
        seconds[NUMPY] += time.perf_counter() - ours_end
    start = time.perf_counter()
    combined = [[sum(x) for x in zip(*lists[channel])] for channel in range(3)]  # the seeds' combine step
    seconds[SEEDS] += time.perf_counter() - start
    return seconds, ours.tolist() == combined == numpy_total.tolist()


def _timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure_kernel(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """The three kernels on the same images, `repeats` times, decode included and histogram step alone."""
    paths, rows = kernel_sample(spec.data, spec.kernel_images), []
    for repeat in range(spec.repeats):
        seeds_s, seeds_total = _timed(seeds_kernel_pass, paths)
        timings = [(SEEDS, "decode + histogram", seeds_s, True)]
        for name, kernel_pass in ((OURS, ours_kernel_pass), (NUMPY, numpy_kernel_pass)):
            seconds, total = _timed(kernel_pass, paths)
            timings.append((name, "decode + histogram", seconds, bool(np.array_equal(total, seeds_total))))
        alone, same = histogram_only_pass(paths)
        timings += [(name, "histogram only", seconds, same) for name, seconds in alone.items()]
        for method, scope, seconds, ok in timings:
            rows.append(append_row(spec, {"part": "kernel", "method": method, "scope": scope, "repeat": repeat,
                                          "time_s": seconds, "images": len(paths), "same_result": ok}))
    return rows


def train_once(spec: EdaBenchSpec, source: str, data: str) -> list[dict[str, Any]]:
    """One `hvdweather-train` run (one process) from `data`; its per-epoch times from metrics.jsonl."""
    run_dir = Path(spec.out) / "work" / f"train-{source}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: metrics.jsonl must not append to an old one
    command = [tool("hvdweather-train"), "--data", data, "--out", str(run_dir), "--epochs", str(spec.train_epochs),
               "--batch-size", str(spec.batch_size), "--image-size", str(spec.image_size), "--verbose", "0"]
    run_command(command, Path(spec.out) / "logs" / f"train-{source}.log", spec.timeout_s)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{"part": "train", "source": source, "epoch": m["epoch"], "epoch_time_s": m["epoch_time_s"],
             "train_time_s": m["train_time_s"], "images_per_s": m["images_per_s"]}
            for m in map(json.loads, lines)]


def measure_training(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """prepare (all cores), then train from the shards and from the class folders, same flags."""
    prepared = Path(spec.out) / "work" / "train-prepared-data"
    command = [tool("hvdweather-prepare"), spec.data, "--out", str(prepared), "--image-size",
               str(spec.image_size), "--executor", "multiprocessing", "--workers", str(available_cores()),
               "--no-progress"]
    wall_s = run_command(command, Path(spec.out) / "logs" / "train-prepare.log", spec.timeout_s)
    timings, _ = stage_result("prepare", prepared)
    rows = [append_row(spec, {"part": "train", "source": "prepare", **timings, "wall_s": wall_s,
                              "workers": available_cores()})]
    for source, data in (("shards", str(prepared)), ("folders", spec.data)):
        rows += [append_row(spec, row) for row in train_once(spec, source, data)]
        print(f"  trained {spec.train_epochs} epochs from {source}", flush=True)
    return rows


def scaling_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median per stage x backend x workers, with speed-up and efficiency against sequential."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if row["part"] == "scaling":
            groups.setdefault((row["stage"], row["backend"], row["workers"]), []).append(row)
    table = []
    for (stage, backend, workers), runs in groups.items():
        times = [r["time_s"] for r in runs]
        table.append({"stage": stage, "backend": backend, "workers": workers, "cores": runs[0]["cores"],
                      "oversubscribed": runs[0]["oversubscribed"], "repeats": len(runs),
                      "time_s": statistics.median(times), "time_min_s": min(times), "time_max_s": max(times),
                      "wall_s": statistics.median(r["wall_s"] for r in runs),
                      "tensorflow_import_s": _median_or_none([r.get("tensorflow_import_s") for r in runs]),
                      "same_result": all(r["same_result"] for r in runs)})
    base = {r["stage"]: r["time_s"] for r in table if r["backend"] == "sequential"}
    for row in table:
        row["speedup"] = base[row["stage"]] / row["time_s"]
        row["efficiency"] = row["speedup"] / row["workers"]
    return table


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


CSV_COLUMNS = ("stage", "backend", "workers", "cores", "oversubscribed", "repeats", "time_s", "time_min_s",
               "time_max_s", "wall_s", "tensorflow_import_s", "speedup", "efficiency", "same_result")


def scaling_markdown(table: list[dict[str, Any]], images: int) -> str:
    """The seeds' table shape: time, speed-up and efficiency per backend and worker count."""
    lines = []
    for stage, title in (("eda", "EDA (per-class RGB histograms and statistics)"),
                         ("prepare", "prepare (decode + resize + TFRecord shards)")):
        rows = [r for r in table if r["stage"] == stage]
        if not rows:
            continue
        tf_column = stage == "prepare"  # each prepare process imports TensorFlow once, inside the time
        lines += [f"**{title}**, {images} images, {rows[0]['cores']} cores, median of {rows[0]['repeats']}", "",
                  "| backend | workers | time (s) | speed-up vs sequential | efficiency |"
                  + (" of which TF import (s) |" if tf_column else "") + " note |",
                  "|---|---:|---:|---:|---:|" + ("---:|" if tf_column else "") + "---|"]
        for r in rows:
            note = "baseline" if r["backend"] == "sequential" else ""
            note = "oversubscribed" if r["oversubscribed"] else note
            note += "" if r["same_result"] else " RESULT DIFFERS"
            tf_cell = f" {r['tensorflow_import_s']:.2f} |" if tf_column else ""
            lines.append(f"| {r['backend']} | {r['workers']} | {r['time_s']:.2f} | {r['speedup']:.2f} "
                         f"| {r['efficiency']:.2f} |{tf_cell} {note.strip()} |")
        lines.append("")
    return "\n".join(lines)


def kernel_markdown(rows: list[dict[str, Any]]) -> str:
    """Each kernel vs the seeds' kernel, same images, medians; speed-up > 1 means faster than the seeds'."""
    keys = list(dict.fromkeys((r["scope"], r["method"]) for r in rows))  # first-seen order: seeds first
    medians = {key: statistics.median(r["time_s"] for r in rows if (r["scope"], r["method"]) == key)
               for key in keys}
    images = rows[0]["images"]
    lines = [f"**histogram kernel**, {images} images, median of {len({r['repeat'] for r in rows})}; "
             f"same totals as the seeds' kernel: {'yes' if all(r['same_result'] for r in rows) else 'NO'}", "",
             "| kernel | scope | time (s) | ms / image | speed-up vs seeds' kernel |", "|---|---|---:|---:|---:|"]
    for scope, method in keys:
        seconds = medians[(scope, method)]
        lines.append(f"| {method} | {scope} | {seconds:.3f} | {1000 * seconds / images:.2f} "
                     f"| {medians[(scope, SEEDS)] / seconds:.2f} |")
    return "\n".join(lines) + "\n"


def train_markdown(rows: list[dict[str, Any]]) -> str:
    """Epoch 1 vs epoch 2 training from prepared shards and from class folders (decode on the fly).

    Training traces its graph before fit, so epoch 1 - epoch 2 is filling the cache: decoding from
    folders, reading the records from shards; the difference of the differences is the decode left.
    """
    prepare = next(r for r in rows if r["source"] == "prepare")
    lines = [f"**prepare + train** (prepare: {prepare['time_s']:.2f} s on {prepare['workers']} workers; one "
             "training process; the graph is traced before epoch 1, so it is not in these times)", "",
             "| training data | epoch 1 train (s) | epoch 2 train (s) | epoch 1 / epoch 2 | epoch 1 - epoch 2 (s) |",
             "|---|---:|---:|---:|---:|"]
    for source, label in (("shards", "prepared shards"), ("folders", "class folders, decoded on the fly")):
        epochs = {r["epoch"]: r["train_time_s"] for r in rows if r["source"] == source}
        if 1 in epochs and 2 in epochs:
            lines.append(f"| {label} | {epochs[1]:.2f} | {epochs[2]:.2f} | {epochs[1] / epochs[2]:.2f} "
                         f"| {epochs[1] - epochs[2]:.2f} |")
    return "\n".join(lines) + "\n"


def plot_speedup(table: list[dict[str, Any]], path: Path) -> None:
    """Speed-up vs workers per backend, one panel per stage, with the ideal line and the core count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if any(r["stage"] == s for r in table)]
    figure, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = [r for r in table if r["stage"] == stage]
        top = max(r["workers"] for r in rows)
        ax.plot([1, top], [1, top], "k--", linewidth=1, label="ideal")
        ax.axvline(rows[0]["cores"], color="grey", linestyle=":", label=f"{rows[0]['cores']} cores")
        for backend in sorted({r["backend"] for r in rows} - {"sequential"}):
            mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["workers"])
            ax.plot([r["workers"] for r in mine], [r["speedup"] for r in mine], "o-", label=backend)
        ax.set_title(f"{stage}: speed-up vs sequential", fontsize=10)
        ax.set_xlabel("workers (processes / ranks)")
        ax.set_ylabel("speed-up")
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_tables(spec: EdaBenchSpec, rows: list[dict[str, Any]], images: int) -> str:
    """eda_scaling.csv, eda_scaling.md and eda_speedup.png from the measurement rows; the markdown."""
    import csv

    out, parts = Path(spec.out), []
    table = scaling_summary(rows)
    if table:
        with open(out / "eda_scaling.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows({k: r[k] for k in CSV_COLUMNS} for r in table)
        plot_speedup(table, out / "eda_speedup.png")
        parts.append(scaling_markdown(table, images))
    kernel_rows = [r for r in rows if r["part"] == "kernel"]
    if kernel_rows:
        parts.append(kernel_markdown(kernel_rows))
    train_rows = [r for r in rows if r["part"] == "train"]
    if train_rows:
        parts.append(train_markdown(train_rows))
    markdown = "\n".join(parts)
    (out / "eda_scaling.md").write_text(markdown)
    return markdown


def run_eda_bench(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """Measure the chosen parts, write the tables and plot, print the tables; the rows."""
    import platform

    from hvdweather.data.discovery import discover

    check_spec(spec)
    (Path(spec.out) / "results.jsonl").unlink(missing_ok=True)
    images = len(discover(spec.data).paths)
    print(f"hvdweather-bench eda: {images} images in {spec.data}; {available_cores()} cores; "
          f"{spec.repeats} repeat(s); {platform.processor() or platform.machine()}", flush=True)
    rows: list[dict[str, Any]] = []
    if "scaling" in spec.parts:
        rows += measure_scaling(spec)
    if "kernel" in spec.parts:
        rows += measure_kernel(spec)
    if "train" in spec.parts:
        rows += measure_training(spec)
    print(write_tables(spec, rows, images), flush=True)
    print(f"wrote {spec.out}/results.jsonl, eda_scaling.csv, eda_scaling.md, eda_speedup.png", flush=True)
    return rows
