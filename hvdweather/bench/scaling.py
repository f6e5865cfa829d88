"""Scaling benchmark, running part: Horovod, MirroredStrategy and PyTorch DDP epoch times over workers x
per-worker batch sizes, one command. The tables and plots are built by hvdweather.bench.scaling_report.

    hvdweather-bench scaling --data DIR --strategies horovod,mirrored,torch-ddp --workers 1,2 \\
        --batch-sizes 32,64,128 --epochs 4 --out bench/scaling

Every combination runs as its own process tree, so no run inherits another's threads, caches or graphs:
Horovod as `horovodrun -np N hvdweather-train ...`, mirrored as one `hvdweather-train --strategy mirrored
--replicas N` process, torch-ddp as `python -m hvdweather.bench.torch_ddp --workers N ...` (the same CNN
in PyTorch DDP, as a reference). Every worker gets the same number of threads in every run
(cores // max workers unless --threads-per-worker), so adding a worker adds cores, as adding a GPU would.
The baseline row is the plain single process on all cores: what a user runs without any of them.

--onednn (on, off, auto) goes to every TensorFlow run; before the runs, the CNN's training FLOPs per image
and the float32 matmul rate on every total thread count are measured (hvdweather.bench.compute), so each
row shows its achieved GFLOP/s and their share of that rate (--no-compute skips it).

Written to --out: results.jsonl (one line per run: what was measured), scaling.csv (plus speed-up,
efficiency, ratios and GFLOP/s), scaling.md (the tables, also printed), epoch_time.png, speedup.png,
machine.json (with oneDNN as asked and as the runs ran it, FLOPs and matmul rates), logs/<run>.log and
runs/<run>/ (each run's own run directory).
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.bench.scaling_report import BASELINE, write_outputs
from hvdweather.bench.spec import check_train_flags, config_per_worker_batch, list_field
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import ONEDNN_MODES
from hvdweather.launch import executable, last_log_line, launch
from hvdweather.runfiles import first_epoch_reaching, median_after_first, read_json, read_jsonl, timed_epochs


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run: a strategy at a worker count and per-worker batch size."""

    strategy: str  # a key of RUNNERS: horovod, mirrored, torch-ddp or single (the baseline)
    workers: int  # processes (horovod, torch-ddp) or replicas in one process (mirrored)
    per_worker_batch_size: int
    threads_per_worker: int

    @property
    def name(self) -> str:
        return f"{self.strategy}-w{self.workers}-b{self.per_worker_batch_size}"

    @property
    def global_batch_size(self) -> int:
        return self.workers * self.per_worker_batch_size


@dataclass(frozen=True)
class Runner:
    """How one strategy is launched and what its metrics.jsonl must say."""

    command: Callable[[ScalingSpec, RunSpec], list[str]]  # the exact command line of a run
    one_process: bool  # all workers live in one process (the `processes` column is 1)
    reports_as: str  # the strategy that run's metrics.jsonl carries
    unavailable: Callable[[ScalingSpec], str] = lambda spec: ""  # why it cannot run here ('' = it can)


def train_args(spec: ScalingSpec, run: RunSpec) -> list[str]:
    """hvdweather-train's flags for one run. --overwrite: train refuses a --out that holds a run, and a
    re-run of the benchmark must replace its old run, never mix epochs of two runs in metrics.jsonl."""
    args = ["--data", spec.data, "--out", str(run_paths(spec, run)["run_dir"]), "--overwrite",
            "--epochs", str(spec.epochs), "--batch-size", str(run.per_worker_batch_size),
            "--image-size", str(spec.image_size), "--threads-per-worker", str(run.threads_per_worker),
            "--seed", str(spec.seed), "--verbose", "2"]
    if spec.onednn in ONEDNN_MODES:  # the benchmark's own --onednn, so "auto" reaches the runs as well
        args += ["--onednn", spec.onednn]
    return args + (["--target-accuracy", str(spec.target_accuracy)] if spec.target_accuracy > 0 else [])


