"""Runs across hosts: hvdweather on two network-namespace hosts of this machine (tests/cluster/netns.py),
each with its own address on a private bridge, hostname and sshd. Ranks are launched over ssh and talk
over the bridge interface `hvd0`; every launcher runs inside hostA, never in the root namespace.

    make install-multihost && .venv/bin/pytest -m multihost tests/test_multihost.py

Each run checks that the ranks ran on two hosts (ranks.json records platform.node() per rank) and that
the traffic crossed the bridge (hostB's interface counters grew by at least a gradient per step).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cluster import netns
from conftest import BIN

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).parent / "scripts"
# 1 epoch at batch 4 per worker on 11 x 6 images (44 train: 5 steps); 1 thread each, 2 ranks on 2 cores.
TRAIN = ["--epochs", "1", "--batch-size", "4", "--threads-per-worker", "1", "--verbose", "2", "--seed", "1"]
HOSTS = "hostA:1,hostB:1"

pytestmark = [pytest.mark.multihost, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> Iterator[netns.NamespaceHosts]:
    """hostA and hostB; everything removed afterwards, also when a test fails, and checked to be gone."""
    try:
        netns.check_can_run()
    except RuntimeError as exc:  # a failure, not a skip: CI runs as root with `make test`'s installs
        pytest.fail(str(exc))
    state = tmp_path_factory.mktemp("hosts")
    started = netns.up(state, 2)
    try:
        yield started
    finally:
        left = netns.down(state)
        assert not left, f"namespace hosts not fully removed: {left}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("multihost") / "data"
    make_synthetic_dataset(root, images_per_class=6, seed=2)
    return root


def launch_env(**extra: str) -> dict[str, str]:
    """This environment with the venv's bin first and no scheduler/job settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HVDW_", "PMIX_", "OMPI_"))}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_on_hostA(hosts: netns.NamespaceHosts, args: list[str], cwd: Path, timeout: float, **env: str):
    done = hosts.run("hostA", args, timeout=timeout, cwd=cwd, env=launch_env(**env))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def check_two_host_run(run: Path, hosts: netns.NamespaceHosts, bridge_bytes: int) -> None:
    """Two ranks on two hosts with identical final weights, and the gradients went over the bridge."""
    ranks = json.loads((run / "ranks.json").read_text())
    assert [(r["rank"], r["host"]) for r in ranks] == [(0, "hostA"), (1, "hostB")]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["world_size"] for m in metrics] == [2]
    steps = json.loads((run / "config.json").read_text())["plan"]["steps_per_epoch"] * len(metrics)
    # last.keras holds the weights and one SGD momentum slot per weight, so half of it is about one
    # gradient. A 2-rank ring allreduce sends and receives about one gradient per step on each rank:
    # hostB's counters must show at least that, which only traffic over hvd0 can produce.
    gradient_bytes = (run / "last.keras").stat().st_size // 2
    assert bridge_bytes >= steps * gradient_bytes, (bridge_bytes, steps, gradient_bytes)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("controller", ["--mpi", "--gloo"])
def test_horovodrun_two_hosts(controller: str, hosts: netns.NamespaceHosts, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    before = hosts.interface_bytes("hostB")
    run_on_hostA(hosts, ["horovodrun", "--disable-cache", controller, "-np", "2", "-H", HOSTS,
                         "--network-interface", netns.INTERFACE, "--ssh-identity-file", str(hosts.key),
                         "--ssh-port", str(netns.SSH_PORT), "hvdweather-train", "--data", str(data),
                         "--out", str(run), *TRAIN], tmp_path, timeout=220)
    check_two_host_run(run, hosts, hosts.interface_bytes("hostB") - before)


@pytest.mark.timeout(240)
def test_mpirun_job_script_with_hostfile(hosts: netns.NamespaceHosts, data: Path, tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("".join(f"{name} slots=1\n" for name in hosts.names))
    before = hosts.interface_bytes("hostB")
    # The ssh key is the site's business, not the job's: OpenMPI takes ssh flags from plm_rsh_args.
    ssh = " ".join(hosts.ssh_options())
    run_on_hostA(hosts, [str(REPO / "jobs" / "mpirun" / "train_horovod.sh"), *TRAIN], tmp_path, timeout=220,
                 HVDW_DATA=str(data), HVDW_HOSTFILE=str(hostfile), HVDW_NETWORK_INTERFACE=netns.INTERFACE,
                 OMPI_MCA_plm_rsh_args=ssh)
    (run,) = (tmp_path / "runs").iterdir()
    check_two_host_run(run, hosts, hosts.interface_bytes("hostB") - before)
    record = json.loads((run / "job.json").read_text())
    assert record["hosts"] == ["hostA", "hostB"] and record["ranks"] == 2 and record["exit_status"] == 0
    assert f"--hostfile {hostfile}" in record["command_line"]
    assert "-mca btl_tcp_if_include hvd0 -mca oob_tcp_if_include hvd0" in record["command_line"]


@pytest.mark.timeout(200)
def test_half_batch_gradients_averaged_across_hosts(hosts: netns.NamespaceHosts, tmp_path: Path) -> None:
    """tests/test_distributed.py's exactness check with the two ranks on two hosts."""
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    run_on_hostA(hosts, [sys.executable, str(SCRIPTS / "first_step.py"), str(one)], tmp_path, timeout=90)
    run_on_hostA(hosts, ["horovodrun", "--disable-cache", "-np", "2", "-H", HOSTS, "--network-interface",
                         netns.INTERFACE, "--ssh-identity-file", str(hosts.key), "--ssh-port", str(netns.SSH_PORT),
                         sys.executable, str(REPO / "tests" / "cluster" / "where.py"), str(tmp_path),
                         str(SCRIPTS / "first_step.py"), str(two)], tmp_path, timeout=150)
    assert [(tmp_path / f"rank-{r}.txt").read_text().strip() for r in (0, 1)] == ["hostA", "hostB"]
    a, b = np.load(one), np.load(two)
    assert len(a.files) == len(b.files) == 4
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0)
    assert any(np.abs(a[key]).sum() > 0 for key in a.files)
