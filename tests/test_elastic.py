"""Elastic Horovod: `hvdweather-train --elastic` under `horovodrun --min-np/--max-np
--host-discovery-script`, with Horovod's two-hosts-on-one-machine trick (localhost and 127.0.0.1, both
started locally). A worker killed mid-run leaves, a host added mid-run joins at an epoch end; every run
ends on its own within a bounded time, with one metrics row per epoch recording that epoch's world."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run_cli

REPO = Path(__file__).resolve().parents[1]
DISCOVER_FILE = REPO / "jobs" / "lib" / "discover_hosts_file.sh"
DISCOVER_SLURM = REPO / "jobs" / "lib" / "discover_hosts_slurm.sh"
HOSTS = ("localhost", "127.0.0.1")


def _rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _launch(hosts_file: Path, log: Path, run: Path, data: Path, np_: int, epochs: int,
            batch: int = 8) -> subprocess.Popen:
    """horovodrun's elastic mode over the hosts in `hosts_file`; its output goes to `log`."""
    command = [str(BIN / "horovodrun"), "-np", str(np_), "--min-np", "1", "--max-np", "2",
               "--host-discovery-script", str(DISCOVER_FILE), "--network-interface", "lo",
               "--elastic-timeout", "60",  # no world to run on: fail after a minute, not Horovod's 10
               str(BIN / "hvdweather-train"), "--elastic", "--data", str(data), "--out", str(run),
               "--model", "resnet18", "--image-size", "32", "--batch-size", str(batch), "--epochs", str(epochs),
               "--threads-per-worker", "1", "--verbose", "2", "--val-split", "0.2", "--test-split", "0.1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HVDW_HOSTS_FILE": str(hosts_file)}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _wait_for(condition, process: subprocess.Popen, log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no {what} (exit {process.poll()}); log:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """The job ends by itself, successfully, in bounded time: never a hang."""
    try:
        assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        process.kill()


def _workers_on(host: str) -> list[int]:
    """PIDs of the training processes horovodrun started for `host` (their environment names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"HOROVOD_HOSTNAME={host}".encode() in environ and b"hvdweather-train" in cmdline:
            found.append(int(entry.name))
    return found


def _assert_epochs_once(rows: list[dict], epochs: int) -> None:
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))


@pytest.mark.elastic
@pytest.mark.timeout(420)
def test_killed_rank_0_leaves_and_the_run_finishes_on_the_rest(tiny_data, tmp_path):
    hosts_file, log, run = tmp_path / "hosts.txt", tmp_path / "job.log", tmp_path / "run"
    hosts_file.write_text("\n".join(f"{h}:1" for h in HOSTS) + "\n")
    process = _launch(hosts_file, log, run, tiny_data, np_=2, epochs=3, batch=4)
    _wait_for(lambda: len(_rows(run)) >= 1, process, log, "first epoch")
    # Rank 0 is the harder case: the writer (run directory, log) moves to another worker.
    rank_0 = re.search(r"elastic: 2 worker\(s\) from epoch 1: rank 0 on (\S+),", log.read_text()).group(1)
    hosts_file.write_text("".join(f"{h}:1\n" for h in HOSTS if h != rank_0))
    victims = _workers_on(rank_0)
    assert victims, f"no worker process found for {rank_0}"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _finish(process, log)
    rows = _rows(run)
    _assert_epochs_once(rows, 3)
    assert [r["world_size"] for r in rows] == [2, 1, 1]
    assert rows[0]["global_batch_size"] == 8 and rows[1]["global_batch_size"] == 4  # the plan follows the world
    text = log.read_text()
    assert re.search(r"elastic: 1 worker\(s\) from epoch 2: rank 0 on (?!" + re.escape(rank_0) + r")", text)
    assert "lr 0.01 x 1 = 0.01" in text  # the LR re-scaled for one worker
    ranks = json.loads((run / "ranks.json").read_text())
    assert len(ranks) == 1
    assert json.loads((run / "report" / "test_metrics.json").read_text())["best"]["test_accuracy"] >= 0


@pytest.mark.elastic
@pytest.mark.timeout(420)
def test_added_host_joins_at_an_epoch_end_and_the_run_finishes_with_more_workers(synth_data, tmp_path):
    hosts_file, log, run = tmp_path / "hosts.txt", tmp_path / "job.log", tmp_path / "run"
    hosts_file.write_text(f"{HOSTS[0]}:1\n")
    process = _launch(hosts_file, log, run, synth_data, np_=1, epochs=3)
    _wait_for(lambda: len(_rows(run)) >= 1, process, log, "first epoch")
    hosts_file.write_text("".join(f"{h}:1\n" for h in HOSTS))
    _finish(process, log)
    rows = _rows(run)
    _assert_epochs_once(rows, 3)
    worlds = [r["world_size"] for r in rows]
    assert worlds[0] == 1 and worlds[-1] == 2 and worlds == sorted(worlds), worlds
    joined = worlds.index(2) + 1
    assert re.search(rf"elastic: 2 worker\(s\) from epoch {joined}: rank 0 on {HOSTS[0]}, rank 1 on {HOSTS[1]}",
                     log.read_text())
    ranks = json.loads((run / "ranks.json").read_text())
    assert len(ranks) == 2 and ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


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
