"""Shared fixtures: small synthetic data sets made once per test session, one SLURM test cluster per
session, and a CLI runner."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil  # a dependency of Horovod's launcher, so always installed with it
import pytest

from cluster.slurm import SlurmCluster, single_node_cluster

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")

BIN = Path(sys.executable).parent  # the venv's bin: hvdweather-*, horovodrun
# 44 real MWD photos (CC BY 4.0; tests/data/mwd/README.md): a duplicate pair in one class, one across
# extensions, a GIF named .jpg and a large photo.
MWD_SAMPLE = Path(__file__).parent / "data" / "mwd"


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """11 classes x 24 images (about 260 files, JPEG and PNG, varied sizes)."""
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    make_synthetic_dataset(root, images_per_class=24, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 8 images: for checks that do not need learning."""
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    make_synthetic_dataset(root, images_per_class=8, seed=1, classes=("fogsmog", "lightning", "rainbow"))
    return root


@pytest.fixture(scope="session")
def dirty_data(tiny_data, tmp_path_factory) -> Path:
    """tiny_data (3 classes x 8) plus a file that is not an image and an empty one."""
    import shutil

    root = tmp_path_factory.mktemp("dirty") / "data"
    shutil.copytree(tiny_data, root)
    (root / "fogsmog" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "rainbow" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def job_data(tmp_path_factory) -> Path:
    """11 classes x 12 images: enough for 2 ranks x batch 8 and one epoch (the SLURM and mpirun jobs)."""
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("jobdata") / "data"
    make_synthetic_dataset(root, images_per_class=12, seed=3)
    return root


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """One single-node SLURM cluster (tests/cluster/slurm.py) for the whole session, started when a test
    first asks for it; its daemons are stopped by pid when the session ends, also after failures."""
    with single_node_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's SLURM cluster, with nothing of an earlier test left in its queue: whatever a test
    leaves pending or running is cancelled after it. Jobs keep their state apart by running in the
    test's own tmp_path (their runs/ and output files are relative to the submit directory)."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


# mpirun as root, 2 ranks on a 2-core machine whatever its slot count, TF quiet in every rank.
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x", "TF_CPP_MIN_LOG_LEVEL", "-x", "PATH"]


def run_mpirun(*args: str, timeout: float = 150, env: dict | None = None) -> subprocess.CompletedProcess:
    """`mpirun -np 2` of a command (a name in the venv's bin, or a path), output captured."""
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    return run_cli(*MPIRUN, exe, *args[1:], timeout=timeout, env=env)


def run_cli(*args: str, timeout: float = 600, env: dict | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run a command (first arg: a name in the venv's bin, else on PATH, or a path) and capture output;
    `cwd`: the folder it starts in, as a user's shell would (relative paths are relative to it)."""
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)


# ------------------------------------------------------------- processes a test may signal: its own


def own_processes(root_pid: int, **environ: str) -> list[psutil.Process]:
    """The processes started, at any depth, by `root_pid` (a child this test started), optionally only
    those whose environment holds `environ` (e.g. HOROVOD_RANK="1"). A test signals these and no others:
    never a scan of the machine, where another suite's ranks or a user's job would match too. The tree
    is walked by parent pid, so it also finds ranks a launcher put in sessions of their own (horovodrun's
    middleman calls setsid, and mpirun gives every rank its own process group)."""
    try:
        tree = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in tree:
        try:
            if all(process.environ().get(k) == v for k, v in environ.items()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def alive(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie counts as gone: it only waits for its parent to reap it)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


def kill_all(processes: Iterable[psutil.Process]) -> None:
    """SIGKILL each of these processes (psutil checks that each pid is still the process it was)."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def wait_gone(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `processes` runs, at most `timeout` seconds; return those still running."""
    processes = list(processes)
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(processes)


def wait_until(condition, what: str, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll `condition()` until true; fail naming `what` if `process` ends first or `timeout` passes (with the
    tail of `log`). A poll interval, not a sleep the test relies on: the condition decides."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise AssertionError(f"no {what} (exit {process.poll()}); log:\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def own_tree(process: subprocess.Popen) -> Iterator[list[psutil.Process]]:
    """Yields a list the test may fill with snapshots of `process`'s tree (own_processes); on the way out,
    also when the test fails, SIGKILLs whatever of it still runs: the snapshots (a launcher killed first
    leaves its ranks orphaned, out of reach of a walk from its pid), the tree as it is now, the process."""
    seen: list[psutil.Process] = []
    try:
        yield seen
    finally:
        kill_all([*own_processes(process.pid), *seen])
        process.kill()
        process.wait(timeout=30)


# ------------------------------------------- tests/scripts/hold_in_epoch.py: a run held inside an epoch

HOLD_SCRIPT = Path(__file__).parent / "scripts" / "hold_in_epoch.py"


def held_train(epoch: int, step: int, mark: Path, who: str, *train_args: str) -> list[str]:
    """hvdweather-train's command line run by the harness that holds `who` after `step` of `epoch`."""
    return [sys.executable, str(HOLD_SCRIPT), str(epoch), str(step), str(mark), who, "--", *train_args]


def held(mark: Path) -> list[dict]:
    """The processes holding at `mark` so far: pid, primary, host, horovod_hostname."""
    return [json.loads(path.read_text()) for path in sorted(mark.parent.glob(f"{mark.name}.*"))
            if path.name.split(".")[-1].isdigit()]


def release(mark: Path, pid: int) -> None:
    """Let the process holding at `mark` go on (its FIFO opened and closed)."""
    mark.with_name(f"{mark.name}.{pid}.go").write_text("go")
