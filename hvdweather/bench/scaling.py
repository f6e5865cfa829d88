"""Scaling benchmark: Horovod vs MirroredStrategy epoch times over workers x batch sizes, one command.

    hvdweather-bench scaling --data DIR --strategies horovod,mirrored --workers 1,2 \\
        --batch-sizes 32,64,128 --epochs 4 --out bench/scaling

Every combination runs as its own process tree, so no run inherits another's threads, caches or
graphs: Horovod as `horovodrun -np N hvdweather-train ...`, mirrored as one `hvdweather-train
--strategy mirrored --replicas N` process. Every worker gets the same number of threads in every run
(cores // max workers unless --threads-per-worker), so adding a worker adds cores, as adding a GPU
would. The baseline row is the plain single process on all cores: what a user runs without either.

Written to --out: results.jsonl (one line per run: what was measured), scaling.csv (plus speed-up,
efficiency and ratios), scaling.md (the tables, also printed), epoch_time.png, speedup.png,
machine.json, logs/<run>.log and runs/<run>/ (each run's own run directory).
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.bench.launch import launch
from hvdweather.config import ConfigError

STRATEGIES = ("horovod", "mirrored")
BASELINE = "single"  # the plain one-process run on all cores

# scaling.csv columns: the measurements of results.jsonl, then what add_derived() computes from them.
CSV_COLUMNS = (
    "run", "strategy", "workers", "processes", "threads_per_worker", "total_threads", "cores",
    "per_worker_batch_size", "global_batch_size", "epochs", "timed_epochs", "status", "returncode",
    "epoch_time_s", "train_time_s", "images_per_s", "final_val_accuracy", "epochs_to_target",
    "wall_s", "speedup", "efficiency", "horovod_to_mirrored_time", "vs_baseline", "log", "error")


@dataclass(frozen=True)
class ScalingSpec:
    """What `hvdweather-bench scaling` runs; one field per flag."""

    data: str  # class-folder data set every run trains on
    out: str = "bench/scaling"  # results, tables, plots, logs and run directories
    strategies: tuple[str, ...] = STRATEGIES  # horovod and/or mirrored
    workers: tuple[int, ...] = (1, 2)  # Horovod processes or mirrored replicas
    batch_sizes: tuple[int, ...] = (32, 64, 128)  # per-worker batch sizes
    epochs: int = 4  # per run; epoch 1 is warm-up and excluded from the timings
    image_size: int = 256  # passed to hvdweather-train
    threads_per_worker: int = 0  # TF threads per worker in every run (0 = cores // max workers)
    target_accuracy: float = 0.5  # epochs-to-target: first epoch with val_accuracy >= this (0 = off)
    timeline: bool = False  # Horovod runs write a timeline to timelines/<run>.json (profiling only)
    per_run_timeout_s: float = 900.0  # a run still going after this is killed and reported
    baseline: bool = True  # also run the plain single process on all cores
    seed: int = 42  # same split and initial weights in every run
    launcher: str = ""  # horovodrun to use ("" = the one next to this Python)


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run: a strategy at a worker count and per-worker batch size."""

    strategy: str  # horovod, mirrored or single (the baseline)
    workers: int
    per_worker_batch_size: int
    threads_per_worker: int

    @property
    def name(self) -> str:
        return f"{self.strategy}-w{self.workers}-b{self.per_worker_batch_size}"

    @property
    def global_batch_size(self) -> int:
        return self.workers * self.per_worker_batch_size


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); anything else is a ConfigError naming the flag."""
    try:
        values = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} must be comma-separated positive integers, got {text!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} lists a value twice: {text!r}")
    return values


def parse_strategies(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in str(text).split(",") if part.strip())
    unknown = [n for n in names if n not in STRATEGIES]
    if not names or unknown or len(set(names)) != len(names):
        raise ConfigError(f"--strategies must be a comma-separated subset of {','.join(STRATEGIES)}, "
                          f"got {text!r}")
    return names


def spec_from_flags(strategies: str, workers: str, batch_sizes: str, per_run_timeout: float,
                    **flags: Any) -> ScalingSpec:
    """The CLI's flags -> a checked ScalingSpec (raises ConfigError before anything runs)."""
    spec = ScalingSpec(strategies=parse_strategies(strategies), workers=parse_int_list(workers, "--workers"),
                       batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
                       per_run_timeout_s=per_run_timeout, **flags)
    check_spec(spec)
    return spec


