"""The batch jobs in jobs/, run for real: a single-node SLURM cluster started from Debian's packages (daemons
in a temporary directory, no systemd), plain mpirun on a generated hostfile, and the LSF script parsed.

    make install-slurm && .venv/bin/pytest tests/test_jobs.py
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
SLURM_SCRIPTS = sorted((JOBS / "slurm").glob("*.sbatch"))
ALL_SCRIPTS = [*SLURM_SCRIPTS, JOBS / "lsf" / "train_horovod.lsf", JOBS / "mpirun" / "train_horovod.sh",
               JOBS / "lib" / "common.sh"]
TINY_TRAIN = ["--epochs", "1", "--batch-size", "8", "--val-split", "0.2", "--test-split", "0.2"]


def job_env(**extra: str) -> dict[str, str]:
    """The caller's environment without scheduler or job settings that would leak into the jobs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "LSB_", "HVDW_", "HVDWEATHER_", "PMIX_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if not (REPO / ".venv" / "bin" / "python").exists():  # tests run from another venv than make's
        env["HVDWEATHER_VENV"] = sys.prefix
    return {**env, **extra}


@pytest.fixture(scope="module")
def job_data(tmp_path_factory) -> Path:
    """11 classes x 12 images: enough for 2 ranks x batch 8 and one epoch."""
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("jobdata") / "data"
    make_synthetic_dataset(root, images_per_class=12, seed=3)
    return root


# ---------------------------------------------------------------- a real single-node SLURM cluster


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_munged(root: Path) -> Path:
    """A private munged (own key, socket, pid and log in `root`) run as the munge user; returns its socket.

    Nothing under /etc or /run is touched, so a munged the machine may already run is left alone.
    """
    if os.geteuid() != 0:  # a failure, not a skip: CI runs as root, and these tests must run there
        pytest.fail("the SLURM job tests start munged/slurmctld/slurmd and need root (as CI has)")
    for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} not installed: run `make install-slurm` (make test does it)")
    key = root / "munge.key"
    subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, timeout=30)
    for path in (root, key):
        shutil.chown(path, "munge", "munge")
    key.chmod(0o400)
    root.chmod(0o755)  # munged insists that every directory above its socket is traversable by all
    sock = root / "munge.socket"
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={sock}",
                    f"--key-file={key}", f"--pid-file={root / 'munged.pid'}",
                    f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}"],
                   check=True, timeout=30)
    return sock


