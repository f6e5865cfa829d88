"""Exact resume: a run killed at any moment and resumed ends bit-identical to one never interrupted;
checkpoints are atomic; a resume that would be another run is refused."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, alive, held, held_train, kill_all, own_processes, own_tree, run_cli, wait_gone, wait_until

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


def _epochs_done(run: Path) -> int:
    state = run / "resume_state.pkl"  # written atomically: never read half-written
    return pickle.loads(state.read_bytes())["epochs_done"] if state.exists() else 0


# Tiny data (3 classes x 8: 18 training images), the weather CNN (BatchNorm and dropout) at its smallest
# size, 3 epochs: every kill below lands in epoch 2 (the harness holds the run there, after its step 2),
# and the resume must then redo epoch 2 and train epoch 3 exactly as the reference run did.
COMMON = ["--epochs", "3", "--batch-size", "2", "--image-size", "253", "--verbose", "0"]
CONFIGS = {"horovod": ["--seed", "3"],  # under horovodrun --gloo -np 2: 4 steps per epoch on each rank
           "augment-adam": ["--augment", "standard", "--optimizer", "adam"],  # one process: 9 steps per epoch
           "mirrored": ["--strategy", "mirrored", "--replicas", "2"]}  # one process, 2 replicas: 4 steps


def _horovodrun(*command: str, controller: str = "--gloo") -> list[str]:
    return [str(BIN / "horovodrun"), controller, "-np", "2", *command]


def _held(mark: Path, who: str, config: str, data: Path, run: Path) -> list[str]:
    """The config's training command, held by the harness after step 2 of epoch 2 (epoch 1 is saved)."""
    return held_train(2, 2, mark, who, *_flags(config, data, run))


def _flags(config: str, data: Path, run: Path) -> list[str]:
    return ["--data", str(data), "--out", str(run), *COMMON, *CONFIGS[config]]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """reference(config): the run of that config never interrupted, trained once for the module. Every
    killed run below starts from scratch with the same flags and seed: that it ends on the reference's
    bits after its resume also holds "same flags, world and seed, same bits" (no second reference run)."""
    runs: dict[str, Path] = {}

    def get(config: str) -> Path:
        if config not in runs:
            run = tmp_path_factory.mktemp("reference") / config
            command = [str(BIN / "hvdweather-train"), *_flags(config, tiny_data, run)]
            done = run_cli(*(_horovodrun(*command) if config == "horovod" else command), timeout=400)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            runs[config] = run
        return runs[config]

    return get


def _start(command: list[str], log: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, **popen)


def _wait_held(mark: Path, count: int, process: subprocess.Popen, log: Path) -> list[dict]:
    wait_until(lambda: len(held(mark)) >= count, f"{count} process(es) held inside epoch 2", process, 300, log)
    return held(mark)


