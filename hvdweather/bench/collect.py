"""Collect the run directories of a SLURM scaling array (jobs/slurm/scaling_array.sbatch) into the scaling
benchmark's outputs: results.jsonl, scaling.csv, scaling.md and the plots, built by the same functions
as `hvdweather-bench scaling` (hvdweather.bench.scaling_report), so both give the same tables.

    hvdweather-bench collect runs/scaling-1234
    sbatch --dependency=afterany:1234 jobs/slurm/scaling_collect.sbatch runs/scaling-1234

Each array task left runs/<run>/job.json (command, hosts, exit status, its grid cell under "scaling"),
config.json and metrics.jsonl. A cell with no run directory (task cancelled, still queued, never
submitted) or a task that failed becomes a "missing"/"failed" row, never a silent gap.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hvdweather.bench.machine import write_machine
from hvdweather.bench.scaling import cell_line, finish_line, read_complete_json
from hvdweather.bench.scaling_report import write_outputs
from hvdweather.bench.scaling_spec import RunSpec, ScalingSpec
from hvdweather.errors import ConfigError


def task_records(array_dir: Path) -> list[dict[str, Any]]:
    """job.json of every task under ARRAY/runs/ that says which grid cell it ran; raises if none do."""
    if not array_dir.is_dir():
        raise ConfigError(f"{array_dir}: not a directory; give the scaling array's directory "
                          "(runs/scaling-JOBID)")
    records = []
    for job_file in sorted(array_dir.glob("runs/*/job.json")):
        record = read_complete_json(job_file)
        if record and "scaling" in record:
            records.append({**record, "run_dir": str(job_file.parent)})
    if not records:
        raise ConfigError(f"{array_dir}: no runs/*/job.json from jobs/slurm/scaling_array.sbatch; "
                          "have the array's tasks started?")
    return records


def result_line(record: dict[str, Any], epochs: int, target_accuracy: float) -> dict[str, Any]:
    """One results.jsonl line, in the scaling benchmark's format, for one array task."""
    cell, slurm = record["scaling"], record.get("scheduler", {})
    run = RunSpec("horovod", cell["workers"], cell["per_worker_batch_size"], cell["threads_per_worker"])
    code = record.get("exit_status")
    line = {**cell_line(run, epochs), "returncode": code, "wall_s": record.get("wall_time_s"),
            "cores": int(slurm.get("SLURM_NTASKS", run.workers)) * int(slurm.get("SLURM_CPUS_PER_TASK", 1)),
            "log": slurm.get("output_file") or record["run_dir"], "run_dir": record["run_dir"],
            "command": record.get("command_line"), "host": ",".join(record.get("hosts", [])),
            "array_task": cell.get("array_task")}
    if code is None:
        problem = "no exit status in job.json: the task is still running or was killed"
    else:
        problem = f"exit status {code}; see {line['log']}" if code != 0 else ""
    return finish_line(line, problem, Path(record["run_dir"]), run, epochs, target_accuracy)


def missing_line(workers: int, batch: int, threads: int, epochs: int) -> dict[str, Any]:
    """A row for a grid cell that left no run directory."""
    return {**cell_line(RunSpec("horovod", workers, batch, threads), epochs), "returncode": None, "wall_s": None,
            "cores": None, "log": "-", "run_dir": None, "command": None, "status": "missing",
            "error": "no run directory: the array task was cancelled, is queued, or was not submitted "
                     "(check --array)"}


def run_settings(records: list[dict[str, Any]]) -> dict[str, Any]:
    """data, epochs, image size, seed and target accuracy, from the first task's config.json."""
    for record in records:
        config = (read_complete_json(Path(record["run_dir"]) / "config.json") or {}).get("config")
        if config:
            return {k: config[k] for k in ("data", "epochs", "image_size", "seed", "target_accuracy")}
    raise ConfigError(f"no task of {records[0]['scaling'].get('array_dir')} wrote config.json: every task "
                      "failed before training; see their output files")


def machine_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's machine.json, from what the tasks recorded on the compute nodes."""
    first = records[0]
    versions = dict(first.get("versions", {}))
    versions.setdefault("tensorflow", versions.get("tensorflow-cpu"))
    hosts = sorted({h for r in records for h in r.get("hosts", [])})
    cores = max(int(r.get("scheduler", {}).get("SLURM_NTASKS", 1)) * int(r.get("scheduler", {}).get(
        "SLURM_CPUS_PER_TASK", 1)) for r in records)
    # cpu_flags: None (printed as unknown) when the task's record predates recording them.
    return {"host": ",".join(hosts), "cores": cores, "cpu_model": first.get("cpu_model") or "unknown",
            "cpu_flags": first.get("cpu_flags"),
            "mpi": versions.get("openmpi", "unknown"), "versions": versions,
            "date": first.get("started", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
            "slurm_array_job_id": first.get("scheduler", {}).get("SLURM_ARRAY_JOB_ID")}


def collect_array(array_dir: str | Path) -> list[dict[str, Any]]:
    """Write results.jsonl, machine.json and the benchmark's tables and plots into ARRAY; print the tables."""
    array_dir = Path(array_dir)
    records = task_records(array_dir)
    settings = run_settings(records)
    cell = records[0]["scaling"]
    grid = [(w, b) for b in cell["grid_batch_sizes"] for w in cell["grid_workers"]]
    by_cell = {(r["scaling"]["workers"], r["scaling"]["per_worker_batch_size"]): r for r in records}
    results = [result_line(by_cell[(w, b)], settings["epochs"], settings["target_accuracy"])
               if (w, b) in by_cell else missing_line(w, b, cell["threads_per_worker"], settings["epochs"])
               for w, b in grid]
    machine = machine_of(records)
    write_machine(array_dir, machine)
    (array_dir / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in results))
    spec = ScalingSpec(data=settings["data"], out=str(array_dir), strategies=("horovod",),
                       workers=tuple(cell["grid_workers"]),
                       per_worker_batch_sizes=tuple(cell["grid_batch_sizes"]),
                       epochs=settings["epochs"], image_size=settings["image_size"],
                       threads_per_worker=cell["threads_per_worker"],
                       target_accuracy=settings["target_accuracy"], baseline=False, seed=settings["seed"])
    print(write_outputs(results, machine, spec), flush=True)
    ok = sum(line["status"] == "ok" for line in results)
    print(f"collected {ok} of {len(results)} grid cells; wrote results.jsonl, scaling.csv, scaling.md, "
          f"epoch_time.png, speedup.png in {array_dir}")
    return results


