"""Exact resume: a run killed at any moment and resumed ends bit-identical to one never interrupted;
checkpoints are atomic; a resume that would be another run is refused."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run_cli

EXACT_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


def _digests(run: Path) -> list[str]:
    return [r["weights_sha256"] for r in json.loads((run / "ranks.json").read_text())]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _last_weights(run: Path) -> str:
    """SHA-256 of the last epoch's weights (every replica's copy), from the resume state: ranks.json's
    digest is of the weights the report ends with, the best epoch's."""
    digest = hashlib.sha256()
    for variable in pickle.loads((run / "resume_state.pkl").read_bytes())["weights"]:
        for copy in variable:
            digest.update(copy.tobytes())
    return digest.hexdigest()


def _assert_same_run(a: Path, b: Path) -> None:
    assert _digests(a) == _digests(b)
    assert _last_weights(a) == _last_weights(b)
    rows_a, rows_b = _metrics(a), _metrics(b)
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for row_a, row_b in zip(rows_a, rows_b):
        for key in EXACT_KEYS:
            assert row_a[key] == pytest.approx(row_b[key], abs=1e-6), (row_a["epoch"], key)


def _rank_pids(rank: int) -> list[int]:
    """PIDs of processes that Horovod started as `rank` (their environment says so)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HOROVOD_RANK={rank}".encode() in environ and b"HOROVOD_HOSTNAME=localhost" in environ:
            found.append(int(entry.name))
    return found


def _kill_rank_during_epoch(command: list[str], run: Path, epoch: int, rank: int) -> tuple[int, float]:
    """Start `command`, SIGKILL rank `rank` once the checkpoint of epoch `epoch - 1` has landed; return
    the launcher's exit code and how long it took to end after the kill."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 300
        while _epochs_done(run) < epoch - 1:
            assert process.poll() is None and time.monotonic() < deadline, "run ended before the kill"
            time.sleep(0.05)
        victims = _rank_pids(rank)
        assert victims, "no rank process found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        code = process.wait(timeout=120)
        return code, time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            process.kill()


def _epochs_done(run: Path) -> int:
    state = run / "resume_state.pkl"  # written atomically: never read half-written
    return pickle.loads(state.read_bytes())["epochs_done"] if state.exists() else 0


