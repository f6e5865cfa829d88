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
import pickle
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_elastic import _rows, _write_hosts

from cluster import netns
from cluster.slurm import SlurmCluster, job_env, start_munged, stop, wait_idle
from conftest import BIN, held, held_train, kill_all, own_processes, own_tree, wait_until

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
    assert metrics and {m["world_size"] for m in metrics} == {2}
    steps = json.loads((run / "config.json").read_text())["plan"]["steps_per_epoch"] * len(metrics)
    # last.keras holds the weights and one SGD momentum slot per weight, so half of it is about one
    # gradient. A 2-rank ring allreduce sends and receives about one gradient per step on each rank:
    # hostB's counters must show at least that, which only traffic over hvd0 can produce.
    gradient_bytes = (run / "last.keras").stat().st_size // 2
    assert bridge_bytes >= steps * gradient_bytes, (bridge_bytes, steps, gradient_bytes)


def horovodrun_two_hosts(hosts: netns.NamespaceHosts, controller: str, *command: str) -> list[str]:
    return ["horovodrun", "--disable-cache", controller, "-np", "2", "-H", HOSTS, "--network-interface",
            netns.INTERFACE, "--ssh-identity-file", str(hosts.key), "--ssh-port", str(netns.SSH_PORT), *command]


@pytest.fixture(scope="module")
def gloo_two_hosts(hosts: netns.NamespaceHosts, data: Path, tmp_path_factory) -> tuple[Path, int]:
    """horovodrun --gloo on hostA and hostB, 2 epochs, and the bytes hostB's interface moved meanwhile:
    test_horovodrun_two_hosts[--gloo] checks it; the node-lost test resumes to the same weights."""
    cwd = tmp_path_factory.mktemp("gloo2")
    run, before = cwd / "run", hosts.interface_bytes("hostB")
    run_on_hostA(hosts, horovodrun_two_hosts(hosts, "--gloo", "hvdweather-train", "--data", str(data), "--out",
                                             str(run), *TRAIN, "--epochs", "2"), cwd, timeout=220)
    return run, hosts.interface_bytes("hostB") - before


@pytest.mark.timeout(240)
@pytest.mark.parametrize("controller", ["--mpi", "--gloo"])
def test_horovodrun_two_hosts(controller: str, hosts: netns.NamespaceHosts, data: Path, tmp_path: Path,
                              request: pytest.FixtureRequest) -> None:
    if controller == "--gloo":
        run, bridge_bytes = request.getfixturevalue("gloo_two_hosts")
    else:
        run, before = tmp_path / "run", hosts.interface_bytes("hostB")
        run_on_hostA(hosts, horovodrun_two_hosts(hosts, controller, "hvdweather-train", "--data", str(data),
                                                 "--out", str(run), *TRAIN), tmp_path, timeout=220)
        bridge_bytes = hosts.interface_bytes("hostB") - before
    check_two_host_run(run, hosts, bridge_bytes)