def horovod_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    # horovodrun's own flag: it rejects the train flag `--timeline` after the command as an ambiguous
    # abbreviation of its --timeline-filename/--timeline-mark-cycles (argparse).
    timeline = ["--timeline-filename", str(run_paths(spec, run)["timeline"])] if spec.timeline else []
    return [executable("horovodrun", spec.launcher, "--launcher"), "-np", str(run.workers), *timeline,
            executable("hvdweather-train"), *train_args(spec, run)]


def mirrored_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    return [executable("hvdweather-train"), "--strategy", "mirrored", "--replicas", str(run.workers),
            *train_args(spec, run)]


def single_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    return [executable("hvdweather-train"), *train_args(spec, run)]  # no launcher: one process, all cores


def torch_ddp_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    # The module spawns its own N processes, so no launcher; this Python, so it sees the same packages.
    return [sys.executable, "-m", "hvdweather.bench.torch_ddp", "--data", spec.data,
            "--out", str(run_paths(spec, run)["run_dir"]), "--workers", str(run.workers),
            "--batch-size", str(run.per_worker_batch_size), "--epochs", str(spec.epochs),
            "--image-size", str(spec.image_size), "--seed", str(spec.seed),
            "--threads-per-worker", str(run.threads_per_worker)]


def torch_missing(spec: ScalingSpec) -> str:
    """Checked in this (parent) process: without torch every rank would die on its import."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; torch-ddp needs it: pip install -e .[torch]"
    return ""


# Adding a strategy is one entry here (and its name is accepted by --strategies).
STRATEGIES: dict[str, Runner] = {
    "horovod": Runner(horovod_command, one_process=False, reports_as="horovod"),
    "mirrored": Runner(mirrored_command, one_process=True, reports_as="mirrored"),
    "torch-ddp": Runner(torch_ddp_command, one_process=False, reports_as="torch-ddp", unavailable=torch_missing),
}
# The baseline is launched like a run but chosen by --baseline, not --strategies; train reports it as horovod.
RUNNERS: dict[str, Runner] = {**STRATEGIES, BASELINE: Runner(single_command, True, "horovod")}


@dataclass(frozen=True)
class ScalingSpec:
    """What `hvdweather-bench scaling` runs; one field per flag."""

    data: str  # class-folder data set every run trains on
    out: str = "bench/scaling"  # results, tables, plots, logs and run directories
    strategies: tuple[str, ...] = list_field(("horovod", "mirrored"), "--strategies", tuple(STRATEGIES))
    workers: tuple[int, ...] = list_field((1, 2), "--workers")  # processes, or mirrored replicas
    per_worker_batch_sizes: tuple[int, ...] = list_field((32, 64, 128), "--batch-sizes")
    epochs: int = 4  # per run; epoch 1 is warm-up and excluded from the timings
    image_size: int = 256  # passed to hvdweather-train
    threads_per_worker: int = 0  # TF threads per worker in every run (0 = cores // max workers)
    target_accuracy: float = 0.5  # epochs-to-target: first epoch with val_accuracy >= this (0 = off)
    timeline: bool = False  # Horovod runs write a timeline to timelines/<run>.json (profiling only)
    per_run_timeout_s: float = 900.0  # a run still going after this is killed and reported
    baseline: bool = True  # also run the plain single process on all cores
    seed: int = 42  # same split and initial weights in every run
    launcher: str = ""  # horovodrun to use ("" = the one next to this Python)
    onednn: str = ""  # --onednn of every TensorFlow run (on, off, auto; "" = as the environment has it)
    compute: bool = True  # measure the model's FLOPs and the matmul rate per thread count (machine.json)

    def check(self) -> None:
        """Every check that can fail in seconds, so a bad flag never costs a run."""
        from hvdweather.data.discovery import discover

        for batch in self.per_worker_batch_sizes:  # the training config's own rules, per grid cell
            check_train_flags(batch, epochs=self.epochs, image_size=self.image_size, seed=self.seed,
                              threads_per_worker=self.threads_per_worker, target_accuracy=self.target_accuracy)
        if not self.per_run_timeout_s > 0:
            raise ConfigError(f"--per-run-timeout must be > 0 seconds, got {self.per_run_timeout_s}")
        discover(self.data)  # DataError names --data
        executable("hvdweather-train")
        if "horovod" in self.strategies:
            executable("horovodrun", self.launcher, "--launcher")
        check_output_dir(self.out, subdirs=("logs",))


def plan_runs(spec: ScalingSpec, cores: int) -> list[RunSpec]:
    """Every strategy x workers x batch size, then one all-cores baseline per batch size."""
    threads = spec.threads_per_worker or max(1, cores // max(spec.workers))
    runs = [RunSpec(strategy, workers, batch, threads) for batch in spec.per_worker_batch_sizes
            for strategy in spec.strategies for workers in spec.workers]
    if spec.baseline:
        runs += [RunSpec(BASELINE, 1, batch, cores) for batch in spec.per_worker_batch_sizes]
    return runs


def run_paths(spec: ScalingSpec, run: RunSpec) -> dict[str, Path]:
    out = Path(spec.out)
    return {"run_dir": out / "runs" / run.name, "log": out / "logs" / f"{run.name}.log",
            "timeline": out / "timelines" / f"{run.name}.json"}


def build_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    """The exact command line of one run (it goes into its log and results line)."""
    return RUNNERS[run.strategy].command(spec, run)


def summarize_metrics(rows: list[dict[str, Any]], target_accuracy: float) -> dict[str, Any]:
    """Medians over the timed epochs (all but epoch 1, the warm-up, when there is more than one)."""
    timed = timed_epochs(rows)
    # The whole epoch (metrics.jsonl's phases: checkpoint writes and every callback too), which epoch_time_s
    # (up to the metrics row) leaves out; None for runs that do not record phases (torch-ddp, older runs).
    whole = [r["phases"]["epoch_s"] for r in timed if isinstance(r.get("phases"), dict) and "epoch_s" in r["phases"]]
    return {"timed_epochs": len(timed), "epoch_time_s": median_after_first(rows, "epoch_time_s"),
            "full_epoch_s": statistics.median(whole) if len(whole) == len(timed) else None,
            "train_time_s": median_after_first(rows, "train_time_s"), "images_per_s": median_after_first(rows),
            "final_val_accuracy": rows[-1].get("val_accuracy"),
            "epochs_to_target": first_epoch_reaching(rows, target_accuracy)}


def check_metrics(rows: list[dict[str, Any]], run: RunSpec, epochs: int, config: dict[str, Any] | None) -> str:
    """'' if the run directory holds what this run should have written, else why not."""
    expected = RUNNERS[run.strategy].reports_as
    if len(rows) != epochs:
        return f"metrics.jsonl has {len(rows)} epoch line(s), expected {epochs}"
    wrong = [r for r in rows if r.get("world_size") != run.workers or r.get("strategy") != expected]
    if wrong:
        return (f"metrics.jsonl says {wrong[0].get('strategy')} with world_size {wrong[0].get('world_size')}, "
                f"expected {expected} with {run.workers}")
    batch = config_per_worker_batch(config)
    if batch is not None and batch != run.per_worker_batch_size:
        return f"config.json says per-worker batch {batch}, expected {run.per_worker_batch_size}"
    return ""


def cell_line(run: RunSpec, epochs: int) -> dict[str, Any]:
    """The results.jsonl fields that follow from the grid cell alone (shared with bench.collect)."""
    return {"run": run.name, "strategy": run.strategy, "workers": run.workers,
            "processes": 1 if RUNNERS[run.strategy].one_process else run.workers,
            "threads_per_worker": run.threads_per_worker,
            "total_threads": run.threads_per_worker * run.workers,
            "per_worker_batch_size": run.per_worker_batch_size, "global_batch_size": run.global_batch_size,
            "epochs": epochs, "timeline": None}


def finish_line(line: dict[str, Any], problem: str, run_dir: Path, run: RunSpec, epochs: int,
                target_accuracy: float) -> dict[str, Any]:
    """Add status, error and (for good runs) the metric summary: the same verdict for every source."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    problem = problem or check_metrics(rows, run, epochs, read_complete_json(run_dir / "config.json"))
    line.update(status="ok" if not problem else "failed", error=problem or None)
    if not problem:
        line.update(summarize_metrics(rows, target_accuracy))
    return line


