"""Scaling benchmark, what it runs: the flags (ScalingSpec), the grid of runs and each strategy's exact command
line. Running them and reading their results is hvdweather.bench.scaling; the report, bench.scaling_report."""
from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvdweather.bench.scaling_report import BASELINE
from hvdweather.bench.spec import check_train_flags, list_field
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.host import ONEDNN_MODES
from hvdweather.launch import executable


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