def start_on_hostA(hosts: netns.NamespaceHosts, args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    """A launcher in hostA, output to `log`, for tests that act while it runs (see own_tree)."""
    return subprocess.Popen([*hosts.prefix("hostA"), *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=launch_env(**env))


def lose_hostB(hosts: netns.NamespaceHosts) -> None:
    """hostB lost: SIGKILL to every process its sshd started (the workers and their ssh sessions). That
    sshd is this test session's own child (netns.up), so nothing outside the test is touched."""
    sessions = own_processes(hosts.host("hostB").sshd_pid)
    assert sessions, "nothing runs on hostB"
    kill_all(sessions)


@pytest.mark.timeout(500)
def test_node_lost_mid_epoch_then_resume_is_bit_identical(hosts: netns.NamespaceHosts, data: Path,
                                                          gloo_two_hosts: tuple[Path, int], tmp_path: Path) -> None:
    """README's "a node lost": hostB's worker is held inside epoch 2, then everything hostB runs is
    SIGKILLed; the launcher on hostA ends the job (non-zero, within a minute), and the same launch with
    --resume ends with the uninterrupted run's weights and metrics, bit for bit."""
    run, mark, log = tmp_path / "run", tmp_path / "mark", tmp_path / "job.log"
    train = ["--data", str(data), "--out", str(run), *TRAIN, "--epochs", "2"]
    held_run = held_train(2, 1, mark, "host=hostB", *train)
    launcher = start_on_hostA(hosts, horovodrun_two_hosts(hosts, "--gloo", *held_run), tmp_path, log)
    with own_tree(launcher):
        wait_until(lambda: held(mark), "hostB's worker held inside epoch 2", launcher, 200, log)
        lose_hostB(hosts)
        assert launcher.wait(timeout=60) != 0, log.read_text()[-3000:]
    assert pickle.loads((run / "resume_state.pkl").read_bytes())["epochs_done"] == 1
    resumed = run_on_hostA(hosts, horovodrun_two_hosts(hosts, "--gloo", "hvdweather-train", "--out", str(run),
                                                       "--resume"), tmp_path, timeout=220)
    assert "resuming after epoch 1" in resumed.stdout
    reference, _ = gloo_two_hosts
    assert [r["weights_sha256"] for r in json.loads((run / "ranks.json").read_text())] == \
           [r["weights_sha256"] for r in json.loads((reference / "ranks.json").read_text())]
    keys = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "world_size")
    assert [[row[k] for k in keys] for row in _rows(run)] == [[row[k] for k in keys] for row in _rows(reference)]


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


@pytest.mark.elastic
@pytest.mark.timeout(300)
def test_elastic_run_loses_hostB_and_finishes_on_hostA(hosts: netns.NamespaceHosts, data: Path,
                                                        tmp_path: Path) -> None:
    """Elastic Horovod with ssh-started workers on two hosts: hostB's worker is held inside epoch 2 (hostA's
    waits in its next allreduce), the discovery file drops hostB and everything hostB runs is SIGKILLed;
    hostA goes back to epoch 1's commit and trains epochs 2 and 3 alone (tests/test_elastic.py has the
    one-machine cases: rank 0 lost, a host added). Without the hold, the kill raced epoch 2's end."""
    hosts_file, run, mark, log = tmp_path / "hosts.txt", tmp_path / "run", tmp_path / "mark", tmp_path / "job.log"
    _write_hosts(hosts_file, ["hostA", "hostB"])
    before = hosts.interface_bytes("hostB")
    train = ["--elastic", "--data", str(data), "--out", str(run), "--model", "resnet18", "--image-size", "32",
             *TRAIN[2:], "--epochs", "3"]
    command = ["horovodrun", "--disable-cache", "-np", "2", "--min-np", "1", "--max-np", "2",
               "--host-discovery-script", str(REPO / "jobs" / "lib" / "discover_hosts_file.sh"),
               "--elastic-timeout", "60", "--network-interface", netns.INTERFACE,
               "--ssh-identity-file", str(hosts.key), "--ssh-port", str(netns.SSH_PORT),
               *held_train(2, 1, mark, "host=hostB", *train)]
    launcher = start_on_hostA(hosts, command, tmp_path, log, HVDW_HOSTS_FILE=str(hosts_file))
    with own_tree(launcher):
        wait_until(lambda: held(mark), "hostB's worker held inside epoch 2", launcher, 240, log)
        bridge_bytes = hosts.interface_bytes("hostB") - before
        _write_hosts(hosts_file, ["hostA"])
        lose_hostB(hosts)
        assert launcher.wait(timeout=250) == 0, log.read_text()[-3000:]
    rows = _rows(run)
    assert [(r["epoch"], r["world_size"]) for r in rows] == [(1, 2), (2, 1), (3, 1)]
    assert bridge_bytes > (run / "last.keras").stat().st_size // 2  # epoch 1's gradients crossed hvd0
    assert [r["host"] for r in json.loads((run / "ranks.json").read_text())] == ["hostA"]


# ---------------------------------------------------------------- a 2-node SLURM cluster on the hosts


SLURM_TOOLS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo")


def _slurm_shims(hosts: netns.NamespaceHosts, bin_dir: Path) -> None:
    """sbatch, scontrol, ... that run inside hostA when called from outside the hosts (the test), and
    directly inside a host (the jobs' own scontrol/srun calls): never from the root namespace."""
    bin_dir.mkdir()
    for tool in SLURM_TOOLS:
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\nif [ -n "$(ip netns identify $$)" ]; then exec /usr/bin/{tool} "$@"; fi\n'
                        f'exec {shlex.join(hosts.prefix("hostA"))} /usr/bin/{tool} "$@"\n')
        shim.chmod(0o755)


