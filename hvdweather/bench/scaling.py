"""Scaling benchmark, running part: Horovod, MirroredStrategy and PyTorch DDP epoch times over workers x
per-worker batch sizes, one command. The flags, the grid and each run's command line are
hvdweather.bench.scaling_spec; the tables and plots are built by hvdweather.bench.scaling_report.

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

import json
import shlex
import statistics
import subprocess
from pathlib import Path
from typing import Any

from hvdweather.bench.machine import machine_info, write_machine
from hvdweather.bench.scaling_report import write_outputs
from hvdweather.bench.scaling_spec import RUNNERS, RunSpec, ScalingSpec, build_command, plan_runs, run_paths
from hvdweather.bench.spec import config_per_worker_batch
from hvdweather.launch import last_log_line, launch
from hvdweather.runfiles import first_epoch_reaching, median_after_first, read_json, read_jsonl, timed_epochs


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
