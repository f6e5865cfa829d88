"""Multi-process Horovod: real horovodrun (Gloo) and mpirun runs of hvdweather-train, the gradient
averaging itself, and a failing rank ending the job instead of hanging it."""
from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, MPIRUN, run_cli, run_mpirun

SCRIPTS = Path(__file__).parent / "scripts"
TRAIN_ARGS = ["--epochs", "5", "--batch-size", "8", "--verbose", "2", "--seed", "1"]
OUTPUTS = ("config.json", "split.csv", "skipped.csv", "metrics.jsonl", "best.keras", "last.keras",
           "shards.csv", "ranks.json", "report/classification_report.csv", "report/confusion_matrix.png",
           "report/curves.png")


def _check_two_rank_run(run: Path) -> None:
    for name in OUTPUTS:
        assert (run / name).is_file(), name
    with open(run / "shards.csv") as handle:
        rows = list(csv.DictReader(handle))
    per_rank = {r: {row["path"] for row in rows if row["rank"] == r} for r in ("0", "1")}
    assert per_rank["0"] and per_rank["1"] and per_rank["0"].isdisjoint(per_rank["1"])
    with open(run / "split.csv") as handle:
        train = {row["path"] for row in csv.DictReader(handle) if row["subset"] == "train"}
    assert per_rank["0"] | per_rank["1"] == train
    ranks = json.loads((run / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 5 and all(m["world_size"] == 2 for m in metrics)
    with open(run / "report" / "classification_report.csv") as handle:
        accuracy = float(next(r for r in csv.DictReader(handle) if r["class"] == "accuracy")["f1"])
    assert accuracy > 0.3, f"test accuracy {accuracy} is not well above chance (1/11)"


def _assert_tags_only_at_line_starts(stdout: str) -> None:
    """The launcher tags each write it relays ("[1,0]<stdout>:"); a line written in two writes (text, then
    its newline) shows a second tag at its end."""
    stray = [line for line in stdout.splitlines()
             if line.count("<stdout>:") > 1 or ("<stdout>:" in line and not re.match(r"\[[\d,]+\]<stdout>:", line))]
    assert not stray, stray[:3]


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_horovodrun_gloo_two_ranks(synth_data, tmp_path):
    run = tmp_path / "run"
    result = run_cli("horovodrun", "--gloo", "-np", "2", str(BIN / "hvdweather-train"), "--data", str(synth_data),
                     "--out", str(run), *TRAIN_ARGS, "--verbose", "1",
                     "--horovod-timeline", str(tmp_path / "timeline.json"), timeout=380)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "HorovodAllreduce" in (tmp_path / "timeline.json").read_text()
    assert "global batch 16" in result.stdout
    # stdout is a pipe here, as in a log file: whole lines, never Keras's \r-redrawn bar
    assert "\r" not in result.stdout and "\r" not in result.stderr
    _assert_tags_only_at_line_starts(result.stdout)
    assert result.stdout.count("epoch 5/5: loss") == 1  # one voice: only rank 0 reports progress
    step_lines = [line for line in result.stdout.splitlines() if "steps (" in line and "images/s, ETA" in line]
    assert len(step_lines) >= 5, result.stdout[-2000:]
    _check_two_rank_run(run)


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_mpirun_two_ranks(synth_data, tmp_path):
    run = tmp_path / "run"
    result = run_mpirun("hvdweather-train", "--data", str(synth_data), "--out", str(run),
                        *TRAIN_ARGS, "--verbose", "1", timeout=380)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("epoch 5/5: loss") == 1  # one voice: rank 0 only
    # OpenMPI gives each rank a pty, so isatty() is true in the ranks even with the output in a file:
    # the launcher decides, and Keras's \r-redrawn bar never reaches the log
    assert "\r" not in result.stdout and "[==" not in result.stdout
    _assert_tags_only_at_line_starts(result.stdout)
    assert any("steps (" in line and "images/s, ETA" in line for line in result.stdout.splitlines())
    _check_two_rank_run(run)


@pytest.mark.multiprocess
@pytest.mark.timeout(200)
def test_two_ranks_half_batch_equal_one_rank_full_batch(tmp_path):
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    single = run_cli(sys.executable, str(SCRIPTS / "first_step.py"), str(one), timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_cli("horovodrun", "-np", "2", sys.executable, str(SCRIPTS / "first_step.py"), str(two),
                     timeout=180)
    assert double.returncode == 0, double.stdout[-3000:] + double.stderr[-3000:]
    a, b = np.load(one), np.load(two)
    assert len(a.files) == len(b.files) == 4
    initial_moved = False
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0)
        initial_moved |= bool(np.abs(a[key]).sum() > 0)
    assert initial_moved


@pytest.mark.multiprocess
@pytest.mark.timeout(200)
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_failing_rank_ends_the_job(launcher):
    prefix = ["horovodrun", "-np", "2"] if launcher == "horovodrun" else MPIRUN
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS.parent.parent), os.environ.get("PYTHONPATH")]))}
    result = run_cli(*prefix, sys.executable, str(SCRIPTS / "failing_rank.py"), timeout=150, env=env)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stdout + result.stderr
