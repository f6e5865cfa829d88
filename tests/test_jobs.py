"""The batch jobs in jobs/, run for real: on the session's single-node SLURM cluster (tests/cluster/slurm.py,
started from Debian's packages by the `slurm` fixture of conftest.py), plain mpirun on a generated hostfile,
and the LSF script parsed.

    make install-slurm && .venv/bin/pytest tests/test_jobs.py
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.slurm import SlurmCluster, job_env
from conftest import run_mpirun

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
SLURM_SCRIPTS = sorted((JOBS / "slurm").glob("*.sbatch"))
ALL_SCRIPTS = [*SLURM_SCRIPTS, JOBS / "lsf" / "train_horovod.lsf", JOBS / "mpirun" / "train_horovod.sh",
               JOBS / "lib" / "common.sh"]
TINY_TRAIN = ["--epochs", "1", "--batch-size", "8", "--val-split", "0.2", "--test-split", "0.2"]


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(420)
def test_train_horovod_sbatch_runs_two_ranks(slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    job_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *TINY_TRAIN, "--image-size", "256",
                                sbatch=("-N1", "--ntasks-per-node=2", "-c1"), cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data)})
    slurm.assert_completed(job_id, code)
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
    slurm.assert_completed(job_id, code)
    assert slurm.output(job_id).split() == [f"{slurm.jobs(job_id)[0]['NodeList']}:2"]
    job_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *TINY_TRAIN, sbatch=("-N1", "-n2", "-c1"),
                                cwd=tmp_path, env={"HVDW_DATA": str(job_data), "HVDW_LAUNCHER": "elastic",
                                                   "HVDW_NETWORK_INTERFACE": "lo", "HVDW_DRY_RUN": "1"})
    slurm.assert_completed(job_id, code)
    record = json.loads((tmp_path / "runs" / f"train-horovod-{job_id}" / "job.json").read_text())
    assert record["command"][:7] == ["horovodrun", "-np", "2", "--min-np", "1", "--max-np", "2"]
    assert record["command"][8].endswith("jobs/lib/discover_hosts_slurm.sh")
    assert "--network-interface lo hvdweather-train" in record["command_line"] and "--elastic" in record["command"]


def _way_after_requeue(way: list[tuple[str, int]]) -> list[str]:
    """The states a job showed once requeued (Restarts >= 1), repeats and COMPLETING (teardowns) left out."""
    states = [state for state, restarts in way if restarts >= 1 and state not in ("COMPLETING", "CONFIGURING")]
    return [state for i, state in enumerate(states) if i == 0 or states[i - 1] != state]


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_requeued_job_runs_again_and_never_fails(slurm: SlurmCluster, tmp_path: Path) -> None:
    """The harness's restart of a requeued job (SlurmCluster._start_if_held) on its own: a `sleep` job with
    --requeue is requeued by `scontrol requeue` three times, each time 0.05 s into a second (so that the
    teardown, the end of the requeue and a hasty restart can all fall in the second of the requeue's
    revoke; not at 0.00 s, where SLURM's coarse clock may still read the second before). Each time it
    must run again (Restarts 1, 2, 3), and it must never show FAILED; the test then cancels it.

    Proven to fail: with `StartTime=now` forced as soon as the job shows PENDING/BeginTime (the harness
    before the fix), 7 of 10 single requeues ended FAILED 1:0 (every one whose restart fell in the same
    second), with "already killed, do not launch batch job" in slurmd.log and "Killing non-startable batch
    JobId" in slurmctld.log; three requeues per run make that a failure in about 97 runs of 100.
    """
    script = tmp_path / "sleep.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    requeues = 3
    requeued: list[float] = []

    def requeue_then_cancel(records: list[dict[str, str]]) -> None:
        record = records[0]
        if record["JobState"] != "RUNNING":
            return
        if int(record["Restarts"]) == len(requeued) < requeues:
            time.sleep((1.05 - time.time() % 1) % 1)
            subprocess.run(["scontrol", "requeue", record["JobId"]], env=slurm.env, check=True, timeout=30)
            requeued.append(time.time())
        elif int(record["Restarts"]) == requeues:
            subprocess.run(["scancel", record["JobId"]], env=slurm.env, check=True, timeout=30)

    job_id, _ = slurm.submit(script, sbatch=("--requeue", "-n1", "-c1"), cwd=tmp_path, timeout=90, poll_s=0.05,
                             on_poll=requeue_then_cancel)
    way = slurm.seen[job_id]
    assert len(requeued) == requeues and "FAILED" not in {state for state, _ in way}, slurm.diagnosis(job_id)
    assert _way_after_requeue(way) == ["PENDING", "RUNNING"] * requeues + ["CANCELLED"], slurm.diagnosis(job_id)
    assert [restarts for state, restarts in way if state == "RUNNING"] == list(range(requeues + 1))


@pytest.mark.slurm
@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_train_horovod_sbatch_preempted_requeues_and_ends_as_if_uninterrupted(
        slurm: SlurmCluster, job_data: Path, tmp_path: Path) -> None:
    """SIGUSR1 to the batch script once epoch 2's checkpoint is on disk (what SLURM sends before a time
    limit with --signal=B:USR1@N, or on pre-emption): the job requeues itself, its attempt logs its end,
    SLURM takes it through COMPLETING and PENDING back to RUNNING (never FAILED), the next attempt
    resumes, and the result equals a job that was never interrupted (exact resume, docs/cluster.md)."""
    train = ["--epochs", "12", "--batch-size", "4", "--val-split", "0.2", "--test-split", "0.2", "--seed", "5"]
    shape = ("-N1", "--ntasks-per-node=2", "-c1")
    whole_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *train, sbatch=shape, cwd=tmp_path,
                                  env={"HVDW_DATA": str(job_data)})
    slurm.assert_completed(whole_id, code)
    signalled: list[str] = []

    def preempt_after_epoch_2(records: list[dict[str, str]]) -> None:
        job_id = records[0]["JobId"]
        state = tmp_path / "runs" / f"train-horovod-{job_id}" / "resume_state.pkl"  # written atomically
        if not signalled and state.exists() and pickle.loads(state.read_bytes())["epochs_done"] >= 2:
            subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm.env, check=True, timeout=30)
            signalled.append(job_id)

    cut_id, code = slurm.submit(JOBS / "slurm" / "train_horovod.sbatch", *train, sbatch=shape, cwd=tmp_path,
                                env={"HVDW_DATA": str(job_data)}, on_poll=preempt_after_epoch_2)
    # Checked first: a requeued job that ends without running again is the failure this test is about.
    assert signalled and _way_after_requeue(slurm.seen[cut_id]) == ["PENDING", "RUNNING", "COMPLETED"], \
        slurm.diagnosis(cut_id)
    slurm.assert_completed(cut_id, code)
    output = slurm.output(cut_id)
    assert "requeueing job" in output and "attempt ended for the requeue" in output, slurm.diagnosis(cut_id)
    assert "resuming" in output and int(slurm.jobs(cut_id)[0]["Restarts"]) == 1, slurm.diagnosis(cut_id)
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
    slurm.assert_completed(job_id, code)
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
    slurm.assert_completed(array_id, code)
    tasks = slurm.jobs(array_id)
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    array_dir = tmp_path / "runs" / f"scaling-{array_id}"
    for workers in (1, 2):
        metrics = [json.loads(x) for x in (array_dir / "runs" / f"horovod-w{workers}-b8" / "metrics.jsonl")
                   .read_text().splitlines()]
        assert [m["world_size"] for m in metrics] == [workers]

    collect_id, code = slurm.submit(JOBS / "slurm" / "scaling_collect.sbatch", str(array_dir),
                                    sbatch=(f"--dependency=afterany:{array_id}",), cwd=tmp_path)
    slurm.assert_completed(collect_id, code)
    results = [json.loads(x) for x in (array_dir / "results.jsonl").read_text().splitlines()]
    cells = [(r["workers"], r["per_worker_batch_size"], r["status"]) for r in results]
    assert cells == [(1, 8, "ok"), (2, 8, "ok")]
    assert all(r["images_per_s"] > 0 for r in results)
    table = (array_dir / "scaling.md").read_text()
    assert "| horovod x 1 |" in table and "| horovod x 2 |" in table
    assert (array_dir / "scaling.csv").exists() and (array_dir / "speedup.png").exists()
    assert "collected 2 of 2 grid cells" in slurm.output(collect_id)


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
    output = slurm.output(job_id)
    assert code == 2 and (record["JobState"], record["ExitCode"]) == ("FAILED", "2:0"), output
    assert message in output
    assert not (tmp_path / "runs").exists()  # stopped before a run directory, let alone a rank, existed


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_train_mirrored_sbatch_dry_run_records_one_process(slurm: SlurmCluster, job_data: Path,
                                                           tmp_path: Path) -> None:
    job_id, code = slurm.submit(JOBS / "slurm" / "train_mirrored.sbatch", "--epochs", "1", sbatch=("-c2",),
                                cwd=tmp_path, env={"HVDW_DATA": str(job_data), "HVDW_DRY_RUN": "1"})
    slurm.assert_completed(job_id, code)
    record = json.loads((tmp_path / "runs" / f"train-mirrored-{job_id}" / "job.json").read_text())
    assert record["dry_run"] and record["ranks"] == 1
    assert record["command"][:2] == ["hvdweather-train", "--out"]
    assert "--strategy mirrored" in record["command_line"] and "--replicas 2" in record["command_line"]


# ---------------------------------------------------------------- the pre-emption trap of jobs/lib/common.sh

# A stand-in for scontrol: `requeue` answers with the next line of $STUB_REPLIES ("ok", or an error message
# as scontrol prints it), `show job` with a record in the state $STUB_STATE / $STUB_RESTARTS; every call is
# logged to $STUB_LOG.
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >>"$STUB_LOG"
if [[ $1 == requeue ]]; then
  reply=$(sed -n "$(grep -c '^requeue' "$STUB_LOG")p" "$STUB_REPLIES")
  [[ $reply == ok ]] && exit 0
  echo "$reply for job $2" >&2
  exit 1
fi
echo "JobId=5 JobName=hvdw-train UserId=root(0) JobState=$STUB_STATE Reason=None Restarts=$STUB_RESTARTS"
"""
REQUEUE_CASES = {  # replies to `scontrol requeue`, then the job's state and restarts: (requeued?, requeue calls)
    "accepted": (["ok"], "RUNNING", "0", True, 1),
    "reply lost but applied": (["Socket timed out on send/recv operation"], "COMPLETING", "1", True, 1),
    "transient error, then accepted": (["Unable to contact slurm controller (connect failure)", "ok"],
                                       "RUNNING", "0", True, 2),
    "job not requeueable": (["Requested operation is presently disabled"], "RUNNING", "0", False, 1),
}