def check_spec(spec: ScalingSpec) -> None:
    """Every check that can fail in seconds, so a bad flag never costs a run."""
    from hvdweather.data.discovery import discover
    from hvdweather.model import min_image_size

    if spec.epochs < 1:
        raise ConfigError(f"--epochs must be a positive integer, got {spec.epochs}")
    if spec.image_size < min_image_size():
        raise ConfigError(f"--image-size {spec.image_size} is too small for the weather CNN "
                          f"(needs >= {min_image_size()})")
    if spec.threads_per_worker < 0:
        raise ConfigError(f"--threads-per-worker must be >= 0, got {spec.threads_per_worker}")
    if not 0 <= spec.target_accuracy <= 1:
        raise ConfigError(f"--target-accuracy is a fraction in [0, 1], got {spec.target_accuracy}")
    if not spec.per_run_timeout_s > 0:
        raise ConfigError(f"--per-run-timeout must be > 0 seconds, got {spec.per_run_timeout_s}")
    discover(spec.data)  # DataError names --data
    executable("hvdweather-train", "")
    if "horovod" in spec.strategies:
        executable("horovodrun", spec.launcher)
    try:
        Path(spec.out, "logs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {spec.out}: not writable ({exc.strerror})") from None


def executable(name: str, given: str) -> str:
    """Path of a command: `given` if set, else the one in this Python's bin (the venv), else on PATH."""
    candidate = given or str(Path(sys.executable).parent / name)
    found = shutil.which(candidate) or (None if given else shutil.which(name))
    if not found:
        flag = "--launcher" if name == "horovodrun" else name
        raise ConfigError(f"{flag} {candidate}: not found or not executable")
    return found


def plan_runs(spec: ScalingSpec, cores: int) -> list[RunSpec]:
    """Every strategy x workers x batch size, then one all-cores baseline per batch size."""
    threads = spec.threads_per_worker or max(1, cores // max(spec.workers))
    runs = [RunSpec(strategy, workers, batch, threads)
            for batch in spec.batch_sizes for strategy in spec.strategies for workers in spec.workers]
    if spec.baseline:
        runs += [RunSpec(BASELINE, 1, batch, cores) for batch in spec.batch_sizes]
    return runs


def run_paths(spec: ScalingSpec, run: RunSpec) -> dict[str, Path]:
    out = Path(spec.out)
    return {"run_dir": out / "runs" / run.name, "log": out / "logs" / f"{run.name}.log",
            "timeline": out / "timelines" / f"{run.name}.json"}


def build_command(spec: ScalingSpec, run: RunSpec) -> list[str]:
    """The exact command line of one run (it goes into its log and results line)."""
    paths = run_paths(spec, run)
    train = executable("hvdweather-train", "")
    args = ["--data", spec.data, "--out", str(paths["run_dir"]), "--epochs", str(spec.epochs),
            "--batch-size", str(run.per_worker_batch_size), "--image-size", str(spec.image_size),
            "--threads-per-worker", str(run.threads_per_worker), "--seed", str(spec.seed), "--verbose", "2"]
    if spec.target_accuracy > 0:
        args += ["--target-accuracy", str(spec.target_accuracy)]
    if run.strategy == "mirrored":
        return [train, "--strategy", "mirrored", "--replicas", str(run.workers), *args]
    if run.strategy == "horovod":
        # horovodrun's own flag: it rejects the train flag `--timeline` after the command as an
        # ambiguous abbreviation of its --timeline-filename/--timeline-mark-cycles (argparse).
        timeline = ["--timeline-filename", str(paths["timeline"])] if spec.timeline else []
        return [executable("horovodrun", spec.launcher), "-np", str(run.workers), *timeline, train, *args]
    return [train, *args]  # baseline: no launcher, default strategy, one process on all cores


def summarize_metrics(rows: list[dict[str, Any]], target_accuracy: float) -> dict[str, Any]:
    """Medians over the timed epochs (all but epoch 1, the warm-up, when there is more than one)."""
    timed = rows[1:] if len(rows) > 1 else rows

    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in timed)

    reached = [r["epoch"] for r in rows if target_accuracy > 0 and r.get("val_accuracy", -1) >= target_accuracy]
    return {"timed_epochs": len(timed), "epoch_time_s": median("epoch_time_s"),
            "train_time_s": median("train_time_s"), "images_per_s": median("images_per_s"),
            "final_val_accuracy": rows[-1].get("val_accuracy"),
            "epochs_to_target": reached[0] if reached else None}


