"""MirroredStrategy training: same data, same run-directory outputs and records as Horovod."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import BIN, run_cli

ARGS = ["--epochs", "2", "--batch-size", "4", "--verbose", "2", "--seed", "3"]
OUTPUTS = {"config.json", "split.csv", "skipped.csv", "metrics.jsonl", "best.keras", "last.keras",
           "report/classification_report.csv", "report/classification_report.txt",
           "report/confusion_matrix.csv", "report/confusion_matrix.png", "report/curves.png"}


def _files(run: Path) -> set[str]:
    """The run's files; TensorBoard's event files by folder, since their names hold a time and a pid."""
    return {str(p.parent.relative_to(run)) + "/<events>" if p.name.startswith("events.out.tfevents.")
            else str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def mirrored_run(tiny_data, tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("mirrored") / "run"
    result = run_cli("hvdweather-train", "--strategy", "mirrored", "--replicas", "2", "--data", str(tiny_data),
                     "--out", str(run), *ARGS, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run, result.stdout


@pytest.mark.timeout(300)
def test_mirrored_writes_every_output(mirrored_run):
    run, stdout = mirrored_run
    assert OUTPUTS <= _files(run)
    for name in OUTPUTS:
        assert (run / name).stat().st_size > 0, name
    assert "mirrored, 2 worker(s)" in stdout and "global batch 8" in stdout


@pytest.mark.timeout(300)
def test_mirrored_records_strategy_workers_and_scaled_lr(mirrored_run):
    run, _ = mirrored_run
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert (row["strategy"], row["world_size"], row["processes"], row["global_batch_size"]) == \
            ("mirrored", 2, 1, 8)
    config = json.loads((run / "config.json").read_text())
    assert config["world"]["strategy"] == "mirrored" and config["world"]["num_workers"] == 2
    assert config["world"]["replicas_per_process"] == 2
    plan = config["plan"]
    assert plan["global_batch_size"] == 2 * plan["per_worker_batch_size"] == 8
    assert plan["scaled_lr"] == pytest.approx(2 * plan["base_lr"])
    assert rows[-1]["lr"] == pytest.approx(plan["scaled_lr"], rel=1e-5)  # warm-up (1 epoch) finished


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_mirrored_and_horovod_write_the_same_files(mirrored_run, tiny_data, tmp_path):
    run, _ = mirrored_run
    horovod = tmp_path / "horovod"
    result = run_cli("horovodrun", "-np", "2", str(BIN / "hvdweather-train"), "--data", str(tiny_data),
                     "--out", str(horovod), *ARGS, timeout=380)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _files(run) == _files(horovod)
    assert (run / "split.csv").read_text() == (horovod / "split.csv").read_text()  # same seed, same split
    mirrored_rows, horovod_rows = _metrics(run), _metrics(horovod)
    assert [set(r) for r in mirrored_rows] == [set(r) for r in horovod_rows]
    assert {r["strategy"] for r in horovod_rows} == {"horovod"}
    assert {(r["world_size"], r["global_batch_size"]) for r in horovod_rows} == \
        {(r["world_size"], r["global_batch_size"]) for r in mirrored_rows} == {(2, 8)}
