"""EDA and prepare benchmark, measuring part: each executor at each worker count, the histogram kernel
against the reference PyTorch project's PIL kernel, and training from prepared shards against decoding on
the fly, in one run. The tables and plot are built by hvdweather.bench.eda_report.

    hvdweather-bench eda --data DIR --backends sequential,multiprocessing,mpi --workers 1,2,4 \\
        --out bench/eda [--repeats 3 --image-size 256 --kernel-images 100 --train-epochs 2]

Every EDA and prepare run is its own process tree (`hvdweather-eda ...`, `mpirun -np N
hvdweather-eda ... --executor mpi`), and repeats are interleaved across configurations so a burst of
load on the machine does not land on one row. A run's time is the stage's own clock (listing the
files, starting the pool or reaching the first MPI barrier, computing, combining; not the Python
start-up or writing the outputs), read from its summary.json / prepared.json; the wall time of the
whole command is recorded too. Speed-up and efficiency are against the sequential executor measured
in the same run. Worker counts above the core count run (mpirun gets --oversubscribe) and are marked.
The results lines keep the key "backend" for the executor, so older results.jsonl files still read.

Written to --out: results.jsonl (one line per measurement), eda_scaling.csv and eda_scaling.md (the
tables, also printed), eda_speedup.png, machine.json, logs/<run>.log, and work/ (the runs' own outputs).
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdweather.bench.eda_report import REFERENCE, STAGES, write_tables
from hvdweather.bench.machine import machine_info, machine_line, write_machine
from hvdweather.bench.spec import check_train_flags, list_field
from hvdweather.eda.executors import EXECUTORS  # --backends: the EDA executors to time
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import available_cores
from hvdweather.launch import executable, launch

PARTS = ("scaling", "kernel", "train")


@dataclass(frozen=True)
class EdaBenchSpec:
    """What `hvdweather-bench eda` runs; one field per flag."""

    data: str  # class-folder data set
    out: str = "bench/eda"  # results, tables, plot, logs and the runs' outputs
    backends: tuple[str, ...] = list_field(EXECUTORS, "--backends", EXECUTORS)  # sequential always runs too
    workers: tuple[int, ...] = list_field((1, 2, 4), "--workers")  # processes (multiprocessing) or ranks (mpi)
    repeats: int = 3  # runs per configuration; tables show the median
    image_size: int = 256  # prepare and training image size
    kernel_images: int = 100  # images the kernel comparison uses (evenly spaced over the data)
    train_epochs: int = 2  # epochs of each training run (epoch 1 vs epoch 2 needs >= 2)
    per_worker_batch_size: int = 16  # flag --batch-size: batch of the (one-process) training runs
    parts: tuple[str, ...] = list_field(PARTS, "--parts", PARTS)  # scaling (eda + prepare), kernel, train
    timeout_s: float = 900.0  # a run still going after this is killed and the benchmark stops

    def check(self) -> None:
        """Everything that can fail in seconds, before the first run."""
        from hvdweather.data.discovery import discover

        for flag, value in (("--repeats", self.repeats), ("--kernel-images", self.kernel_images),
                            ("--image-size", self.image_size)):
            if value < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {value}")
        if "train" in self.parts:
            if self.train_epochs < 2:
                raise ConfigError(f"--train-epochs must be >= 2 to compare epoch 1 with epoch 2, "
                                  f"got {self.train_epochs}")
            check_train_flags(self.per_worker_batch_size, epochs=self.train_epochs, image_size=self.image_size)
        discover(self.data)  # DataError names --data
        for stage in ("eda", "prepare", "train"):
            executable(f"hvdweather-{stage}")
        if "mpi" in self.backends and "scaling" in self.parts:
            executable("mpirun", flag="--backends mpi", hint=" (install openmpi-bin)")
        check_output_dir(self.out, subdirs=("logs",))


def run_command(command: list[str], log: Path, timeout_s: float) -> float:
    """Run `command` (see `hvdweather.launch`); wall seconds. Raises if it fails or times out."""
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
    args = [executable(f"hvdweather-{run.stage}"), spec.data, "--out", str(out_dir), "--executor", run.backend,
            "--no-progress"]
    args += ["--no-plots"] if run.stage == "eda" else ["--image-size", str(spec.image_size)]
    if run.backend == "multiprocessing":
        args += ["--processes", str(run.workers)]
    if run.backend == "mpi":  # --oversubscribe: worker counts above the core count are part of the table
        return [executable("mpirun"), "--oversubscribe", "--bind-to", "none", "-np", str(run.workers), *args]
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


def reference_kernel_pass(paths: list[str]) -> np.ndarray:
    """The reference PyTorch project's EDA loop: PIL convert, `getchannel(c).histogram()` per channel,
    lists summed at the end."""
    from PIL import Image

    histograms: dict[str, list[list[int]]] = {"R": [], "G": [], "B": []}
    for path in paths:
        with Image.open(path) as img:
            img_rgb = img.convert("RGB")
            for channel, color in zip(range(3), ["R", "G", "B"]):
                histograms[color].append(img_rgb.getchannel(channel).histogram())
    return np.array([[sum(x) for x in zip(*histograms[color])] for color in "RGB"], np.int64)


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

    The reference kernel keeps its per-channel lists and sums them at the end, as the reference project did.
    """
    from PIL import Image

    from hvdweather.eda.kernel import bincount_histograms, rgb_histograms

    seconds = {REFERENCE: 0.0, OURS: 0.0, NUMPY: 0.0}
    lists: dict[int, list[list[int]]] = {0: [], 1: [], 2: []}
    ours, numpy_total = np.zeros((3, 256), np.int64), np.zeros((3, 256), np.int64)
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")  # a decoded copy that outlives the file
        pixels = np.asarray(rgb)
        start = time.perf_counter()
        for channel in range(3):
            lists[channel].append(rgb.getchannel(channel).histogram())
        reference_end = time.perf_counter()
        ours += rgb_histograms(rgb)
        ours_end = time.perf_counter()
        numpy_total += bincount_histograms(pixels)
        seconds[REFERENCE] += reference_end - start
        seconds[OURS] += ours_end - reference_end
        seconds[NUMPY] += time.perf_counter() - ours_end
    start = time.perf_counter()
    combined = [[sum(x) for x in zip(*lists[channel])] for channel in range(3)]  # the reference project's combine step
    seconds[REFERENCE] += time.perf_counter() - start
    return seconds, ours.tolist() == combined == numpy_total.tolist()