def _fake_scontrol(tmp_path: Path, replies: list[str], state: str, restarts: str) -> dict[str, str]:
    """The environment of a fake SLURM job (id 5, first attempt) whose scontrol is FAKE_SCONTROL."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(FAKE_SCONTROL)
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    (tmp_path / "replies").write_text("\n".join(replies) + "\n")
    return job_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="5", HVDW_JOB="test-job",
                   HVDWEATHER_HOME=str(REPO), STUB_LOG=str(tmp_path / "calls"),
                   STUB_REPLIES=str(tmp_path / "replies"), STUB_STATE=state, STUB_RESTARTS=restarts)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(REQUEUE_CASES))
def test_requeue_trap_retries_only_what_a_retry_can_change(case: str, tmp_path: Path) -> None:
    """hvdw_requeue: a requeue SLURM applied counts as done even when scontrol reported an error (a second
    one would only get "Job is pending execution"), a transient error is retried, and a refusal a retry
    cannot change is not. Proven to fail with the previous trap (5 plain retries): "reply lost but
    applied" made 5 calls and reported a failure, "job not requeueable" made 5 calls."""
    replies, state, restarts, requeued, calls = REQUEUE_CASES[case]
    env = _fake_scontrol(tmp_path, replies, state, restarts)
    done = subprocess.run(["bash", "-c", 'source "$HVDWEATHER_HOME/jobs/lib/common.sh"; hvdw_requeue; '
                           'echo "requeued=${HVDW_REQUEUED:-0}"'], env=env, capture_output=True, text=True,
                          timeout=50)
    assert done.stdout.strip().endswith(f"requeued={int(requeued)}"), done.stdout + done.stderr
    assert (tmp_path / "calls").read_text().count("requeue 5") == calls
    if not requeued:
        assert "scontrol requeue failed (Requested operation is presently disabled for job 5)" in done.stderr


