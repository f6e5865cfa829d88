"""Run one benchmark command: its own process group, output to a log, a timeout that ends everything.

`horovodrun` and `mpirun` start ranks as grandchildren; killing the group is what ends them all.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

# Quiet TF, unbuffered logs, and mpirun as root (CI and the clusters' containers run as root).
BENCH_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
             "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def launch(command: list[str], log: Path, timeout_s: float) -> tuple[int | None, float]:
    """Run `command` with output to `log`; (exit code or None on timeout, wall seconds). Never hangs."""
    env = {**os.environ, **BENCH_ENV}
    start = time.perf_counter()
    with log.open("w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        try:  # own session, so a timeout can end horovodrun, mpirun and every rank together
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        except OSError as exc:
            handle.write(f"cannot start: {exc}\n")
            return 127, time.perf_counter() - start
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            handle.write(f"\nkilled after the per-run timeout of {timeout_s:g} s\n")
            code = None
    return code, time.perf_counter() - start


def _end_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
