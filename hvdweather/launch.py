"""Find and run one command in its own process group, output to a log, a timeout that ends everything:
how the benchmarks run each measured process and hvdweather-sweep runs each cell.

`horovodrun` and `mpirun` start ranks as grandchildren; killing the group is what ends them all.
"""
from __future__ import annotations

import contextlib
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
LAUNCH_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
              "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
_GRACE_S = 20  # after SIGTERM (then SIGKILL): horovodrun and mpirun pass it on to their ranks first


def executable(name: str, given: str = "", flag: str = "", hint: str = "") -> str:
    """Path of a command: `given` if set, else the one next to this Python, else on PATH.

    This Python's bin comes first because it is the venv whose hvdweather and horovodrun match the
    caller's own code; a PATH entry could belong to another install. A missing command is a
    ConfigError naming `flag` (or the command), so it fails before any run.
    """
    found = shutil.which(given) if given else (shutil.which(str(Path(sys.executable).parent / name))
                                                  or shutil.which(name))
    if found:
        return found
    if given:
        raise ConfigError(f"{flag or name} {given}: not found or not executable{hint}")
    raise ConfigError(f"{flag + ': ' if flag else ''}{name} not found next to {sys.executable} or on PATH{hint}")


def launch(command: list[str], log: Path, timeout_s: float, timeout_words: str = "the per-run timeout of",
           die_with_parent: bool = False) -> tuple[int | None, float]:
    """Run `command` with output to `log`: (exit code, or None on timeout; wall seconds). Never hangs: its
    process group is ended on timeout (timeout_s 0 = no limit), on Ctrl-C or on any error here, so no rank
    lingers. The log then ends 'killed after {timeout_words} {timeout_s} s'. `die_with_parent`: the command
    also gets SIGTERM when this process dies, even by SIGKILL (a sweep's cell must not outlive its sweep)."""
    start = time.perf_counter()
    with log.open("w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        try:  # own session, so a timeout can end horovodrun, mpirun and every rank together
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                    env={**os.environ, **LAUNCH_ENV}, start_new_session=True,
                                    preexec_fn=_die_with_parent if die_with_parent else None)
        except OSError as exc:
            handle.write(f"cannot start: {exc}\n")
            return 127, time.perf_counter() - start
        try:
            code = proc.wait(timeout=timeout_s or None)
        except subprocess.TimeoutExpired:
            code = None
            handle.write(f"\nkilled after {timeout_words} {timeout_s:g} s\n")
        finally:
            _end_group(proc)
    return code, time.perf_counter() - start


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the command's whole process group (its launcher's ranks too), unless the
    command has ended."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_GRACE_S)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this process dies, even by SIGKILL (Linux prctl
    PR_SET_PDEATHSIG); horovodrun and mpirun pass the signal on to their ranks."""
    import ctypes  # only in the forked child, and only on this path

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def last_log_line(log: Path) -> str:
    """The last non-empty line of a log: usually the one-line error of a refused run or a traceback's last."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
