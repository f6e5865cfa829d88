"""The machine a benchmark ran on, recorded with every table (machine.json) and named in its header.

Timings mean little without the CPU: its model and its speed-relevant flags (oneDNN picks its kernels by
AVX-512/VNNI/AMX) decide the numbers as much as the code does. TensorFlow-free, from hvdweather.host.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from hvdweather.host import (
    SPEED_FLAGS,
    available_cores,
    cpu_flags,
    cpu_model,
    onednn_request,
    onednn_state,
    versions,
)


def mpi_version() -> str:
    """`mpirun --version`'s first line: Horovod's and the EDA's collectives run on it."""
    try:
        mpi = subprocess.run(["mpirun", "--version"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (mpi.stdout.strip().splitlines() or ["unknown"])[0]


def machine_info() -> dict[str, Any]:
    """Host, cores this process may use, CPU model and flags, MPI and library versions, date; oneDNN as
    asked (--onednn, its source, ONEDNN_MAX_CPU_ISA) and as TensorFlow runs it with that (`onednn`)."""
    return {"host": platform.node(), "cores": available_cores(), "cpu_model": cpu_model() or "unknown",
            "cpu_flags": cpu_flags(), "mpi": mpi_version(), "versions": versions(), "onednn": onednn_state(),
            "onednn_request": onednn_request(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


_SOURCE_WORDS = {"flag": "given", "default": "by default", "environment": "from the environment"}


def onednn_text(machine: dict[str, Any]) -> str:
    """'; oneDNN on (--onednn on by default; ISA capped at AVX2; ran: on)', or '' for records without it."""
    if not machine.get("onednn"):
        return ""
    request = machine.get("onednn_request") or {}
    source = _SOURCE_WORDS.get(request.get("source"), request.get("source"))
    asked = [f"--onednn {request['mode']} {source}"] if request.get("mode") else []
    if request.get("max_cpu_isa"):
        asked.append(f"ISA capped at {request['max_cpu_isa']}")
    if machine.get("onednn_ran"):  # what the runs' own config.json said TensorFlow ran
        asked.append(f"ran: {'/'.join(machine['onednn_ran'])}")
    return f"; oneDNN {machine['onednn']}" + (f" ({'; '.join(asked)})" if asked else "")


def machine_line(machine: dict[str, Any]) -> str:
    """One markdown line naming the machine: the header of every benchmark table."""
    v = machine.get("versions", {})
    flags = machine.get("cpu_flags")
    if flags is None:  # recorded by an older job record that did not know the flags
        flag_text = "flags unknown"
    else:
        flag_text = f"flags: {', '.join(flags) or 'none of ' + '/'.join(SPEED_FLAGS)}"
    libraries = [f"TensorFlow {v.get('tensorflow') or v.get('tensorflow-cpu')}", f"Horovod {v.get('horovod')}"]
    if v.get("torch"):
        libraries.append(f"PyTorch {v['torch']}")
    onednn = onednn_text(machine)
    rates = machine.get("matmul_gflops")  # hvdweather.bench.compute, where a benchmark measured it
    matmul = ("; float32 matmul " + ", ".join(f"{rate:g} GFLOP/s on {threads} thread(s)"
                                              for threads, rate in rates.items())) if rates else ""
    return (f"Machine: {machine.get('host')}, {machine.get('cores')} cores ({machine.get('cpu_model')}; "
            f"{flag_text}); {', '.join(libraries)}, {machine.get('mpi')}{onednn}{matmul}; {machine.get('date')}.")


def write_machine(out: str | Path, machine: dict[str, Any]) -> None:
    """machine.json next to the benchmark's tables."""
    Path(out, "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