def _two_node_conf(state: Path, munge_socket: Path, hosts: netns.NamespaceHosts) -> Path:
    """slurm.conf: slurmctld on hostA, one slurmd per host (NodeName/NodeAddr), one partition of both.

    Each node claims this machine's cores (`slurmd -C`), so the cluster has twice as many as the machine;
    the jobs here ask for 1 CPU per task. Fixed ports are free: they are inside our own namespaces.
    """
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    fields = dict(item.split("=", 1) for item in node.split())
    hardware = " ".join(f"{k}={fields[k]}" for k in ("CPUs", "CoresPerSocket", "ThreadsPerCore", "RealMemory"))
    lines = ["ClusterName=hvdwmulti", f"SlurmctldHost=hostA({hosts.host('hostA').address})",
             "SlurmctldPort=6817", "SlurmdPort=6818", "SlurmUser=root", "AuthType=auth/munge",
             "CredType=cred/munge", f"AuthInfo=socket={munge_socket}", f"StateSaveLocation={state}/ctld",
             f"SlurmdSpoolDir={state}/d-%n", f"SlurmctldPidFile={state}/slurmctld.pid",
             f"SlurmdPidFile={state}/slurmd-%n.pid", f"SlurmctldLogFile={state}/slurmctld.log",
             f"SlurmdLogFile={state}/slurmd-%n.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
             "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
             "JobCompType=jobcomp/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
             "MpiDefault=none", "SchedulerParameters=batch_sched_delay=0", "MailProg=/bin/true",
             "ReturnToService=2", "MinJobAge=600",
             # Per node: srun --mpi=pmix makes /tmp/spmix_appdir_<uid>_<job>.<step> on each node, and both
             # "nodes" share this machine's /tmp (the second one fails with "File exists").
             f"TmpFS={state}/tmp-%n"]
    lines += [f"NodeName={h.name} NodeAddr={h.address} Sockets={fields['SocketsPerBoard']} {hardware}"
              for h in hosts.hosts]
    lines.append(f"PartitionName=debug Nodes={','.join(hosts.names)} Default=YES MaxTime=INFINITE State=UP")
    for sub in ("ctld", *(f"{kind}-{name}" for name in hosts.names for kind in ("d", "tmp"))):
        (state / sub).mkdir(parents=True, exist_ok=True)
    conf = state / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