def read_complete_json(path: Path) -> Any:
    """A run's JSON file (config.json, job.json), or None when absent or cut short (killed while writing)."""
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def execute_run(spec: ScalingSpec, run: RunSpec, cores: int) -> dict[str, Any]:
    """Run one combination and return its results line; failures are recorded, never raised."""
    paths = run_paths(spec, run)
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    timeline = spec.timeline and run.strategy == "horovod"
    if timeline:
        paths["timeline"].parent.mkdir(parents=True, exist_ok=True)
    line = {**cell_line(run, spec.epochs), "cores": cores, "log": str(paths["log"]),
            "run_dir": str(paths["run_dir"]), "timeline": str(paths["timeline"]) if timeline else None}
    missing = RUNNERS[run.strategy].unavailable(spec)
    if missing:  # fail this row in one line, without starting processes that would all die on an import
        paths["log"].write_text(missing + "\n")
        return {**line, "returncode": None, "wall_s": 0.0, "command": None, "status": "failed", "error": missing}
    command = build_command(spec, run)
    code, wall_s = launch(command, paths["log"], spec.per_run_timeout_s)
    line.update(returncode=code, wall_s=round(wall_s, 3), command=shlex.join(command))
    problem = "" if code == 0 else (f"timed out after {spec.per_run_timeout_s:g} s" if code is None
                                    else last_log_line(paths["log"]))
    line = finish_line(line, problem, paths["run_dir"], run, spec.epochs, spec.target_accuracy)
    if code is None:  # killed at the timeout: that is its status, whatever its run directory holds
        line["status"] = "timeout"
    return line


