"""hvdweather-sweep: run a study's grid of trainings one after another, then compare them in one table.

    hvdweather-sweep study.yaml --out studies/norm-aug                          # one process per cell
    hvdweather-sweep study.yaml --out studies/hvd --launcher horovodrun --np 2  # 2 Horovod ranks per cell
    hvdweather-sweep study.yaml --out studies/norm-aug --dry-run                # list the cells

Each cell is a whole hvdweather-train run in STUDY_DIR/<cell>/ (its config in STUDY_DIR/cells/<cell>.yaml,
its output in STUDY_DIR/logs/<cell>.log). A failed cell is recorded and the sweep goes on. Re-running
skips finished cells, resumes unfinished ones with --resume (exactly, see hvdweather.resume) and retries
failed ones. STUDY_DIR/study.json holds every cell's status; compare.csv/.md and the plots come from
hvdweather.study.compare. The SLURM array (jobs/slurm/sweep_array.sbatch) uses --prepare-cell and --collect.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.config import RESUMABLE
from hvdweather.errors import ConfigError, check_output_dir
from hvdweather.launch import executable, last_log_line, launch
from hvdweather.runfiles import read_jsonl, run_files_in
from hvdweather.study.grid import Cell, grid_cells

LAUNCHERS = ("local", "horovodrun", "mpirun")


@dataclass(frozen=True)
class SweepSpec:
    grid: str  # the grid file
    out: str  # STUDY_DIR
    launcher: str = "local"  # local: one hvdweather-train process; horovodrun/mpirun: --np ranks
    np: int = 1  # ranks per cell under horovodrun/mpirun
    cell_timeout_s: float = 0.0  # a cell running longer is killed and failed (0 = no limit)
    target_accuracy: float = 0.5  # for compare's epochs_to_target
    top_k: int = 3  # for compare's top-k column

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.np < 1 or (self.launcher == "local" and self.np != 1):
            raise ConfigError(f"--np {self.np}: give --launcher horovodrun or mpirun for more than one rank "
                              "(local runs one process)")


def cell_state(cell: Cell, run_dir: Path) -> str:
    """done (the run ended: ranks.json, written last, is there), resume (config.json: the run started),
    stale (files of a run killed before config.json: replace them), or new."""
    if (run_dir / "ranks.json").exists() and read_jsonl(run_dir / "metrics.jsonl"):
        return "done"
    if (run_dir / "config.json").exists():
        return "resume"
    return "stale" if run_files_in(run_dir) else "new"


def changed_setting(cell: Cell, run_dir: Path) -> str:
    """'' when the run in run_dir was trained with the cell's settings, else the first that differs: a
    grid edited since is not silently answered with the old run."""
    record = json.loads((run_dir / "config.json").read_text()).get("config", {})
    for name, value in cell.values.items():
        ran = record.get(name)
        if name in RESUMABLE - {"epochs"} or (name == "data" and os.path.realpath(str(ran)) == os.path.realpath(value)):
            continue
        if ran != value:
            return f"{run_dir} holds a finished run with {name} {ran!r}, the grid now says {value!r}; " \
                   "remove that directory or choose another --out"
    return ""


def train_command(spec: SweepSpec, config_file: Path, run_dir: Path, state: str) -> list[str]:
    """hvdweather-train on the cell's config, under the launcher; --resume continues a started run,
    --overwrite replaces the leftovers of one killed before it wrote config.json."""
    train = [executable("hvdweather-train"), "--config", str(config_file), "--out", str(run_dir),
             *{"resume": ["--resume"], "stale": ["--overwrite"]}.get(state, [])]
    if spec.launcher == "horovodrun":
        return [executable("horovodrun"), "-np", str(spec.np), *train]
    if spec.launcher == "mpirun":
        # Horovod's documented flags; --oversubscribe: cells run one at a time, so the ranks only share
        # the machine with each other (mpirun counts slots, not cores, and may count fewer).
        root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
        return [executable("mpirun"), *root, "--oversubscribe", "-np", str(spec.np), "-bind-to", "none",
                "-map-by", "slot", "-x", "PATH", "-x", "TF_CPP_MIN_LOG_LEVEL", *train]
    return train


def write_cell_config(study: Path, cell: Cell) -> Path:
    """STUDY_DIR/cells/<cell>.yaml: the cell's whole config, what its runs are launched with."""
    import yaml

    path = study / "cells" / f"{cell.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cell.values, sort_keys=False))
    return path


def record_of(cell: Cell, status: str, error: str = "", **extra: Any) -> dict[str, Any]:
    return {"run": cell.name, "status": status, "error": error or None, "settings": cell.settings, **extra}


def run_cell(spec: SweepSpec, study: Path, cell: Cell) -> dict[str, Any]:
    """Run (or skip, or resume) one cell; a failure is returned as a record, never raised."""
    run_dir = study / cell.name
    if cell.problem:
        return record_of(cell, "failed", cell.problem)
    state = cell_state(cell, run_dir)
    if state == "done":
        changed = changed_setting(cell, run_dir)
        return record_of(cell, "failed" if changed else "ok", changed, skipped=True, run_dir=str(run_dir))
    command = train_command(spec, write_cell_config(study, cell), run_dir, state)
    log = study / "logs" / f"{cell.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    code, wall_s = launch(command, log, spec.cell_timeout_s, "--cell-timeout", die_with_parent=True)
    extra = {"run_dir": str(run_dir), "log": str(log), "command": shlex.join(command), "returncode": code,
             "wall_s": round(wall_s, 1), "started_as": state}
    if code != 0:
        why = "timed out" if code is None else f"exit status {code}: {last_log_line(log)}"
        return record_of(cell, "failed", why, **extra)
    if cell_state(cell, run_dir) != "done":  # e.g. killed while writing its report, then resumed
        return record_of(cell, "failed", f"exit 0 but {run_dir} has no ranks.json (its report was never "
                                         "written); hvdweather-evaluate RUN_DIR writes one", **extra)
    return record_of(cell, "ok", **extra)