def check_metrics(rows: list[dict[str, Any]], run: RunSpec, epochs: int) -> str:
    """'' if metrics.jsonl is what this run should have written, else why not."""
    expected = "horovod" if run.strategy == BASELINE else run.strategy
    if len(rows) != epochs:
        return f"metrics.jsonl has {len(rows)} epoch line(s), expected {epochs}"
    wrong = [r for r in rows if r.get("world_size") != run.workers or r.get("strategy") != expected]
    if wrong:
        return (f"metrics.jsonl says {wrong[0].get('strategy')} with world_size {wrong[0].get('world_size')}, "
                f"expected {expected} with {run.workers}")
    return ""


def last_log_line(log: Path) -> str:
    """The last non-empty line of a log: usually the one-line error or the traceback's last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def cell_line(run: RunSpec, epochs: int) -> dict[str, Any]:
    """The results.jsonl fields that follow from the grid cell alone (shared with bench.collect)."""
    return {"run": run.name, "strategy": run.strategy, "workers": run.workers,
            "processes": run.workers if run.strategy == "horovod" else 1,
            "threads_per_worker": run.threads_per_worker,
            "total_threads": run.threads_per_worker * run.workers,
            "per_worker_batch_size": run.per_worker_batch_size, "global_batch_size": run.global_batch_size,
            "epochs": epochs, "timeline": None}


def finish_line(line: dict[str, Any], problem: str, rows: list[dict[str, Any]], run: RunSpec, epochs: int,
                target_accuracy: float, status_if_failed: str = "failed") -> dict[str, Any]:
    """Add status, error and (for good runs) the metric summary: the same verdict for every source."""
    problem = problem or check_metrics(rows, run, epochs)
    line.update(status="ok" if not problem else status_if_failed, error=problem or None)
    if not problem:
        line.update(summarize_metrics(rows, target_accuracy))
    return line


def execute_run(spec: ScalingSpec, run: RunSpec, cores: int) -> dict[str, Any]:
    """Run one combination and return its results line; failures are recorded, never raised."""
    from hvdweather.writers import read_jsonl

    paths = run_paths(spec, run)
    shutil.rmtree(paths["run_dir"], ignore_errors=True)  # train appends to metrics.jsonl: start clean
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    timeline = spec.timeline and run.strategy == "horovod"
    if timeline:
        paths["timeline"].parent.mkdir(parents=True, exist_ok=True)
    command = build_command(spec, run)
    code, wall_s = launch(command, paths["log"], spec.per_run_timeout_s)
    line = {**cell_line(run, spec.epochs), "cores": cores, "returncode": code, "wall_s": round(wall_s, 3),
            "log": str(paths["log"]), "run_dir": str(paths["run_dir"]), "command": shlex.join(command),
            "timeline": str(paths["timeline"]) if timeline else None}
    problem = "" if code == 0 else (f"timed out after {spec.per_run_timeout_s:g} s" if code is None
                                    else last_log_line(paths["log"]))
    rows = read_jsonl(paths["run_dir"] / "metrics.jsonl")
    return finish_line(line, problem, rows, run, spec.epochs, spec.target_accuracy,
                       "timeout" if code is None else "failed")


def add_derived(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-up, efficiency and ratios, from the results lines alone (failed runs get None).

    speedup: images/s over 1 worker of the same strategy at the same per-worker batch (images/s, not
    epoch time, because drop_remainder can give runs slightly different images per epoch);
    efficiency: speedup / workers; horovod_to_mirrored_time: Horovod's median train time over
    mirrored's at equal workers and batch (< 1: Horovod faster); vs_baseline: images/s over the
    all-cores single process at the same per-worker batch.
    """
    ok = {(r["strategy"], r["workers"], r["per_worker_batch_size"]): r for r in results if r["status"] == "ok"}

    def ratio(num: dict | None, den: dict | None, key: str) -> float | None:
        if num is None or den is None or not den.get(key):
            return None
        return num[key] / den[key]

    derived = []
    for r in results:
        mine = ok.get((r["strategy"], r["workers"], r["per_worker_batch_size"]))
        batch, workers = r["per_worker_batch_size"], r["workers"]
        speedup = ratio(mine, ok.get((r["strategy"], 1, batch)), "images_per_s")
        pair = {s: ok.get((s, workers, batch)) for s in STRATEGIES}
        derived.append({**r, "speedup": speedup,
                        "efficiency": None if speedup is None else speedup / workers,
                        "horovod_to_mirrored_time": ratio(pair["horovod"], pair["mirrored"], "train_time_s")
                        if r["strategy"] in STRATEGIES and mine else None,
                        "vs_baseline": ratio(mine, ok.get((BASELINE, 1, batch)), "images_per_s")})
    return derived