@pytest.mark.timeout(60)
def test_requeued_attempt_logs_and_records_its_end_on_slurms_sigterm(tmp_path: Path) -> None:
    """What SLURM does to the batch script after it accepts the requeue: SIGTERM to every process of the
    batch step. The TERM trap keeps bash alive until its step exits, so it logs the attempt's end and
    records it in job.json. Proven to fail by deleting the `trap ... TERM` line: bash then dies of the
    signal (return code -15) and neither happens, as in every pre-empted job before."""
    env = _fake_scontrol(tmp_path, ["ok"], "RUNNING", "0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with subprocess.Popen(["bash", "-c", 'source "$HVDWEATHER_HOME/jobs/lib/common.sh"; '
                           'hvdw_run "$0" 1 localhost sleep 60', str(run_dir)], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True) as job:
        try:
            _wait_for(lambda: "sleep" in _children(job.pid), "the job's step (sleep) to start")
            os.kill(job.pid, signal.SIGUSR1)
            _wait_for(lambda: "requeue 5" in (tmp_path / "calls").read_text(errors="replace")
                      if (tmp_path / "calls").exists() else False, "the trap's scontrol requeue")
            os.killpg(job.pid, signal.SIGTERM)
            output, _ = job.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output
    assert "test-job: attempt ended for the requeue (its steps exited 143)" in output, output
    assert json.loads((run_dir / "job.json").read_text())["exit_status"] == 143


