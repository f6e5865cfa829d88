"""A real single-node SLURM cluster for the job tests: munged, slurmctld and slurmd from Debian's packages,
run from a temporary directory (own munge key and socket, slurm.conf, free ports, no systemd), stopped by
their pids afterwards.

tests/conftest.py starts one per test session (fixture `slurm`), the first time a test asks for it:

    make install-slurm && .venv/bin/pytest tests/test_jobs.py tests/test_sweep_slurm.py

The multi-node cluster of tests/test_multihost.py reuses the daemon helpers and `SlurmCluster` below.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}  # JobState values after which a job does not run again by itself
# Lines of the daemon logs that tell a requeue's story (see SlurmCluster._start_if_held).
REQUEUE_LINES = re.compile(r"Requeuing|requeue|REQUEUE|non-startable|already killed|reissued|setting begin")


def job_env(**extra: str) -> dict[str, str]:
    """The caller's environment without scheduler or job settings that would leak into the jobs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "LSB_", "HVDW_", "HVDWEATHER_", "PMIX_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if not (REPO / ".venv" / "bin" / "python").exists():  # tests run from another venv than make's
        env["HVDWEATHER_VENV"] = sys.prefix
    return {**env, **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_munged(root: Path) -> Path:
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


def single_node_conf(state: Path, munge_socket: Path) -> Path:
    """slurm.conf for one node (this host, as `slurmd -C` describes it) and one partition."""
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    fields = dict(item.split("=", 1) for item in node.split())
    host = fields["NodeName"]
    hardware = " ".join(f"{k}={fields[k]}" for k in ("CPUs", "CoresPerSocket", "ThreadsPerCore",
                                                     "RealMemory"))
    # Free ports, own state: a second cluster (another checkout's tests) on the same machine does not clash.
    lines = ["ClusterName=hvdwtest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={free_port()}",
             f"SlurmdPort={free_port()}", "SlurmUser=root", "AuthType=auth/munge", "CredType=cred/munge",
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


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def stop(pid_files: list[Path]) -> None:
    """SIGTERM each daemon named by a pid file; SIGKILL any still running 10 s later."""
    pids = [int(f.read_text().split()[0]) for f in pid_files if f.exists() and f.read_text().strip()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def log_tails(state: Path, lines: int = 25) -> str:
    """The requeue-related lines and the last `lines` lines of each daemon log in `state`, for failure messages."""
    parts = []
    for log in sorted(state.glob("slurm*.log")):
        text = log.read_text(errors="replace").splitlines()
        story = [line for line in text if REQUEUE_LINES.search(line)][-15:]
        parts.append(f"--- {log.name}: requeue lines\n" + "\n".join(story)
                     + f"\n--- {log.name}: last {lines} lines\n" + "\n".join(text[-lines:]))
    return "\n".join(parts) or f"(no daemon logs in {state})"


def wait_idle(env: dict[str, str], state: Path) -> None:
    """Wait (60 s at most) until every node of the cluster reports idle; else fail with the daemon logs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], check=False, env=env, capture_output=True,
                              text=True, timeout=30)
        if done.stdout.strip() == "idle":
            return
        time.sleep(0.25)
    pytest.fail(f"SLURM node never became idle; daemon logs:\n{log_tails(state)}")


def _epoch(stamp: str) -> float:
    """A SLURM time stamp (2026-01-31T12:00:00, local time as scontrol prints it) as seconds since the epoch."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


@dataclass
class SlurmCluster:
    """A running controller and node(s); `env` points the SLURM commands at them.

    `seen` keeps, per job id (array tasks: each task's own id), the (JobState, Restarts) pairs the polls
    of `submit` observed, in order and without repeats, so a test can check the way a job took.
    """

    state: Path
    env: dict[str, str]
    seen: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def submit(self, script: Path, *args: str, sbatch: tuple[str, ...] = (), cwd: Path,
               env: dict[str, str] | None = None, timeout: float = 400, poll_s: float = 0.25,
               on_poll: Callable[[list[dict[str, str]]], None] | None = None) -> tuple[str, int]:
        """Submit and wait until the job (every task of an array) has ended: (job id, its exit code).

        Polls scontrol every `poll_s` rather than `sbatch --wait`, whose poll interval grows to several
        seconds per check. On timeout the cluster's jobs are cancelled, so nothing runs on behind a test.
        A requeued job that SLURM holds back is started as soon as that is safe (`_start_if_held`).
        `on_poll(records)` runs at every poll with the job's scontrol records (one per array task).
        """
        command = ["sbatch", "--parsable", *sbatch, str(script), *args]
        done = subprocess.run(command, check=False, cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=60)
        match = re.match(r"(\d+)", done.stdout.strip())
        assert done.returncode == 0 and match, f"sbatch refused the job: {done.stdout!r} {done.stderr!r}"
        job_id, deadline = match.group(1), time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.jobs(job_id)
            self._remember(records)
            if on_poll:
                on_poll(records)
            if records and all(r["JobState"] in FINISHED for r in records):
                return job_id, max(int(r["ExitCode"].split(":")[0]) for r in records)
            for record in records:
                self._start_if_held(record)
            time.sleep(poll_s)
        diagnosis = self.diagnosis(job_id)
        self.cancel_all()
        pytest.fail(f"job {job_id} ({script.name}) still running after {timeout:g} s; cancelled\n{diagnosis}")

    def _remember(self, records: list[dict[str, str]]) -> None:
        for record in records:
            way = self.seen.setdefault(record["JobId"], [])
            now = (record["JobState"], int(record.get("Restarts", "0")))
            if not way or way[-1] != now:
                way.append(now)

    def _start_if_held(self, record: dict[str, str]) -> None:
        """Start a requeued job that SLURM holds back, but never within the second of its requeue.

        SLURM holds a requeued job until about two minutes ahead (its BeginTime, Reason=BeginTime); a
        cluster with free nodes would start it then, and this test cluster starts it at once
        (`scontrol update StartTime=now`) to save the wait. Not at once after the requeue, though: the
        requeue revokes the job's credentials up to its second (slurmd `_rpc_terminate_job` calls
        `slurm_cred_revoke`), and a relaunch whose credential is stamped in that same second is refused by
        slurmd ("already killed, do not launch batch job": `slurm_cred_revoked`, ctime <= revoked), after
        which slurmctld fails the job 1:0 ("Killing non-startable batch JobId": agent.c). The hold of
        `batch_requeue_fini` (now + credential lifetime + 1 s) exists for exactly that. It also resets
        SubmitTime when the requeue is done, later than the revoke: one second past it is always safe.
        """
        if record["JobState"] != "PENDING" or record.get("Reason") != "BeginTime":
            return
        if time.time() < _epoch(record["SubmitTime"]) + 1:
            return
        subprocess.run(["scontrol", "update", f"JobId={record['JobId']}", "StartTime=now"],
                       env=self.env, capture_output=True, check=False, timeout=30)

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

    def output(self, job_id: str) -> str:
        """The job's output file (its first task's), or a line saying it is missing."""
        path = Path(self.jobs(job_id)[0]["StdOut"])
        return path.read_text(errors="replace") if path.exists() else f"(no output file {path})"

    def diagnosis(self, job_id: str) -> str:
        """For failure messages: each task's state and the way it took, its output's tail, the daemon logs."""
        records = self.jobs(job_id)
        states = [(r["JobId"], r["JobState"], r["ExitCode"], r.get("Restarts"), r.get("Reason")) for r in records]
        ways = {r["JobId"]: self.seen.get(r["JobId"], []) for r in records}
        outputs = "\n".join(Path(r["StdOut"]).read_text(errors="replace")[-4000:] for r in records
                            if Path(r["StdOut"]).exists())
        return f"job {job_id}: {states}\nstates seen: {ways}\n{outputs}\n{log_tails(self.state)}"

    def assert_completed(self, job_id: str, exit_code: int) -> None:
        """Every task COMPLETED with exit code 0; else fail with `diagnosis`."""
        states = [(r["JobState"], r["ExitCode"]) for r in self.jobs(job_id)]
        assert exit_code == 0 and all(s == ("COMPLETED", "0:0") for s in states), self.diagnosis(job_id)


@contextlib.contextmanager
def single_node_cluster(state: Path) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd with their state in `state`; stop them by pid even on failure."""
    # Not under pytest's tmp (mode 0700): the munge user must be able to reach its socket.
    munge_dir = Path(tempfile.mkdtemp(prefix="hvdw-munge-"))
    pid_files = [state / "slurmd.pid", state / "slurmctld.pid", munge_dir / "munged.pid"]
    cluster = SlurmCluster(state, job_env())
    try:
        conf = single_node_conf(state, start_munged(munge_dir))
        cluster.env["SLURM_CONF"] = str(conf)
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=cluster.env, check=True, timeout=60)
        wait_idle(cluster.env, state)
        yield cluster
    finally:
        if "SLURM_CONF" in cluster.env:
            cluster.cancel_all()
        stop(pid_files)
        shutil.rmtree(munge_dir, ignore_errors=True)
