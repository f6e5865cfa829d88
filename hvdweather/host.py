"""Facts about the machine and launch this process runs in: cores, CPU model and flags, library versions,
the launcher's process count and rank; and catching what C/C++ libraries write to stderr (XLA's start-up
lines, libjpeg's warnings).

TensorFlow-free (versions come from package metadata), so one-line errors, the EDA, the benchmarks'
parent processes and the batch jobs' records can all use it without paying for a TensorFlow import;
only `start_xla_quietly` imports TensorFlow, when called.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Packages whose versions decide behaviour or speed; absent ones are left out of `versions()`.
PACKAGES = ("hvdweather", "tensorflow-cpu", "tensorflow", "keras", "horovod", "mpi4py", "numpy", "torch")
# CPU flags that decide TensorFlow's kernels: oneDNN is on by default only with the VNNI/BF16/AMX ones.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")


# TensorFlow 2.15 turns its oneDNN kernels on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; on
# AVX2-only CPUs it leaves them off, and training ran ~1.9x slower than with oneDNN capped at AVX2
# (docs/benchmarks.md, "CPU speed" in the stack notes). Every console script that imports TensorFlow
# takes --onednn on|off|auto and applies it (`apply_onednn`) before TensorFlow is imported: TF reads the
# variable once, at import.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ONEDNN_MODES = ("on", "off", "auto")
# The mode an hvdweather process applied, for the processes it starts: a child console script given no
# --onednn then keeps "auto" (the variable unset) instead of turning oneDNN on by default.
ONEDNN_MODE_ENV = "HVDWEATHER_ONEDNN"
# oneDNN's own cap on the instruction set it uses (e.g. AVX2): recorded next to the mode, never set here.
ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
# TF 2.15's DefaultOneDnnPolicy (tensorflow/core/util/util.cc): on x86 Linux oneDNN is on by default
# only when the CPU has one of these.
ONEDNN_DEFAULT_ON_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")
_ONEDNN_VALUES = {"1": "on", "true": "on", "0": "off", "false": "off"}  # what TF's env reader accepts
_onednn_request: dict[str, str] = {}


def apply_onednn(mode: str | None = None) -> dict[str, str]:
    """Set TF_ENABLE_ONEDNN_OPTS for --onednn `mode` before TensorFlow is imported: on = 1, off = 0, auto =
    unset (TensorFlow's choice for this CPU). With no mode given the user's TF_ENABLE_ONEDNN_OPTS wins,
    then a parent hvdweather process's auto, else on. Returns (and remembers) what was asked and why."""
    if mode is None:
        given = os.environ.get(ONEDNN_ENV)
        if given is not None:
            request = {"mode": _ONEDNN_VALUES.get(given.strip().lower(), f"{ONEDNN_ENV}={given}"),
                       "source": "environment"}
        elif os.environ.get(ONEDNN_MODE_ENV) == "auto":
            request = {"mode": "auto", "source": "environment"}
        else:
            request = {"mode": "on", "source": "default"}
    elif mode in ONEDNN_MODES:
        request = {"mode": mode, "source": "flag"}
    else:
        raise ValueError(f"--onednn must be one of {', '.join(ONEDNN_MODES)}, got {mode!r}")
    if request["source"] != "environment" or request["mode"] == "auto":
        if request["mode"] == "auto":
            os.environ.pop(ONEDNN_ENV, None)
        else:
            os.environ[ONEDNN_ENV] = "1" if request["mode"] == "on" else "0"
    if request["mode"] in ONEDNN_MODES:
        os.environ[ONEDNN_MODE_ENV] = request["mode"]
    _onednn_request.clear()
    _onednn_request.update(request)
    return dict(request)


def prefer_onednn() -> None:
    """oneDNN on unless the environment says otherwise: `apply_onednn()` with no --onednn given."""
    apply_onednn(None)


def onednn_request() -> dict[str, str | None]:
    """What this process asked of oneDNN: mode (on/off/auto), source (flag, environment, default or
    'not applied' when no console script set it) and oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) if any."""
    request = dict(_onednn_request) or {"mode": _ONEDNN_VALUES.get(os.environ.get(ONEDNN_ENV, "").strip().lower(),
                                                                   "auto"), "source": "not applied"}
    return request | {"max_cpu_isa": os.environ.get(ONEDNN_ISA_ENV) or None}


def onednn_state() -> str:
    """on / off: as TensorFlow runs it (asked once it is loaded), else as TF 2.15 will decide it from the
    environment and, with TF_ENABLE_ONEDNN_OPTS unset, from this CPU's flags (its DefaultOneDnnPolicy)."""
    if "tensorflow" in sys.modules:
        from tensorflow.python.util import _pywrap_util_port  # TF 2.15's own check of the setting and the CPU

        return "on" if _pywrap_util_port.IsMklEnabled() else "off"
    given = _ONEDNN_VALUES.get(os.environ.get(ONEDNN_ENV, "").strip().lower())
    if given:
        return given
    return "on" if set(cpu_flags()) & set(ONEDNN_DEFAULT_ON_FLAGS) else "off"


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX): elsewhere TensorFlow emulates it."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


