"""EDA and prepare benchmark, measuring part: each executor at each worker count, the histogram kernel
against the reference PyTorch project's PIL kernel, and training from prepared shards against decoding on
the fly, in one run. The tables and plot are built by hvdweather.bench.eda_report.

    hvdweather-bench eda --data DIR --executors sequential,multiprocessing,mpi --processes 1,2,4 \\
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

from hvdweather.bench.eda_kernels import (
    NUMPY,
    OURS,
    histogram_only_pass,
    kernel_sample,
    numpy_kernel_pass,
    ours_kernel_pass,
    reference_kernel_pass,
)
from hvdweather.bench.eda_report import REFERENCE, STAGES, write_tables
from hvdweather.bench.machine import machine_info, machine_line, write_machine
from hvdweather.bench.spec import check_train_flags, list_field
from hvdweather.eda.executors import EXECUTORS  # --executors: the EDA executors to time
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import available_cores
from hvdweather.launch import executable, launch

PARTS = ("scaling", "kernel", "train")


@dataclass(frozen=True)
class EdaBenchSpec:
    """What `hvdweather-bench eda` runs; one field per flag."""

    data: str  # class-folder data set
    out: str = "bench/eda"  # results, tables, plot, logs and the runs' outputs
    # sequential always runs too; spark (an extra) only when asked for
    executors: tuple[str, ...] = list_field(("sequential", "multiprocessing", "mpi"), "--executors", EXECUTORS)
    processes: tuple[int, ...] = list_field((1, 2, 4), "--processes")  # pool processes or mpirun ranks
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
        if "mpi" in self.executors and "scaling" in self.parts:
            executable("mpirun", flag="--executors mpi", hint=" (install openmpi-bin)")
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
    """One timed configuration: a stage (eda or prepare) on an EDA executor with some workers."""

    stage: str
    executor: str  # a key of hvdweather.eda.executors.EXECUTORS
    workers: int

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.executor}-w{self.workers}"


def plan_scaling(spec: EdaBenchSpec) -> list[StageRun]:
    """The sequential baseline, then every other executor at every worker count, for both stages."""
    runs = []
    for stage in STAGES:
        runs.append(StageRun(stage, "sequential", 1))
        runs += [StageRun(stage, executor, workers) for executor in spec.executors if executor != "sequential"
                 for workers in spec.processes]
    return runs


def stage_command(spec: EdaBenchSpec, run: StageRun, out_dir: Path) -> list[str]:
    """The exact command line of one run (also written at the top of its log)."""
    args = [executable(f"hvdweather-{run.stage}"), spec.data, "--out", str(out_dir), "--executor", run.executor,
            "--no-progress"]
    args += ["--no-plots"] if run.stage == "eda" else ["--image-size", str(spec.image_size)]
    if run.executor == "multiprocessing":
        args += ["--processes", str(run.workers)]
    if run.executor == "mpi":  # --oversubscribe: worker counts above the core count are part of the table
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
                "part": "scaling", "stage": run.stage, "backend": run.executor, "workers": run.workers,
                "repeat": repeat, **timings, "wall_s": wall_s, "cores": cores,
                "oversubscribed": run.workers > cores, "same_result": digest == reference[run.stage]}))
            print(f"  {run.name} repeat {repeat + 1}/{spec.repeats}: {timings['time_s']:.2f} s", flush=True)
    return rows


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