def _children(pid: int) -> list[str]:
    """The command names of `pid`'s child processes (Linux: /proc/PID/task/*/children)."""
    pids = [c for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]
    names = []
    for child in pids:
        with contextlib.suppress(FileNotFoundError):  # ended meanwhile
            names.append(Path(f"/proc/{child}/comm").read_text().strip())
    return names


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


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


@pytest.mark.multiprocess
@pytest.mark.timeout(240)
def test_mpirun_dry_run_refuses_the_batch_that_training_refuses(job_data: Path, tmp_path: Path) -> None:
    """The job's batch check is training's: each of 2 ranks needs a whole per-worker batch from its shard of
    the TRAINING images (132 images less --val-split/--test-split leave 88, shards of 44). The dry run
    accepts batch 44, refuses 45 with one line naming 88 training images, and hvdweather-train itself,
    under mpirun, refuses 45 with "only 44 image(s) per process": the same count. Proven to fail with the
    previous job check (2 x 45 = 90 <= 132 images: the dry run accepted 45)."""
    env = job_env(HVDW_DATA=str(job_data), HVDW_NP="2", HVDW_DRY_RUN="1")
    script = str(JOBS / "mpirun" / "train_horovod.sh")
    runs = {}
    for batch in ("44", "45"):  # each from its own directory: the refused one must leave no runs/ behind
        (tmp_path / batch).mkdir()
        runs[batch] = subprocess.run([script, "--batch-size", batch], check=False, cwd=tmp_path / batch,
                                     text=True, capture_output=True, timeout=60, env=env)
    assert runs["44"].returncode == 0 and "HVDW_DRY_RUN=1" in runs["44"].stdout, runs["44"].stderr
    refused = runs["45"]
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith("train_horovod.sh: error: impossible task count: 2 workers x per-worker "
                                     "batch 45 = 90 images per step, but --data ")
    assert "leaves only 88 training images" in refused.stderr and not (tmp_path / "45" / "runs").exists()
    training = run_mpirun("hvdweather-train", "--data", str(job_data), "--batch-size", "45", "--out",
                          str(tmp_path / "train"), "--verbose", "0", timeout=200)
    assert training.returncode != 0
    assert "--batch-size 45: a worker's training shard has at most 44 image(s) per process (2 workers)" \
        in training.stderr, training.stderr[-3000:]


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