def _slurm_conf(state: Path, munge_socket: Path) -> Path:
    """slurm.conf for one node (this host, as `slurmd -C` describes it) and one partition."""
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    fields = dict(item.split("=", 1) for item in node.split())
    host = fields["NodeName"]
    hardware = " ".join(f"{k}={fields[k]}" for k in ("CPUs", "CoresPerSocket", "ThreadsPerCore",
                                                     "RealMemory"))
    # Free ports, own state: a second cluster (another checkout's tests) on the same machine does not clash.
    lines = ["ClusterName=hvdwtest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
             f"SlurmdPort={_free_port()}", "SlurmUser=root", "AuthType=auth/munge", "CredType=cred/munge",
             f"AuthInfo=socket={munge_socket}", f"StateSaveLocation={state}/ctld",
             f"SlurmdSpoolDir={state}/d", f"SlurmctldPidFile={state}/slurmctld.pid",
             f"SlurmdPidFile={state}/slurmd.pid", f"SlurmctldLogFile={state}/slurmctld.log",
             f"SlurmdLogFile={state}/slurmd.log", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
             "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
             "JobCompType=jobcomp/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
             "MpiDefault=none", "SchedulerParameters=batch_sched_delay=0",  # else each job waits ~3 s
             "MailProg=/bin/true", "ReturnToService=2", "MinJobAge=600",  # keep finished jobs for scontrol
             f"NodeName={host} NodeAddr=127.0.0.1 Sockets={fields['SocketsPerBoard']} {hardware}",
             f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"]
    for sub in ("ctld", "d"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    conf = state / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def _stop(pid_files: list[Path]) -> None:
    """SIGTERM each daemon named by a pid file; SIGKILL any still running 10 s later."""
    pids = [int(f.read_text().split()[0]) for f in pid_files if f.exists() and f.read_text().strip()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}  # JobState values after which a job does not run again by itself


@dataclass
class SlurmCluster:
    """A running controller and node; `env` points the SLURM commands at them."""

    state: Path
    env: dict[str, str]

    def submit(self, script: Path, *args: str, sbatch: tuple[str, ...] = (), cwd: Path,
               env: dict[str, str] | None = None, timeout: float = 400,
               on_poll: Callable[[str], bool] | None = None) -> tuple[str, int]:
        """Submit and wait until the job (every task of an array) has ended: (job id, its exit code).

        Polls scontrol every 0.25 s rather than `sbatch --wait`, whose poll interval grows to several
        seconds per check. On timeout the cluster's jobs are cancelled, so nothing runs on behind a test.
        A requeued job is held back by SLURM (its BeginTime is set about two minutes ahead); the poll
        lets it start at once, as a cluster with other work would start it whenever it is eligible.
        `on_poll(job_id)` runs at every poll; while it returns False the job does not count as ended
        (a job being requeued shows its killed attempt's end, FAILED, for a while first).
        """
        command = ["sbatch", "--parsable", *sbatch, str(script), *args]
        done = subprocess.run(command, check=False, cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=60)
        match = re.match(r"(\d+)", done.stdout.strip())
        assert done.returncode == 0 and match, f"sbatch refused the job: {done.stdout!r} {done.stderr!r}"
        job_id, deadline = match.group(1), time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.jobs(job_id)
            may_end = on_poll(job_id) if on_poll else True
            if records and may_end and all(r["JobState"] in FINISHED for r in records):
                return job_id, max(int(r["ExitCode"].split(":")[0]) for r in records)
            for record in records:
                if record["JobState"] == "PENDING" and record.get("Reason") == "BeginTime":
                    subprocess.run(["scontrol", "update", f"JobId={record['JobId']}", "StartTime=now"],
                                   env=self.env, capture_output=True, check=False, timeout=30)
            time.sleep(0.25)
        self.cancel_all()
        pytest.fail(f"job {job_id} ({script.name}) still running after {timeout:g} s; cancelled")

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """scontrol's record of a job (one per array task): JobState, ExitCode, StdOut, ..."""
        text = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env, capture_output=True,
                              text=True, check=True, timeout=30).stdout
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]

    def cancel_all(self) -> None:
        """scancel every job of this (private) cluster and wait up to 15 s for them to leave the queue."""
        subprocess.run(["scancel", "--user", "root"], check=False, env=self.env, capture_output=True,
                       timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h"], check=False, env=self.env, capture_output=True,
                                   text=True, timeout=30)
            if queue.returncode != 0 or not queue.stdout.strip():
                return
            time.sleep(0.25)


def _wait_idle(env: dict[str, str], state: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, env=env, capture_output=True,
                              text=True, timeout=30)
        if done.stdout.strip() == "idle":
            return
        time.sleep(0.25)
    logs = "\n".join(p.read_text()[-2000:] for p in state.glob("*.log"))
    pytest.fail(f"SLURM node never became idle; daemon logs:\n{logs}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd from temporary directories; stop them by pid even on failure."""
    # Not under pytest's tmp (mode 0700): the munge user must be able to reach its socket.
    munge_dir = Path(tempfile.mkdtemp(prefix="hvdw-munge-"))
    state = tmp_path_factory.mktemp("slurm")
    pid_files = [state / "slurmd.pid", state / "slurmctld.pid", munge_dir / "munged.pid"]
    cluster = SlurmCluster(state, job_env())
    try:
        conf = _slurm_conf(state, _start_munged(munge_dir))
        cluster.env["SLURM_CONF"] = str(conf)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=cluster.env, check=True, timeout=60)
        _wait_idle(cluster.env, state)
        yield cluster
    finally:
        if "SLURM_CONF" in cluster.env:
            cluster.cancel_all()
        _stop(pid_files)
        shutil.rmtree(munge_dir, ignore_errors=True)


