"""Shared fixtures: small synthetic data sets made once per test session, one SLURM test cluster per
session, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
