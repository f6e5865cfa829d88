"""Elastic Horovod: `hvdweather-train --elastic` under `horovodrun --min-np/--max-np
--host-discovery-script`, with Horovod's two-hosts-on-one-machine trick (localhost and 127.0.0.1, both
started locally). A worker killed mid-run leaves, a host added mid-run joins at an epoch end; every run
ends on its own within a bounded time, with one metrics row per epoch recording that epoch's world.
The moments are conditions, not timing: tests/scripts/hold_in_epoch.py holds a worker inside epoch 2 until
the test has acted, and only processes of the test's own launcher are signalled."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, held, held_train, own_processes, own_tree, release, run_cli, wait_until

REPO = Path(__file__).resolve().parents[1]
DISCOVER_FILE = REPO / "jobs" / "lib" / "discover_hosts_file.sh"
DISCOVER_SLURM = REPO / "jobs" / "lib" / "discover_hosts_slurm.sh"
HOSTS = ("localhost", "127.0.0.1")


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _launch(hosts_file: Path, log: Path, run: Path, data: Path, np_: int, mark: Path, who: str,
            discovery: Path = DISCOVER_FILE, batch: int = 8) -> subprocess.Popen:
    """horovodrun's elastic mode over the hosts in `hosts_file`, 3 epochs of ResNet-18 at 32 px; the
    workers run hvdweather-train through tests/scripts/hold_in_epoch.py, which holds `who` after step 1
    of epoch 2 until the test acts (each process once). Output goes to `log`."""
    train = ["--elastic", "--data", str(data), "--out", str(run), "--model", "resnet18", "--image-size", "32",
             "--batch-size", str(batch), "--epochs", "3", "--threads-per-worker", "1", "--verbose", "2",
             "--val-split", "0.2", "--test-split", "0.1"]
    command = [str(BIN / "horovodrun"), "-np", str(np_), "--min-np", "1", "--max-np", "2",
               "--host-discovery-script", str(discovery), "--network-interface", "lo",
               "--elastic-timeout", "60",  # no world to run on: fail after a minute, not Horovod's 10
               *held_train(2, 1, mark, who, *train)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HVDW_HOSTS_FILE": str(hosts_file)}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _write_hosts(hosts_file: Path, hosts: list[str] | tuple[str, ...]) -> None:
    """The discovery file, replaced whole: a discovery call never reads it half-written (no hosts)."""
    partial = hosts_file.with_name(hosts_file.name + ".partial")
    partial.write_text("".join(f"{h}:1\n" for h in hosts))
    partial.rename(hosts_file)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """The job ends by itself, successfully, in bounded time: never a hang."""
    assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def _assert_epochs_once(rows: list[dict], epochs: int) -> None:
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))


def _test_report_is_whole(run: Path) -> None:
    """The report covers every test image of the split, at any world size."""
    with open(run / "split.csv") as handle:
        n_test = sum(row["subset"] == "test" for row in csv.DictReader(handle))
    best = json.loads((run / "report" / "test_metrics.json").read_text())["best"]
    assert n_test > 0 and best["test_images"] == n_test and 0 <= best["test_accuracy"] <= 1


@pytest.mark.elastic
@pytest.mark.timeout(420)
def test_killed_rank_0_leaves_and_the_run_finishes_on_the_rest(tiny_data, tmp_path):
    """Rank 0 is held inside epoch 2 (the other worker waits in its next allreduce), its host leaves the
    discovery file and it is SIGKILLed: the survivor goes back to epoch 1's commit and trains epochs 2
    and 3 alone. Without the hold, the kill raced the end of a 1-step epoch (held after that step, rank
    0 has not reached the epoch's end: no metrics, checkpoint or commit). Proven to fail with a lost
    peer's error not turned into a reset (distributed.run_elastic): the survivor then failed too."""
    hosts_file, log, run, mark = tmp_path / "hosts.txt", tmp_path / "job.log", tmp_path / "run", tmp_path / "mark"
    _write_hosts(hosts_file, HOSTS)
    process = _launch(hosts_file, log, run, tiny_data, np_=2, mark=mark, who="primary", batch=4)
    with own_tree(process):
        wait_until(lambda: held(mark), "rank 0 held inside epoch 2", process, 240, log)
        (victim,) = held(mark)
        # Rank 0 is the harder case: the writer (run directory, log) moves to another worker.
        rank_0 = victim["horovod_hostname"]
        assert re.search(rf"elastic: 2 worker\(s\) from epoch 1: rank 0 on {re.escape(rank_0)},", log.read_text())
        _write_hosts(hosts_file, [h for h in HOSTS if h != rank_0])
        (worker,) = [p for p in own_processes(process.pid, HOROVOD_HOSTNAME=rank_0) if p.pid == victim["pid"]]
        worker.kill()
        _finish(process, log)
    rows = _rows(run)
    _assert_epochs_once(rows, 3)
    assert [r["world_size"] for r in rows] == [2, 1, 1]
    assert rows[0]["global_batch_size"] == 8 and rows[1]["global_batch_size"] == 4  # the plan follows the world
    text = log.read_text()
    assert re.search(r"elastic: 1 worker\(s\) from epoch 2: rank 0 on (?!" + re.escape(rank_0) + r")", text)
    assert "lr 0.01 x 1 = 0.01" in text  # the LR re-scaled for one worker
    assert len(json.loads((run / "ranks.json").read_text())) == 1
    _test_report_is_whole(run)


def _logging_discovery(tmp_path: Path) -> tuple[Path, Path]:
    """A discovery script that runs jobs/lib/discover_hosts_file.sh and logs each answer on one line, so
    the test sees what horovodrun's driver was told and when (it asks about once a second)."""
    script, calls = tmp_path / "discover.sh", tmp_path / "discovery.log"
    script.write_text(f'#!/bin/sh\nhosts=$({DISCOVER_FILE}) || exit $?\n'
                      f'echo $hosts >> {calls}\nprintf "%s\\n" "$hosts"\n')
    script.chmod(0o755)
    return script, calls


def _told_after(calls: Path, hosts: int) -> bool:
    """Whether the driver asked again after the first answer listing `hosts` hosts: it notifies the
    workers of a change (a synchronous call to rank 0) before it asks again."""
    answers = calls.read_text().splitlines() if calls.exists() else []
    first = next((i for i, line in enumerate(answers) if len(line.split()) == hosts), None)
    return first is not None and len(answers) > first + 1


@pytest.mark.elastic
@pytest.mark.timeout(420)
def test_added_host_joins_at_an_epoch_end_and_the_run_finishes_with_more_workers(synth_data, tmp_path):
    """The one worker is held inside epoch 2 while a second host is added; it goes on once the driver
    has told it (a discovery answer with 2 hosts, then another call): epoch 2's commit then resets onto
    2 workers, so epoch 3 runs on both, whatever the timing. Without the hold, the join had to land
    before the run's last epoch ended. Proven to fail with the epoch-end commit not checking for host
    changes (state.save() for state.commit() in distributed.ElasticCommit): worlds [1, 1, 1]."""
    hosts_file, log, run, mark = tmp_path / "hosts.txt", tmp_path / "job.log", tmp_path / "run", tmp_path / "mark"
    discovery, calls = _logging_discovery(tmp_path)
    _write_hosts(hosts_file, HOSTS[:1])
    process = _launch(hosts_file, log, run, synth_data, np_=1, mark=mark, who="all", discovery=discovery)
    with own_tree(process):
        wait_until(lambda: held(mark), "the worker held inside epoch 2", process, 240, log)
        _write_hosts(hosts_file, HOSTS)
        wait_until(lambda: _told_after(calls, 2), "the driver telling the worker of 2 hosts", process, 60, log)
        release(mark, held(mark)[0]["pid"])
        _finish(process, log)
    rows = _rows(run)
    _assert_epochs_once(rows, 3)
    assert [r["world_size"] for r in rows] == [1, 1, 2]
    assert re.search(rf"elastic: 2 worker\(s\) from epoch 3: rank 0 on {HOSTS[0]}, rank 1 on {HOSTS[1]}",
                     log.read_text())
    ranks = json.loads((run / "ranks.json").read_text())
    assert len(ranks) == 2 and ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    _test_report_is_whole(run)


def test_elastic_outside_an_elastic_launch_is_one_line(tiny_data, tmp_path):
    result = run_cli("hvdweather-train", "--elastic", "--data", str(tiny_data), "--out", str(tmp_path / "r"),
                     "--model", "resnet18", "--image-size", "32", timeout=120)
    assert result.returncode == 2
    assert "--elastic: launch with horovodrun" in result.stderr and "Traceback" not in result.stderr


def _discover(script: Path, env: dict, path_dir: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HVDW_"))} | env
    if path_dir:
        full_env["PATH"] = f"{path_dir}:{full_env['PATH']}"
    return subprocess.run([str(script)], capture_output=True, text=True, env=full_env, timeout=30)


def test_hosts_file_discovery_prints_host_slots(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the cluster\nnode1:4\n\n  node2  # default slots\nnode3:2")
    result = _discover(DISCOVER_FILE, {"HVDW_HOSTS_FILE": str(hosts)})
    assert result.returncode == 0 and result.stdout.split() == ["node1:4", "node2:1", "node3:2"]
    missing = _discover(DISCOVER_FILE, {"HVDW_HOSTS_FILE": str(tmp_path / "none.txt")})
    assert missing.returncode == 2 and "HVDW_HOSTS_FILE" in missing.stderr


def test_slurm_discovery_keeps_the_jobs_usable_nodes(tmp_path):
    # A stand-in sinfo that prints what SLURM would for these nodes: one down, one not responding.
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
                                    "printf 'n1 alloc\\nn2 down\\nn3 mix\\nn4 alloc*\\nn5 idle\\nn1 alloc\\n'\n")
    (tmp_path / "sinfo").chmod(0o755)
    result = _discover(DISCOVER_SLURM, {"SLURM_JOB_NODELIST": "n[1-5]", "SLURM_NTASKS_PER_NODE": "2"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["n1:2", "n3:2", "n5:2"]
    assert "--nodes n[1-5]" in (tmp_path / "args").read_text()
    outside = _discover(DISCOVER_SLURM, {}, tmp_path)
    assert outside.returncode == 2 and "SLURM_JOB_NODELIST" in outside.stderr