def _output(cluster: SlurmCluster, job_id: str) -> str:
    record = cluster.jobs(job_id)[0]
    path = Path(record["StdOut"])
    return path.read_text() if path.exists() else f"(no output file {path})"


def _assert_completed(cluster: SlurmCluster, job_id: str, exit_code: int) -> None:
    """Every task COMPLETED with exit code 0; else fail with the states and the tails of the output files."""
    records = cluster.jobs(job_id)
    states = [(r["JobState"], r["ExitCode"]) for r in records]
    outputs = "\n".join(Path(r["StdOut"]).read_text()[-4000:] for r in records if Path(r["StdOut"]).exists())
    assert exit_code == 0 and all(s == ("COMPLETED", "0:0") for s in states), f"job {job_id}: {states}\n{outputs}"


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(420)
def test_train_horovod_sbatch_runs_two_ranks(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    job_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *TINY_TRAIN, "--image-size", "256",
                                sbatch=("-N1", "--ntasks-per-node=2", "-c1"), cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data)})
    _assert_completed(slurm, job_id, code)
    run = tmp_path / "runs" / f"train-horovod-{job_id}"
    config = json.loads((run / "config.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    record = json.loads((run / "job.json").read_text())
    assert config["world"]["size"] == 2 and config["world"]["strategy"] == "horovod"
    assert [m["world_size"] for m in metrics] == [2] and metrics[0]["processes"] == 2  # one epoch, 2 ranks
    assert record["ranks"] == 2 and record["exit_status"] == 0 and record["hosts"]
    assert record["command"][:2] == ["srun", "--mpi=pmix"] and "--cpus-per-task=1" in record["command"]
    assert "hvdweather-train" in record["command_line"]
    assert {"horovod", "tensorflow-cpu", "openmpi", "slurm"} <= set(record["versions"])
    assert (run / "env.txt").read_text().count("SLURM_JOB_ID=") == 1
    assert (run / "report").is_dir() and (run / "last.keras").exists()


@pytest.mark.slurm
@pytest.mark.elastic
@pytest.mark.timeout(200)
def test_elastic_job_discovers_the_allocations_nodes(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    """discover_hosts_slurm.sh inside a real allocation (this cluster's sinfo), and the command
    HVDW_LAUNCHER=elastic builds around it (a dry run: tests/test_elastic.py trains elastically)."""
    job_id, code = slurm.submit(JOBS / "lib" / "discover_hosts_slurm.sh", sbatch=("-N1", "--ntasks-per-node=2"),
                                cwd=tmp_path)
    _assert_completed(slurm, job_id, code)
    assert _output(slurm, job_id).split() == [f"{slurm.jobs(job_id)[0]['NodeList']}:2"]
    job_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *TINY_TRAIN, sbatch=("-N1", "-n2", "-c1"),
                                cwd=tmp_path, env={"HVDW_DATA": str(job_data), "HVDW_LAUNCHER": "elastic",
                                                   "HVDW_NETWORK_INTERFACE": "lo", "HVDW_DRY_RUN": "1"})
    _assert_completed(slurm, job_id, code)
    record = json.loads((tmp_path / "runs" / f"train-horovod-{job_id}" / "job.json").read_text())
    assert record["command"][:7] == ["horovodrun", "-np", "2", "--min-np", "1", "--max-np", "2"]
    assert record["command"][8].endswith("jobs/lib/discover_hosts_slurm.sh")
    assert "--network-interface lo hvdweather-train" in record["command_line"] and "--elastic" in record["command"]


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_train_horovod_sbatch_preempted_requeues_and_ends_as_if_uninterrupted(
        slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    """SIGUSR1 to the batch script once epoch 2's checkpoint is on disk (what SLURM sends before a time
    limit with --signal=B:USR1@N, or on pre-emption): the job requeues itself, the next attempt resumes,
    and the result equals a job that was never interrupted (exact resume, docs/cluster.md)."""
    train = ["--epochs", "12", "--batch-size", "4", "--val-split", "0.2", "--test-split", "0.2", "--seed", "5"]
    shape = ("-N1", "--ntasks-per-node=2", "-c1")
    whole_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *train, sbatch=shape, cwd=tmp_path,
                                  env={"HVDW_DATA": str(job_data)})
    _assert_completed(slurm, whole_id, code)
    signalled: list[str] = []
    requeued: list[str] = []

    def preempt_after_epoch_2(job_id: str) -> bool:
        """Signal once epoch 2's checkpoint is on disk; the job may end only once its requeued attempt
        has been seen waiting or running (Restarts counts up while the killed attempt still shows FAILED)."""
        state = tmp_path / "runs" / f"train-horovod-{job_id}" / "resume_state.pkl"  # written atomically
        if not signalled and state.exists() and pickle.loads(state.read_bytes())["epochs_done"] >= 2:
            subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm.env, check=True, timeout=30)
            signalled.append(job_id)
        record = slurm.jobs(job_id)[0]
        if signalled and int(record.get("Restarts", "0")) >= 1 and record["JobState"] in ("PENDING", "RUNNING"):
            requeued.append(job_id)
        return bool(requeued)

    cut_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *train, sbatch=shape, cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data)}, on_poll=preempt_after_epoch_2)
    _assert_completed(slurm, cut_id, code)
    output = _output(slurm, cut_id)
    assert signalled and int(slurm.jobs(cut_id)[0]["Restarts"]) >= 1, output[-3000:]
    assert "requeueing job" in output and "resuming" in output
    whole, cut = (tmp_path / "runs" / f"train-horovod-{i}" for i in (whole_id, cut_id))
    digests = [json.loads((run / "ranks.json").read_text()) for run in (whole, cut)]
    assert [r["weights_sha256"] for r in digests[0]] == [r["weights_sha256"] for r in digests[1]]
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (whole, cut)]
    assert [r["epoch"] for r in rows[1]] == list(range(1, 13))
    for a, b in zip(*rows):
        assert (a["loss"], a["val_loss"]) == pytest.approx((b["loss"], b["val_loss"]), abs=1e-6)


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_eda_mpi_sbatch_runs_two_ranks(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    job_id, code = slurm.submit(JOBS / "slurm" / "eda_mpi.sbatch", "--no-plots",
                                sbatch=("-N1", "--ntasks-per-node=2"), cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data)})
    _assert_completed(slurm, job_id, code)
    run = tmp_path / "runs" / f"eda-mpi-{job_id}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["executor"] == "mpi" and summary["run"]["workers"] == 2
    assert summary["all"]["images"] == 11 * 12
    assert (run / "histograms.npz").exists() and (run / "class_counts.csv").exists()
    record = json.loads((run / "job.json").read_text())
    assert record["ranks"] == 2 and record["exit_status"] == 0 and "--executor mpi" in record["command_line"]


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_scaling_array_two_tasks_and_collect(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    grid = {"HVDW_DATA": str(job_data), "HVDW_WORKERS": "1 2", "HVDW_BATCH_SIZES": "8", "HVDW_EPOCHS": "1"}
    array_id, code = slurm.submit(JOBS / "slurm" / "scaling_array.sbatch", "--val-split", "0.2",
                                  "--test-split", "0.2", sbatch=("--array=0-1", "-N1", "-n2", "-c1"),
                                  cwd=tmp_path, env=grid, timeout=550)
    _assert_completed(slurm, array_id, code)
    tasks = slurm.jobs(array_id)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    array_dir = tmp_path / "runs" / f"scaling-{array_id}"
    for workers in (1, 2):
        metrics = [json.loads(x) for x in (array_dir / "runs" / f"horovod-w{workers}-b8" / "metrics.jsonl")
                   .read_text().splitlines()]
        assert [m["world_size"] for m in metrics] == [workers]

    collect_id, code = slurm.submit(JOBS / "slurm" / "scaling_collect.sbatch", str(array_dir),
                                    sbatch=(f"--dependency=afterany:{array_id}",), cwd=tmp_path)
    _assert_completed(slurm, collect_id, code)
    results = [json.loads(x) for x in (array_dir / "results.jsonl").read_text().splitlines()]
    cells = [(r["workers"], r["per_worker_batch_size"], r["status"]) for r in results]
    assert cells == [(1, 8, "ok"), (2, 8, "ok")]
    assert all(r["images_per_s"] > 0 for r in results)
    table = (array_dir / "scaling.md").read_text()
    assert "| horovod x 1 |" in table and "| horovod x 2 |" in table
    assert (array_dir / "scaling.csv").exists() and (array_dir / "speedup.png").exists()
    assert "collected 2 of 2 grid cells" in _output(slurm, collect_id)


BAD_INPUTS = {
    "missing data": ("train_horovod.sbatch", ("-N1", "-n2", "-c1"), {"HVDW_DATA": "/nonexistent/weapd"}, (),
                     "train_horovod.sbatch: error: --data /nonexistent/weapd: directory not found"),
    "ranks x batch > images": ("train_horovod.sbatch", ("-N1", "-n2", "-c1"), {}, ("--batch-size", "100"),
                               ("train_horovod.sbatch: error: impossible task count: 2 workers x per-worker "
                                "batch 100 = 200 images")),
    "mirrored with 2 tasks": ("train_mirrored.sbatch", ("-N1", "-n2", "-c1"), {}, (),
                              ("train_mirrored.sbatch: error: impossible task count: MirroredStrategy is one "
                               "process on one node, but this job has 2 tasks")),
    "array task outside the grid": ("scaling_array.sbatch", ("--array=3", "-N1", "-n1", "-c1"),
                                    {"HVDW_WORKERS": "1", "HVDW_BATCH_SIZES": "8"}, (),
                                    "scaling_array.sbatch: error: array task 3 is outside the grid of 1 "),
    "eda without data": ("eda_mpi.sbatch", ("-N1", "--ntasks-per-node=2"), {"HVDW_DATA": ""}, (),
                         "eda_mpi.sbatch: error: HVDW_DATA is not set"),
}


@pytest.mark.slurm
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_fast_with_message(case: str, slurm: SlurmCluster, job_data: Path,
                                           tmp_path: Path) -> None:
    script, sbatch, env, args, message = BAD_INPUTS[case]
    job_id, code = slurm.submit(JOBS / "slurm" / script, *args, sbatch=sbatch, cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data), **env})
    record = slurm.jobs(job_id)[0]
    output = _output(slurm, job_id)
    assert code == 2 and (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0"), output
    assert message in output
    assert not (tmp_path / "runs").exists()  # stopped before a run directory, let alone a rank, existed


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_train_mirrored_sbatch_dry_run_records_one_process(slurm: SlurmCluster, job_data: Path,
                                                           tmp_path: Path) -> None:
    job_id, code = slurm.submit(JOBS / "slurm" / "train_mirrored.sbatch", "--epochs", "1", sbatch=("-c2",),
                                cwd=tmp_path, env={"HVDW_DATA": str(job_data), "HVDW_DRY_RUN": "1"})
    _assert_completed(slurm, job_id, code)
    record = json.loads((tmp_path / "runs" / f"train-mirrored-{job_id}" / "job.json").read_text())
    assert record["dry_run"] and record["ranks"] == 1
    assert record["command"][:2] == ["hvdweather-train", "--out"]
    assert "--strategy mirrored" in record["command_line"] and "--replicas 2" in record["command_line"]


# ---------------------------------------------------------------- plain mpirun and LSF


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_mpirun_script_trains_on_a_generated_hostfile(job_data: Path, tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("# generated by the test\nlocalhost slots=2\n")
    env = job_env(HVDW_DATA=str(job_data), HVDW_HOSTFILE=str(hostfile), HVDW_NP="2")
    done = subprocess.run([str(JOBS / "mpirun" / "train_horovod.sh"), *TINY_TRAIN], check=False, cwd=tmp_path,
                          text=True, capture_output=True, timeout=280, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    record = json.loads((run / "job.json").read_text())
    config = json.loads((run / "config.json").read_text())
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert config["world"]["size"] == 2 and [m["world_size"] for m in metrics] == [2]
    assert record["hosts"] == ["localhost"] and record["ranks"] == 2 and record["exit_status"] == 0
    command = record["command_line"]
    assert f"--hostfile {hostfile}" in command
    assert "-bind-to none -map-by slot -x LD_LIBRARY_PATH -x PATH" in command and "-mca pml ob1" in command


@pytest.mark.timeout(60)
def test_mpirun_script_refuses_more_ranks_than_slots(job_data: Path, tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("localhost slots=2\n")
    env = job_env(HVDW_DATA=str(job_data), HVDW_HOSTFILE=str(hostfile), HVDW_NP="3")
    done = subprocess.run([str(JOBS / "mpirun" / "train_horovod.sh")], check=False, cwd=tmp_path, text=True,
                          capture_output=True, timeout=50, env=env)
    assert done.returncode == 2
    assert "impossible task count: HVDW_NP=3 ranks but" in done.stderr and "has only 2 slots" in done.stderr


def bsub_directives(path: Path) -> dict[str, str]:
    """#BSUB lines before the first command, as {option: value} (LSF ignores any that come later)."""
    directives = {}
    for line in path.read_text().splitlines()[1:]:
        if line.startswith("#BSUB"):
            option, _, value = line[len("#BSUB"):].strip().partition(" ")
            directives[option] = value.strip().strip('"')
        elif line.strip() and not line.startswith("#"):
            break
    return directives


def test_lsf_script_directives_parse() -> None:
    script = JOBS / "lsf" / "train_horovod.lsf"
    directives = bsub_directives(script)
    assert set(directives) >= {"-J", "-n", "-R", "-W", "-o"}
    assert re.fullmatch(r"\d+:\d\d", directives["-W"]) and "%J" in directives["-o"]
    ptile = int(re.fullmatch(r"span\[ptile=(\d+)\]", directives["-R"]).group(1))
    assert int(directives["-n"]) % ptile == 0  # whole hosts: every host gets the same number of ranks
    body = script.read_text().split("set -euo pipefail", 1)
    assert len(body) == 2 and "#BSUB" not in body[1]  # no directive after the first command


@pytest.mark.timeout(60)
def test_lsf_script_builds_hostfile_and_command_in_a_fake_lsf_job(job_data: Path, tmp_path: Path) -> None:
    env = job_env(LSB_JOBID="4242", LSB_MCPU_HOSTS="localhost 2", LS_SUBCWD=str(REPO), HVDW_DRY_RUN="1",
                  HVDW_DATA=str(job_data), HVDW_TRAIN_ARGS="--epochs 1 --augment")
    script = (JOBS / "lsf" / "train_horovod.lsf").read_text()
    # As with `bsub < FILE`, the script arrives on stdin, without a path to find the repository by.
    done = subprocess.run(["bash", "-s"], check=False, input=script, cwd=tmp_path, text=True,
                          capture_output=True, timeout=50, env=env)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "runs" / "train-horovod-4242"
    assert (run / "hostfile").read_text() == "localhost slots=2\n"
    record = json.loads((run / "job.json").read_text())
    assert record["scheduler"]["name"] == "lsf" and record["ranks"] == 2
    assert record["command"][:3] == ["mpirun", "-np", "2"]
    assert "--epochs 1 --augment" in record["command_line"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_follow_the_job_conventions(script: Path) -> None:
    syntax = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True,
                            timeout=30)
    assert syntax.returncode == 0, syntax.stderr
    text = script.read_text()
    if script.name != "common.sh":
        assert "set -euo pipefail" in text and "SITE SECTION" in text and "source " in text