def run_scaling(spec: ScalingSpec) -> list[dict[str, Any]]:
    """Run every combination one after another, write all outputs, print the tables."""
    spec.check()
    machine = machine_info()
    out = Path(spec.out)
    runs = plan_runs(spec, machine["cores"])
    if spec.compute:  # before the runs: the matmul rate of an otherwise idle machine
        machine |= measure_compute(spec, runs)
    write_machine(out, machine)
    results_file = out / "results.jsonl"
    results_file.write_text("")
    results = []
    for index, run in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {run.name}: {shlex.join(build_command(spec, run))}", flush=True)
        line = {**execute_run(spec, run, machine["cores"]), "host": machine["host"]}
        results.append(line)
        with results_file.open("a") as handle:  # appended per run: a killed benchmark keeps what it has
            handle.write(json.dumps(line) + "\n")
        print(f"    {_progress(line)}", flush=True)
    machine["onednn_ran"] = onednn_ran(spec, runs)
    write_machine(out, machine)
    print(write_outputs(results, machine, spec), flush=True)
    print(f"wrote {results_file}, scaling.csv, scaling.md, epoch_time.png, speedup.png in {out}")
    return results


def measure_compute(spec: ScalingSpec, runs: list[RunSpec]) -> dict[str, Any]:
    """The weather CNN's training FLOPs per image and the float32 matmul rate at every total thread count
    the runs use (hvdweather.bench.compute); a failure is recorded, and the tables go without it."""
    from hvdweather.bench.compute import compute_limit
    from hvdweather.data.discovery import discover

    classes = len(discover(spec.data).class_names)
    threads = [run.threads_per_worker * run.workers for run in runs]
    print(f"measuring the compute limit: FLOPs per image, float32 matmul on {sorted(set(threads))} thread(s)",
          flush=True)
    try:
        return compute_limit("weather_cnn", spec.image_size, classes, threads)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"    compute limit not measured: {exc}", flush=True)
        return {"compute_error": str(exc)}


def onednn_ran(spec: ScalingSpec, runs: list[RunSpec]) -> list[str]:
    """on/off as the TensorFlow runs' config.json recorded it (what TensorFlow ran, not what was asked)."""
    ran = set()
    for run in runs:
        if run.strategy != "torch-ddp":
            record = read_complete_json(run_paths(spec, run)["run_dir"] / "config.json") or {}
            if record.get("onednn"):
                ran.add(record["onednn"])
    return sorted(ran)


def _progress(line: dict[str, Any]) -> str:
    if line["status"] != "ok":
        return f"{line['status'].upper()}: {line['error']} (log: {line['log']})"
    return (f"ok: {line['train_time_s']:.2f} s/epoch (median, epoch 1 excluded), "
            f"{line['images_per_s']:.1f} images/s, wall {line['wall_s']:.0f} s")