def row_label(row: dict[str, Any]) -> str:
    if row["strategy"] == BASELINE:
        return f"single process, {row['threads_per_worker']} threads"
    return f"{row['strategy']} x {row['workers']}"


def pivot_table(rows: list[dict[str, Any]], key: str, fmt: str, strategies: tuple[str, ...] | None = None) -> str:
    """A seeds-shaped markdown table: one row per strategy x workers, one column per batch size.

    A cell shows `key` formatted with `fmt`, "failed"/"timeout" for a failed run, "-" when undefined.
    """
    batches = sorted({r["per_worker_batch_size"] for r in rows})
    chosen = [r for r in rows if strategies is None or r["strategy"] in strategies]
    order = sorted({(r["strategy"] == BASELINE, r["strategy"], r["workers"]) for r in chosen})
    lines = ["| strategy x workers | " + " | ".join(f"bs {b}" for b in batches) + " |",
             "|---" * (len(batches) + 1) + "|"]
    for _, strategy, workers in order:
        cells, label = [], ""
        for batch in batches:
            match = [r for r in chosen if (r["strategy"], r["workers"], r["per_worker_batch_size"])
                     == (strategy, workers, batch)]
            label = label or (row_label(match[0]) if match else "")
            cells.append(_cell(match[0], key, fmt) if match else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    if row["status"] != "ok":
        return row["status"]
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, library and MPI versions: the context every number needs."""
    from hvdweather.distributed import available_cores, versions

    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else ""
    try:
        mpi = subprocess.run(["mpirun", "--version"], check=False, capture_output=True, text=True, timeout=30)
        mpi_version = (mpi.stdout.strip().splitlines() or ["unknown"])[0]
    except (OSError, subprocess.TimeoutExpired):
        mpi_version = "not found"
    return {"host": platform.node(), "cores": available_cores(), "cpu_count": os.cpu_count(),
            "cpu_model": model or platform.processor() or "unknown", "mpi": mpi_version,
            "versions": versions(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown_report(rows: list[dict[str, Any]], machine: dict[str, Any], spec: ScalingSpec) -> str:
    """scaling.md: machine, method, then the tables (rows must already carry add_derived's keys)."""
    v = machine.get("versions", {})
    threads = sorted({r["threads_per_worker"] for r in rows if r["strategy"] != BASELINE})
    parts = [
        "# Scaling benchmark: Horovod vs MirroredStrategy",
        (f"Machine: {machine['host']}, {machine['cores']} cores ({machine['cpu_model']}); TensorFlow "
         f"{v.get('tensorflow')}, Horovod {v.get('horovod')}, {machine['mpi']}; {machine['date']}."),
        (f"Data {spec.data}, image size {spec.image_size}, {spec.epochs} epochs per run; "
         f"threads per worker {threads}. Epoch 1 (cache fill, graph build) is excluded; values are "
         "medians over the other epochs. Batch sizes (bs) are per worker; global batch = bs x workers."),
        "## Median epoch time (s, training steps only)", pivot_table(rows, "train_time_s", "{:.2f}"),
        "## Median epoch time including validation (s)", pivot_table(rows, "epoch_time_s", "{:.2f}"),
        "## Images/s (training)", pivot_table(rows, "images_per_s", "{:.1f}"),
        "## Speed-up vs 1 worker of the same strategy (images/s ratio)",
        pivot_table(rows, "speedup", "{:.2f}", STRATEGIES),
        "## Efficiency (speed-up / workers)", pivot_table(rows, "efficiency", "{:.2f}", STRATEGIES),
        "## Horovod / mirrored epoch time at equal workers and global batch (< 1: Horovod faster)",
        pivot_table(rows, "horovod_to_mirrored_time", "{:.2f}", ("horovod",)),
        "## Speed-up vs the single process on all cores (images/s ratio, same per-worker batch)",
        pivot_table(rows, "vs_baseline", "{:.2f}"),
        f"## Epochs to val accuracy >= {spec.target_accuracy:g} (- = not reached)",
        pivot_table(rows, "epochs_to_target", "{}"),
    ]
    if any(r["status"] == "ok" and r.get("timed_epochs", 0) < 2 for r in rows):
        parts.append("Note: runs with fewer than 2 epochs have no epoch after warm-up; their times "
                     "include epoch 1.")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        parts += ["## Failed runs", "| run | status | log | error |", "|---|---|---|---|"]
        parts += [f"| {r['run']} | {r['status']} | {r['log']} | {(r['error'] or '').replace('|', '/')} |"
                  for r in failed]
    return "\n\n".join(parts) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _series(rows: list[dict[str, Any]], strategy: str, batch: int, key: str) -> tuple[list, list]:
    points = sorted((r["workers"], r[key]) for r in rows if r["strategy"] == strategy
                    and r["per_worker_batch_size"] == batch and r["status"] == "ok" and r.get(key) is not None)
    return [p[0] for p in points], [p[1] for p in points]


def plot_epoch_time(rows: list[dict[str, Any]]):
    """One panel per batch size: median epoch time vs workers for each strategy, baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["per_worker_batch_size"] for r in rows})
    figure, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for strategy in STRATEGIES:
            x, y = _series(rows, strategy, batch, "train_time_s")
            if x:
                ax.plot(x, y, marker="o", label=strategy)
        base = _series(rows, BASELINE, batch, "train_time_s")[1]
        if base:
            ax.axhline(base[0], linestyle="--", color="grey", label="single process, all cores")
        ax.set(title=f"per-worker batch {batch}", xlabel="workers", ylabel="median epoch time (s)")
        ax.set_xticks(sorted({r["workers"] for r in rows}))
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:  # a batch size whose runs all failed has nothing to label
            ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_speedup(rows: list[dict[str, Any]]):
    """Speed-up vs workers for every strategy and batch size, against the ideal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4.2))
    workers = sorted({r["workers"] for r in rows})
    ax.plot(workers, workers, linestyle="--", color="grey", label="ideal")
    for strategy in STRATEGIES:
        for batch in sorted({r["per_worker_batch_size"] for r in rows}):
            x, y = _series(rows, strategy, batch, "speedup")
            if x:
                ax.plot(x, y, marker="o", label=f"{strategy}, bs {batch}")
    ax.set(xlabel="workers", ylabel="speed-up (images/s vs 1 worker)", title="Speed-up vs ideal")
    ax.set_xticks(workers)
    ax.legend(fontsize="small")
    figure.tight_layout()
    return figure