def write_study(study: Path, spec: SweepSpec, records: list[dict[str, Any]]) -> None:
    """STUDY_DIR/study.json, rewritten (atomically) after every cell: a killed sweep leaves what it did."""
    tmp = study / ".study.partial.json"
    tmp.write_text(json.dumps({"grid": os.path.abspath(spec.grid), "launcher": spec.launcher, "np": spec.np,
                               "cells": records}, indent=2, default=str) + "\n")
    os.replace(tmp, study / "study.json")


def compare_study(study: Path, spec: SweepSpec, records: list[dict[str, Any]]) -> None:
    """The table of every finished cell, failed cells as rows with their error, into STUDY_DIR."""
    from hvdweather.study.compare import compare_runs

    ok = [r["run_dir"] for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    compare_runs(ok, study, spec.target_accuracy, spec.top_k, failed)


def list_cells(spec: SweepSpec, cells: list[Cell]) -> None:
    """--dry-run: each cell, what a run of the sweep would do with it, and its command; nothing written."""
    study = Path(spec.out)
    for cell in cells:
        state = "invalid: " + cell.problem if cell.problem else cell_state(cell, study / cell.name)
        command = "" if cell.problem else shlex.join(train_command(
            spec, study / "cells" / f"{cell.name}.yaml", study / cell.name, state))
        print(f"{cell.name}: {state}; {command}", flush=True)
    print(f"{len(cells)} cell(s) in {spec.grid}; dry run: nothing launched", flush=True)


def run_sweep(spec: SweepSpec, dry_run: bool = False) -> list[dict[str, Any]]:
    """Every cell in turn, then the comparison; returns the cell records (status ok/failed)."""
    spec.check()
    cells = grid_cells(spec.grid)
    if dry_run:
        list_cells(spec, cells)
        return []
    study = check_output_dir(spec.out)
    records: list[dict[str, Any]] = []
    for index, cell in enumerate(cells, 1):
        print(f"hvdweather-sweep: cell {index}/{len(cells)} {cell.name} ...", flush=True)
        record = run_cell(spec, study, cell)
        records.append(record)
        write_study(study, spec, records)
        how = "finished before, skipped" if record.get("skipped") else f"{record.get('wall_s', 0):g} s"
        print(f"hvdweather-sweep: cell {index}/{len(cells)} {cell.name}: {record['status']} ({how})"
              + (f": {record['error']}" if record["error"] else ""), flush=True)
    compare_study(study, spec, records)
    failed = sum(r["status"] != "ok" for r in records)
    print(f"hvdweather-sweep: {len(records) - failed} of {len(records)} cell(s) ok"
          + (f", {failed} failed (see the error column and {study / 'logs'})" if failed else ""), flush=True)
    return records


def prepare_cell(spec: SweepSpec, index: int) -> str:
    """For a job array task: write cell `index`'s config and return 'RUN_DIR CONFIG [--resume|--overwrite]'
    (the task launches hvdweather-train itself); a finished cell returns 'done RUN_DIR'."""
    cells = grid_cells(spec.grid)
    if not 0 <= index < len(cells):
        raise ConfigError(f"--prepare-cell {index}: the grid has {len(cells)} cell(s) (0-{len(cells) - 1}); "
                          f"submit with --array=0-{len(cells) - 1}")
    cell, study = cells[index], check_output_dir(spec.out)
    if cell.problem:
        raise ConfigError(f"cell {index} ({cell.name}): {cell.problem}")
    run_dir = study / cell.name
    state = cell_state(cell, run_dir)
    if state == "done":
        return f"done {run_dir}"
    flag = {"resume": "--resume", "stale": "--overwrite"}.get(state, "")
    run_dir.mkdir(parents=True, exist_ok=True)  # the job records itself there (job.json) before training
    return f"{run_dir} {write_cell_config(study, cell)} {flag}".rstrip()


def collect_study(spec: SweepSpec) -> list[dict[str, Any]]:
    """The table of a study whose cells ran elsewhere (a SLURM array): finished cells are rows, the
    others failed rows saying why (their job.json's exit status, or no run at all)."""
    study, records = Path(spec.out), []
    for cell in grid_cells(spec.grid):
        run_dir = study / cell.name
        job = json.loads((run_dir / "job.json").read_text()) if (run_dir / "job.json").exists() else {}
        if cell.problem:
            records.append(record_of(cell, "failed", cell.problem))
        elif cell_state(cell, run_dir) == "done":
            records.append(record_of(cell, "ok", run_dir=str(run_dir), wall_s=job.get("wall_time_s")))
        else:
            why = (f"exit status {job['exit_status']}" if job.get("exit_status") not in (None, 0)
                   else "not finished: the task is queued, running, was cancelled or killed") if job else \
                "no run: the array task never started (check --array)"
            records.append(record_of(cell, "failed", why, run_dir=str(run_dir)))
    write_study(check_output_dir(study), spec, records)
    compare_study(study, spec, records)
    return records