# Set in every rank by mpirun/horovodrun (OpenMPI, MPICH/Intel MPI, PMIx, Gloo) and srun steps.
LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "HOROVOD_RANK", "SLURM_STEP_ID")


def under_launcher() -> bool:
    """Whether a launcher started this process: its stdout is then the launcher's (a pty under OpenMPI,
    whatever the user redirected the launcher's output to), so a terminal check says nothing."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def say(message: str, stream=None) -> None:
    """`message` and its newline in one write: a launcher tags each write it relays ("[1,0]<stdout>:"), and
    print's two writes on an unbuffered stream (horovodrun's ranks) leave a stray tag at the end of the line."""
    stream = sys.stdout if stream is None else stream
    stream.write(f"{message}\n")
    stream.flush()


def say_primary(message: str, stream=None, others_after_s: float | None = None) -> None:
    """The job's one voice before a backend (and its RunWriter) exists: `say` in the launcher's first rank,
    or in a process no launcher started. The other ranks stay quiet, since they would repeat it; with
    `others_after_s` they say it that many seconds later (a launcher that ends the job first hides them)."""
    if launched_rank() == 0:
        say(message, stream)
    elif others_after_s is not None:
        time.sleep(others_after_s)
        say(message, stream)


# What TensorFlow 2.15 prints the first time XLA runs in a process (the weather CNN's BatchNorm kernels and
# Keras's optimizer steps are XLA-compiled), on every rank: absl's notice that logging is not initialised,
# its INFO line, and an ERROR that is only a CPU stream lacking priorities. TF_CPP_MIN_LOG_LEVEL=2 hides
# none of them (the first two are absl's logging; 3 would hide every real error too).
XLA_START_LINES = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                   "Compiled cluster using XLA!  This line is logged at most once for the lifetime of the process.",
                   "] SetPriority unimplemented for this stream.")


@functools.cache
def start_xla_quietly() -> None:
    """Run a tiny XLA function once and pass on what it printed except XLA_START_LINES, which TensorFlow
    prints only once per process. Call after the training backend set TensorFlow's devices and threads:
    this starts TensorFlow."""
    import tensorflow as tf

    _, text = call_catching_stderr(lambda: tf.function(lambda x: x + 1, jit_compile=True)(tf.zeros([1])))
    os.write(2, drop_xla_start_lines(text).encode())


def call_catching_stderr(call: Callable[[], T]) -> tuple[T, str]:
    """`call()`'s result and what was written to file descriptor 2 meanwhile (where C and C++ libraries
    write: TensorFlow, libjpeg), which does not reach the terminal. Process-wide: a caller with threads
    holds a lock around it. If `call` raises, what it wrote goes on to stderr before the exception."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            result = call()
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            os.write(2, caught.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        return result, caught.read().decode(errors="replace")


def drop_xla_start_lines(text: str) -> str:
    """`text` without the lines that hold one of XLA_START_LINES (every other line kept, in order)."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(known in line for known in XLA_START_LINES))


def launched_processes() -> int:
    """How many processes the launcher started alongside this one (1 when none did)."""
    for name in ("OMPI_COMM_WORLD_SIZE", "HOROVOD_SIZE", "PMI_SIZE", "PMIX_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    if "SLURM_STEP_ID" in os.environ and os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


def launched_rank() -> int:
    """This process's rank as the launcher set it in the environment (0 when none did): for what only the
    first process should do before any collective exists (one-line errors, notes)."""
    for name in ("OMPI_COMM_WORLD_RANK", "HOROVOD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    if "SLURM_STEP_ID" in os.environ and os.environ.get("SLURM_PROCID", "").isdigit():
        return int(os.environ["SLURM_PROCID"])
    return 0


def available_cores() -> int:
    """Cores this process may run on (respects SLURM/taskset CPU masks, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0))


def _cpuinfo_field(name: str) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return ""
    for line in cpuinfo.read_text().splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def cpu_model() -> str:
    """The CPU's model name ('' where /proc/cpuinfo has none): context for every timing."""
    return _cpuinfo_field("model name") or platform.processor() or ""


def cpu_flags() -> list[str]:
    """The speed-relevant CPU flags this machine has (see SPEED_FLAGS), in that order."""
    have = set(_cpuinfo_field("flags").split())
    return [flag for flag in SPEED_FLAGS if flag in have]


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. '1.42 1.23 1.52' ('' where the OS has none): timings
    taken while other work runs are slower, so a benchmark records the load next to them."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return ""


def versions() -> dict[str, str]:
    """Python and the installed packages that decide behaviour, read without importing them."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