def _resume(run: Path, *launcher: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "hvdweather-train"), "--out", str(run), "--resume", "--verbose", "2"]
    resumed = run_cli(*(_horovodrun(*command) if launcher else command), timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "resuming after epoch 1" in resumed.stdout  # epoch 2, where the kill landed, is trained again
    return resumed


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_horovod_rank_killed_mid_epoch_resumes_bit_identical(reference, tiny_data, tmp_path):
    """Rank 1 SIGKILLed inside epoch 2 (held there by the harness; rank 0 waits in the next allreduce):
    the launcher ends the job in seconds, a one-process resume is refused (another world), and
    `horovodrun ... --resume` ends with the reference run's weights and metrics, bit for bit. Proven to
    fail with Horovod's BroadcastGlobalVariablesCallback added to the callbacks (hvdweather.distributed.horovod): after
    the resumed run's first step it copies rank 0's BatchNorm statistics over rank 1's."""
    killed, mark, log = tmp_path / "killed", tmp_path / "mark", tmp_path / "job.log"
    launcher = _start(_horovodrun(*_held(mark, "others", "horovod", tiny_data, killed)), log)
    with own_tree(launcher):
        (victim,) = _wait_held(mark, 1, launcher, log)
        (rank_1,) = [p for p in own_processes(launcher.pid, HOROVOD_RANK="1") if p.pid == victim["pid"]]
        rank_1.kill()
        killed_at = time.monotonic()
        code = launcher.wait(timeout=120)
        assert code != 0 and time.monotonic() - killed_at < 60  # the job ends, it does not hang
    assert _epochs_done(killed) == 1
    # Same world checked before any training: one process may not continue a 2-worker run.
    alone = run_cli("hvdweather-train", "--out", str(killed), "--resume", timeout=200)
    assert alone.returncode == 2 and "trained with 2 horovod worker(s)" in alone.stderr.splitlines()[-1]
    _resume(killed, "horovodrun")
    _assert_same_run(reference("horovod"), killed)


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
def test_launcher_killed_mid_epoch_takes_its_ranks_and_resumes_bit_identical(reference, tiny_data, tmp_path,
                                                                             controller):
    """SIGKILL to horovodrun itself while both ranks are inside epoch 2, then --resume ends as the reference
    run. Under Gloo no rank outlives horovodrun (Horovod's middleman, a session of its own, ends them when
    its parent's pipe closes). Under MPI horovodrun became `sh -c mpirun`, and mpirun outlives it with its
    ranks: a --resume meanwhile is refused, because the primary holds the run directory's lock (proven to
    fail without the lock: the refusal was another one, after TensorFlow loaded), and a SIGKILL to mpirun
    then ends its ranks (OpenMPI's own doing)."""
    killed, mark, log = tmp_path / "killed", tmp_path / "mark", tmp_path / "job.log"
    launcher = _start(_horovodrun(*_held(mark, "all", "horovod", tiny_data, killed), controller=controller), log)
    with own_tree(launcher) as tree:
        ranks = {h["pid"] for h in _wait_held(mark, 2, launcher, log)}
        tree.extend(own_processes(launcher.pid))
        assert ranks <= {p.pid for p in tree}
        launcher.kill()  # the launcher only: what becomes of its ranks is the point
        launcher.wait(timeout=30)
        if controller == "--mpi":
            orphans = alive(tree)  # mpirun and the ranks go on without horovodrun
            assert ranks <= {p.pid for p in orphans} and any(p.name() == "mpirun" for p in orphans)
            refused = run_cli("hvdweather-train", "--out", str(killed), "--resume", timeout=120)
            assert refused.returncode == 2 and "is being trained by pid" in refused.stderr, refused.stderr[-2000:]
            kill_all([p for p in tree if p.name() == "mpirun"])
        left = wait_gone(tree, 60)
        assert not left, f"ranks outlived the launcher: {[p.cmdline()[:3] for p in left]}"
    assert _epochs_done(killed) == 1
    _resume(killed, "horovodrun")
    _assert_same_run(reference("horovod"), killed)


@pytest.mark.parametrize("config", ["augment-adam", "mirrored"])
@pytest.mark.timeout(600)
def test_one_process_killed_mid_epoch_resumes_exact(reference, tiny_data, tmp_path, config):
    """SIGKILL to the one training process inside epoch 2, with what a kill during the next checkpoint
    or between metrics.jsonl and the checkpoint would also leave (temporary files never renamed, a row
    for an epoch whose checkpoint never landed): --resume ends as the reference run. Proven to fail
    with metrics.jsonl not cut back to the checkpoint's epoch (train.fit)."""
    part, mark, log = tmp_path / "part", tmp_path / "mark", tmp_path / "train.log"
    process = _start(_held(mark, "all", config, tiny_data, part), log)
    with own_tree(process):
        (holder,) = _wait_held(mark, 1, process, log)
        assert holder["pid"] == process.pid
        process.kill()  # our own child: the process that trains
        assert process.wait(timeout=30) == -signal.SIGKILL
    assert _epochs_done(part) == 1 and len(_metrics(part)) == 1
    (part / ".last.partial.keras").write_bytes(b"half a zip")
    (part / ".resume_state.partial.pkl").write_bytes(b"\x80\x05half")
    with (part / "metrics.jsonl").open("a") as rows:
        rows.write(json.dumps({**_metrics(part)[0], "epoch": 2, "loss": 99.0}) + "\n")
    _resume(part)
    _assert_same_run(reference(config), part)


@pytest.mark.timeout(600)
def test_ctrl_c_says_which_epoch_is_saved_and_resume_continues(reference, tiny_data, tmp_path):
    """Ctrl-C (SIGINT) inside epoch 2 of one process: exit 130 and one line naming epoch 1's checkpoint
    and --resume (not just "aborted"); the resume then ends as the reference run. Proven to fail with
    the old cli.py ("hvdweather-train: aborted")."""
    part, mark, log = tmp_path / "part", tmp_path / "mark", tmp_path / "train.log"
    process = _start(_held(mark, "all", "augment-adam", tiny_data, part), log)
    with own_tree(process):
        _wait_held(mark, 1, process, log)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
    text = log.read_text()
    assert f"hvdweather-train: interrupted; epoch 1's checkpoint is saved in {part}: add --resume" in text
    assert "aborted" not in text and "Traceback" not in text
    _resume(part)
    _assert_same_run(reference("augment-adam"), part)


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
@pytest.mark.parametrize("controller", ["--gloo", "--mpi"])
def test_ctrl_c_under_horovodrun_is_said_once_by_rank_0(tiny_data, tmp_path, controller):
    """Ctrl-C to horovodrun (SIGINT to its process group, as a terminal sends it) while both ranks are
    inside epoch 2: the launcher relays it as SIGTERM (Gloo: its middleman; MPI: mpirun, which SIGKILLs
    a second later), and the note comes once, from rank 0, in time. Proven to fail without
    cli.say_on_sigterm (the ranks died of SIGTERM without a word)."""
    run, mark, log = tmp_path / "run", tmp_path / "mark", tmp_path / "job.log"
    launcher = _start(_horovodrun(*_held(mark, "all", "horovod", tiny_data, run), controller=controller), log,
                      start_new_session=True)
    with own_tree(launcher) as tree:
        _wait_held(mark, 2, launcher, log)
        tree.extend(own_processes(launcher.pid))
        os.killpg(launcher.pid, signal.SIGINT)
        assert launcher.wait(timeout=60) != 0
        assert not wait_gone(tree, 30)
    notes = [line for line in log.read_text().splitlines() if "interrupted;" in line]
    assert len(notes) == 1, log.read_text()[-3000:]
    assert re.match(r"\[(1,)?0\]<stderr>:hvdweather-train: interrupted; epoch 1's checkpoint is saved in ", notes[0])
    assert "add --resume to the same command (same launcher, same number of workers)" in notes[0]
    assert _epochs_done(run) == 1


def _one_process(*args: str) -> list[str]:
    return [str(BIN / "hvdweather-train"), *args]


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
    (data / "rainbow" / "new.jpg").unlink()
    with (run / "split.csv").open() as rows:
        one = next(csv.DictReader(rows))["path"]
    Path(one).rename(tmp_path / "aside")
    gone = run_cli("hvdweather-train", "--out", str(run), "--resume", "--epochs", "2", timeout=120)
    assert gone.returncode == 2
    assert f"1 file(s) of the run's split are no longer in --data {data} (e.g. {one})" in gone.stderr.splitlines()[-1]
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