@pytest.fixture(scope="module")
def slurm2(hosts: netns.NamespaceHosts, tmp_path_factory) -> Iterator[SlurmCluster]:
    """munged (its socket is a file: every namespace reaches it), slurmctld in hostA, slurmd in hostA and
    hostB; the SLURM commands reach them through the shims. Stopped by pid even when a test fails."""
    munge_dir = Path(tempfile.mkdtemp(prefix="hvdw-munge-"))
    state = tmp_path_factory.mktemp("slurm2")
    pid_files = [state / "slurmd-hostA.pid", state / "slurmd-hostB.pid", state / "slurmctld.pid",
                 munge_dir / "munged.pid"]
    _slurm_shims(hosts, state / "bin")
    cluster = SlurmCluster(state, job_env(PATH=f"{state / 'bin'}{os.pathsep}{os.environ['PATH']}"))
    try:
        conf = _two_node_conf(state, start_munged(munge_dir), hosts)
        cluster.env["SLURM_CONF"] = str(conf)
        for host, daemon in (("hostA", ["slurmctld"]), ("hostA", ["slurmd", "-N", "hostA"]),
                             ("hostB", ["slurmd", "-N", "hostB"])):
            done = hosts.run(host, [*daemon, "-f", str(conf)], timeout=60, env=cluster.env, machine_sys=True)
            assert done.returncode == 0, f"{daemon} on {host}: {done.stderr}"
        wait_idle(cluster.env, state)
        yield cluster
    finally:
        if "SLURM_CONF" in cluster.env:
            cluster.cancel_all()
        stop(pid_files)
        shutil.rmtree(munge_dir, ignore_errors=True)


@pytest.mark.slurm
@pytest.mark.timeout(300)
@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_sbatch_two_nodes_train_horovod(launcher: str, slurm2: SlurmCluster, hosts: netns.NamespaceHosts,
                                        data: Path, tmp_path: Path) -> None:
    before = hosts.interface_bytes("hostB")
    job_id, code = slurm2.submit(REPO / "jobs" / "slurm" / "train_horovod.sbatch", *TRAIN,
                                 sbatch=("-N2", "--ntasks-per-node=1", "-c1"), cwd=tmp_path, timeout=280,
                                 env={"HVDW_DATA": str(data), "HVDW_NETWORK_INTERFACE": netns.INTERFACE,
                                      "HVDW_LAUNCHER": launcher})
    slurm2.assert_completed(job_id, code)
    run = tmp_path / "runs" / f"train-horovod-{job_id}"
    check_two_host_run(run, hosts, hosts.interface_bytes("hostB") - before)
    record = json.loads((run / "job.json").read_text())
    assert record["hosts"] == ["hostA", "hostB"] and record["ranks"] == 2
    if launcher == "srun":
        assert record["command"][:2] == ["srun", "--mpi=pmix"]
        assert "OMPI_MCA_btl_tcp_if_include=hvd0" in (run / "env.txt").read_text()
    else:  # OpenMPI takes the nodes from the allocation and starts its daemons with srun
        assert record["command"][:3] == ["mpirun", "-np", "2"] and "--hostfile" not in record["command"]
        assert "-mca btl_tcp_if_include hvd0" in record["command_line"]


@pytest.mark.slurm
@pytest.mark.timeout(200)
def test_sbatch_two_nodes_eda_mpi(slurm2: SlurmCluster, data: Path, tmp_path: Path) -> None:
    job_id, code = slurm2.submit(REPO / "jobs" / "slurm" / "eda_mpi.sbatch", "--no-plots",
                                 sbatch=("-N2", "--ntasks-per-node=1"), cwd=tmp_path, timeout=180,
                                 env={"HVDW_DATA": str(data), "HVDW_NETWORK_INTERFACE": netns.INTERFACE})
    slurm2.assert_completed(job_id, code)
    run = tmp_path / "runs" / f"eda-mpi-{job_id}"
    assert json.loads((run / "job.json").read_text())["hosts"] == ["hostA", "hostB"]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["run"]["executor"], summary["run"]["workers"]) == ("mpi", 2)
    # The same sums as one process computing everything (integer sums: exact in any split).
    from hvdweather.eda.analyse import run_eda
    from hvdweather.eda.executor import SequentialExecutor

    alone = run_eda(str(data), str(tmp_path / "alone"), SequentialExecutor(), plots=False, progress=False)
    assert {k: v for k, v in summary.items() if k != "run"} == {k: v for k, v in alone.items() if k != "run"}
    with np.load(run / "histograms.npz") as a, np.load(tmp_path / "alone" / "histograms.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