def _horovod(*args: str) -> list[str]:
    return [str(BIN / "horovodrun"), "--gloo", "-np", "2", str(BIN / "hvdweather-train"), *args]


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_horovod_run_killed_in_epoch_3_resumes_bit_identical(synth_data, tmp_path):
    flags = ["--data", str(synth_data), "--epochs", "4", "--batch-size", "8", "--verbose", "0", "--seed", "3"]
    for name in ("u1", "u2"):
        done = run_cli(*_horovod(*flags, "--out", str(tmp_path / name)), timeout=400)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _assert_same_run(tmp_path / "u1", tmp_path / "u2")  # same seed, same result, bit for bit

    killed = tmp_path / "killed"
    code, seconds = _kill_rank_during_epoch(_horovod(*flags, "--out", str(killed)), killed, epoch=3, rank=1)
    assert code != 0 and seconds < 60, (code, seconds)  # the job ends, it does not hang
    resumed = run_cli(*_horovod("--out", str(killed), "--resume", "--verbose", "2"), timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming after epoch 2" in resumed.stdout
    _assert_same_run(tmp_path / "u1", killed)


def _one_process(*args: str) -> list[str]:
    return [str(BIN / "hvdweather-train"), *args]


@pytest.mark.parametrize("extra", [["--augment", "--optimizer", "adam"],
                                   ["--strategy", "mirrored", "--replicas", "2"]],
                         ids=["augment-adam", "mirrored"])
@pytest.mark.timeout(600)
def test_resume_after_a_kill_is_exact(tiny_data, tmp_path, extra):
    flags = ["--data", str(tiny_data), "--epochs", "3", "--batch-size", "2", "--verbose", "0", *extra]
    whole = run_cli(*_one_process(*flags, "--out", str(tmp_path / "whole")), timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    part = tmp_path / "part"
    first = run_cli(*_one_process(*flags, "--out", str(part), "--epochs", "2"), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    # a kill during the next checkpoint: temporary files written, never renamed
    (part / ".last.partial.keras").write_bytes(b"half a zip")
    (part / ".resume_state.partial.pkl").write_bytes(b"\x80\x05half")
    rest = run_cli(*_one_process("--out", str(part), "--resume", "--epochs", "3", "--verbose", "2"), timeout=300)
    assert rest.returncode == 0, rest.stderr[-2000:]
    _assert_same_run(tmp_path / "whole", part)


@pytest.mark.timeout(600)
def test_resume_before_at_and_after_the_unfreeze_is_exact(tiny_data, tmp_path):
    """--freeze-backbone-epochs 2 of 3: stopped after epoch 1 and resumed across the switch; stopped at
    the switch (epoch 2) and resumed after it: both end as one run never stopped, every epoch's metrics
    and the weights (the second part reads the stream where the first stopped; a resumed run builds the
    frozen or the whole trainable set its checkpoint holds, and never reloads ImageNet over it)."""
    flags = ["--data", str(tiny_data), "--batch-size", "2", "--verbose", "0", "--model", "efficientnet_lite0",
             "--weights", "imagenet", "--image-size", "64", "--freeze-backbone-epochs", "2", "--optimizer", "adam"]
    runs = {"whole": [3], "across": [1, 3], "at": [2, 3]}  # epochs at which each launch stops
    for name, stops in runs.items():
        first = run_cli(*_one_process(*flags, "--out", str(tmp_path / name), "--epochs", str(stops[0])), timeout=300)
        assert first.returncode == 0, first.stderr[-2000:]
        for epochs in stops[1:]:
            more = run_cli(*_one_process("--out", str(tmp_path / name), "--resume", "--epochs", str(epochs)),
                           timeout=300)
            assert more.returncode == 0, more.stderr[-2000:]
    lrs = [row["lr"] for row in _metrics(tmp_path / "whole")]
    assert lrs == pytest.approx([0.01, 0.01, 0.001])  # --fine-tune-lr-factor 0.1 from epoch 3
    _assert_same_run(tmp_path / "whole", tmp_path / "across")
    _assert_same_run(tmp_path / "whole", tmp_path / "at")


@pytest.mark.timeout(300)
def test_resume_refuses_another_run_and_a_finished_run_says_so(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "run"
    done = run_cli("hvdweather-train", "--data", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "4",
                   "--verbose", "0", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    again = run_cli("hvdweather-train", "--out", str(run), "--resume", timeout=120)
    assert again.returncode == 0 and "nothing to resume" in again.stdout
    # killed after its last checkpoint, before the report: the resume writes the report, trains nothing
    (run / "ranks.json").unlink()
    shutil.rmtree(run / "report")
    again = run_cli("hvdweather-train", "--out", str(run), "--resume", timeout=300)
    assert again.returncode == 0 and "writing its report" in again.stdout, again.stderr[-2000:]
    assert (run / "ranks.json").exists() and (run / "report" / "classification_report.csv").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    shutil.copy(next((data / "rainbow").iterdir()), data / "rainbow" / "new.jpg")
    changed = run_cli("hvdweather-train", "--out", str(run), "--resume", "--epochs", "2", timeout=120)
    assert changed.returncode == 2
    assert "file(s) the run did not split" in changed.stderr.splitlines()[-1]
    other = run_cli("hvdweather-train", "--out", str(run), "--resume", "--lr", "0.5", timeout=120)
    assert other.returncode == 2 and "--lr 0.5 differs from the run's 0.01" in other.stderr


def test_world_size_must_match():
    from hvdweather.config import ConfigError
    from hvdweather.resume import check_same_world

    record = {"world": {"strategy": "horovod", "num_workers": 2}}
    check_same_world(record, "horovod", 2)
    with pytest.raises(ConfigError, match="trained with 2 horovod worker"):
        check_same_world(record, "horovod", 1)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    from hvdweather.writers import RunWriter

    writer = RunWriter(tmp_path, is_primary=True)
    writer.save_state("s.pkl", lambda: {"epochs_done": 1})

    def crash(*_):
        raise KeyboardInterrupt  # stands in for a kill between the temporary write and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.save_state("s.pkl", lambda: {"epochs_done": 2})
    monkeypatch.undo()
    assert writer.read_state("s.pkl") == {"epochs_done": 1}
