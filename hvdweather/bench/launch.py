"""Find and run one benchmark command: its own process group, output to a log, a timeout that ends
everything. Every benchmark finds its executables with `executable` and runs them with `launch`.

`horovodrun` and `mpirun` start ranks as grandchildren; killing the group is what ends them all.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hvdweather.errors import ConfigError

# Quiet TF, unbuffered logs, and mpirun as root (CI and the clusters' containers run as root).
BENCH_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
             "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def executable(name: str, given: str = "", flag: str = "", hint: str = "") -> str:
    """Path of a command: `given` if set, else the one next to this Python, else on PATH.

    This Python's bin comes first because it is the venv whose hvdweather and horovodrun match the
    benchmark's own code; a PATH entry could belong to another install. A missing command is a
    ConfigError naming `flag` (or the command), so it fails before any run.
    """
    found = shutil.which(given) if given else (shutil.which(str(Path(sys.executable).parent / name))
                                                  or shutil.which(name))
    if found:
        return found
    if given:
        raise ConfigError(f"{flag or name} {given}: not found or not executable{hint}")
    raise ConfigError(f"{flag + ': ' if flag else ''}{name} not found next to {sys.executable} or on PATH{hint}")


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