def _timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def measure_kernel(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """The three kernels on the same images, `repeats` times, decode included and histogram step alone."""
    paths, rows = kernel_sample(spec.data, spec.kernel_images), []
    for repeat in range(spec.repeats):
        reference_s, reference_total = _timed(reference_kernel_pass, paths)
        timings = [(REFERENCE, "decode + histogram", reference_s, True)]
        for name, kernel_pass in ((OURS, ours_kernel_pass), (NUMPY, numpy_kernel_pass)):
            seconds, total = _timed(kernel_pass, paths)
            timings.append((name, "decode + histogram", seconds, bool(np.array_equal(total, reference_total))))
        alone, same = histogram_only_pass(paths)
        timings += [(name, "histogram only", seconds, same) for name, seconds in alone.items()]
        for method, scope, seconds, ok in timings:
            rows.append(append_row(spec, {"part": "kernel", "method": method, "scope": scope, "repeat": repeat,
                                          "time_s": seconds, "images": len(paths), "same_result": ok}))
    return rows


def train_once(spec: EdaBenchSpec, source: str, data: str) -> list[dict[str, Any]]:
    """One `hvdweather-train` run (one process) from `data`; its per-epoch times from metrics.jsonl."""
    run_dir = Path(spec.out) / "work" / f"train-{source}"
    # --overwrite: a re-run of the benchmark replaces its old run instead of being refused by train.
    command = [executable("hvdweather-train"), "--data", data, "--out", str(run_dir), "--overwrite",
               "--epochs", str(spec.train_epochs), "--batch-size", str(spec.per_worker_batch_size),
               "--image-size", str(spec.image_size), "--verbose", "0"]
    run_command(command, Path(spec.out) / "logs" / f"train-{source}.log", spec.timeout_s)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{"part": "train", "source": source, "epoch": m["epoch"], "epoch_time_s": m["epoch_time_s"],
             "train_time_s": m["train_time_s"], "images_per_s": m["images_per_s"]}
            for m in map(json.loads, lines)]


def measure_training(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """prepare (all cores), then train from the shards and from the class folders, same flags."""
    prepared = Path(spec.out) / "work" / "train-prepared-data"
    command = [executable("hvdweather-prepare"), spec.data, "--out", str(prepared), "--image-size",
               str(spec.image_size), "--executor", "multiprocessing", "--processes", str(available_cores()),
               "--no-progress"]
    wall_s = run_command(command, Path(spec.out) / "logs" / "train-prepare.log", spec.timeout_s)
    timings, _ = stage_result("prepare", prepared)
    rows = [append_row(spec, {"part": "train", "source": "prepare", **timings, "wall_s": wall_s,
                              "workers": available_cores()})]
    for source, data in (("shards", str(prepared)), ("folders", spec.data)):
        rows += [append_row(spec, row) for row in train_once(spec, source, data)]
        print(f"  trained {spec.train_epochs} epochs from {source}", flush=True)
    return rows


def run_eda_bench(spec: EdaBenchSpec) -> list[dict[str, Any]]:
    """Measure the chosen parts, write the tables and plot, print the tables; the rows."""
    from hvdweather.data.discovery import discover

    spec.check()
    (Path(spec.out) / "results.jsonl").unlink(missing_ok=True)
    images = len(discover(spec.data).paths)
    machine = machine_info()
    write_machine(spec.out, machine)
    print(f"hvdweather-bench eda: {images} images in {spec.data}; {spec.repeats} repeat(s)\n"
          f"{machine_line(machine)}", flush=True)
    rows: list[dict[str, Any]] = []
    if "scaling" in spec.parts:
        rows += measure_scaling(spec)
    if "kernel" in spec.parts:
        rows += measure_kernel(spec)
    if "train" in spec.parts:
        rows += measure_training(spec)
    print(write_tables(spec, rows, images, machine), flush=True)
    print(f"wrote {spec.out}/results.jsonl, eda_scaling.csv, eda_scaling.md, eda_speedup.png, machine.json",
          flush=True)
    return rows