def write_outputs(results: list[dict[str, Any]], machine: dict[str, Any], spec: ScalingSpec) -> str:
    """scaling.csv, scaling.md and the plots, all from the results lines; returns the markdown."""
    import matplotlib.pyplot as plt

    out = Path(spec.out)
    rows = add_derived(results)
    write_csv(rows, out / "scaling.csv")
    text = markdown_report(rows, machine, spec)
    (out / "scaling.md").write_text(text)
    for name, make in (("epoch_time.png", plot_epoch_time), ("speedup.png", plot_speedup)):
        figure = make(rows)
        figure.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return text


def run_scaling(spec: ScalingSpec) -> list[dict[str, Any]]:
    """Run every combination one after another, write all outputs, print the tables."""
    check_spec(spec)
    machine = machine_info()
    out = Path(spec.out)
    (out / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    runs = plan_runs(spec, machine["cores"])
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
    print(write_outputs(results, machine, spec), flush=True)
    print(f"wrote {results_file}, scaling.csv, scaling.md, epoch_time.png, speedup.png in {out}")
    return results


def _progress(line: dict[str, Any]) -> str:
    if line["status"] != "ok":
        return f"{line['status'].upper()}: {line['error']} (log: {line['log']})"
    return (f"ok: {line['train_time_s']:.2f} s/epoch (median, epoch 1 excluded), "
            f"{line['images_per_s']:.1f} images/s, wall {line['wall_s']:.0f} s")
