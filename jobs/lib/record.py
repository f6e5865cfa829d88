"""Write job.json into a run directory: what a batch job ran, where, with how many ranks and which versions.

Called by jobs/lib/common.sh with the activated venv's python (no TensorFlow import, well under a second):

    python jobs/lib/record.py start RUN/job.json RANKS HOSTS COMMAND...
    python jobs/lib/record.py finish RUN/job.json EXIT_STATUS

Package versions, the CPU model and its speed-relevant flags come from `hvdweather.host` (TensorFlow-free),
the same facts the training runs and benchmarks record; only the launchers' own version lines (mpirun,
srun) are gathered here. Without hvdweather importable (a venv not activated), the record says so rather
than failing the job.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

try:
    from hvdweather import host
except ImportError:  # the job's venv is not active: record what can be known, and say why the rest is missing
    host = None

TOOLS = {"openmpi": ["mpirun", "--version"], "slurm": ["srun", "--version"]}


def _first_line(command: list[str]) -> str | None:
    """First output line of a version command, or None when the tool is absent or broken."""
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def versions() -> dict[str, str]:
    """Python, the installed packages that decide behaviour (hvdweather.host), and the launchers' version lines."""
    found = host.versions() if host else {"python": platform.python_version(),
                                          "hvdweather": "not importable with this python"}
    for name, command in TOOLS.items():
        line = _first_line(command)
        if line:
            found[name] = line
    return found


def git_commit(repo: str) -> str | None:
    """The repository's commit (with '+dirty' when it has local changes), if it is a git checkout."""
    head = _first_line(["git", "-C", repo, "rev-parse", "HEAD"])
    if head is None:
        return None
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"], check=False,
                           capture_output=True, text=True, timeout=20).stdout.strip()
    return head + ("+dirty" if dirty else "")


def slurm_output_file(job_id: str) -> str | None:
    """Where SLURM writes this job's output (scontrol's StdOut), so a record can point at its log."""
    try:
        text = subprocess.run(["scontrol", "show", "job", job_id], check=False, capture_output=True,
                              text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = [part.split("=", 1)[1] for part in text.split() if part.startswith("StdOut=")]
    return found[0] if found else None


def scheduler() -> dict[str, str]:
    """Which scheduler runs this job and its ids, from the environment it sets."""
    env = os.environ
    if "SLURM_JOB_ID" in env:
        keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION",
                "SLURM_JOB_NUM_NODES", "SLURM_NTASKS", "SLURM_CPUS_PER_TASK", "SLURM_SUBMIT_DIR")
        return {"name": "slurm", **{k: env[k] for k in keys if k in env},
                "output_file": slurm_output_file(env["SLURM_JOB_ID"])}
    if "LSB_JOBID" in env:
        keys = ("LSB_JOBID", "LSB_QUEUE", "LSB_MCPU_HOSTS", "LS_SUBCWD")
        return {"name": "lsf", **{k: env[k] for k in keys if k in env}}
    return {"name": "none"}


def start(path: Path, ranks: str, hosts: str, command: list[str]) -> None:
    """Write the record before the launch, so a job killed mid-run still says what it was.

    A job adds its own fields (e.g. a scaling task's grid cell) as a JSON object in $HVDW_RECORD.
    """
    repo = os.environ.get("HVDWEATHER_HOME", "")
    record = {"job": os.environ.get("HVDW_JOB", ""), "scheduler": scheduler(), "ranks": int(ranks),
              "hosts": [h for h in hosts.split(",") if h], "command": command,
              "command_line": shlex.join(command), "cwd": os.getcwd(), "launch_host": platform.node(),
              "started": datetime.now(UTC).isoformat(timespec="seconds"),
              "started_unix_s": time.time(), "versions": versions(), "cpu_model": host.cpu_model() if host else "",
              "cpu_flags": host.cpu_flags() if host else [],
              "git_commit": git_commit(repo) if repo else None, "virtual_env": os.environ.get("VIRTUAL_ENV"),
              "dry_run": os.environ.get("HVDW_DRY_RUN") == "1",
              **json.loads(os.environ.get("HVDW_RECORD") or "{}")}
    path.write_text(json.dumps(record, indent=2) + "\n")


def finish(path: Path, status: str) -> None:
    """Add the exit status and the wall time of the launch to the record."""
    record = json.loads(path.read_text())
    record["exit_status"] = int(status)
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    record["wall_time_s"] = round(time.time() - record["started_unix_s"], 3)
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str]) -> int:
    """Dispatch `start` / `finish`; a usage error exits 2 with one line."""
    if len(argv) >= 5 and argv[0] == "start":
        start(Path(argv[1]), argv[2], argv[3], argv[4:])
        return 0
    if len(argv) == 3 and argv[0] == "finish":
        finish(Path(argv[1]), argv[2])
        return 0
    print("usage: record.py start JOB_JSON RANKS HOSTS COMMAND... | finish JOB_JSON STATUS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
