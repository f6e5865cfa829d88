"""MirroredStrategy training: same data, same run-directory outputs and records as Horovod."""
from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path

import numpy as np
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


def _train_split_moments(run: Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1] of the run's training images, by Pillow, at the run's size."""
    from PIL import Image

    rows = [r for r in csv.DictReader((run / "split.csv").open()) if r["subset"] == "train"]
    pixels = np.concatenate([np.asarray(Image.open(r["path"]).convert("RGB").resize((image_size, image_size),
                                        Image.BILINEAR), np.float64).reshape(-1, 3) for r in rows])
    return pixels.mean(0) / 255, pixels.std(0) / 255


@pytest.mark.timeout(300)
def test_mirrored_with_the_training_knobs(tiny_data, tmp_path):
    run = tmp_path / "run"
    result = run_cli("hvdweather-train", "--strategy", "mirrored", "--replicas", "2", "--data", str(tiny_data),
                     "--out", str(run), "--epochs", "3", "--batch-size", "2", "--verbose", "2", "--seed", "3",
                     "--model", "resnet18", "--image-size", "32", "--lr-schedule", "cosine", "--optimizer", "adamw",
                     "--weight-decay", "0.01", "--label-smoothing", "0.1", "--class-weights", "balanced",
                     "--augment", "standard", "--normalize", "dataset", "--top-k", "2", "--early-stopping", "1",
                     timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((run / "config.json").read_text())
    plan, rows = record["plan"], _metrics(run)
    # The LR at each epoch's last step: the warm-up ramp (one epoch), then cosine from the scaled LR to 0.
    assert (plan["schedule"], plan["scaled_lr"], plan["warmup_steps"]) == ("cosine", pytest.approx(0.02), 4)
    for row in rows:
        step = row["epoch"] * plan["steps_per_epoch"] - 1
        expected = (0.01 + step / 4 * 0.01 if step < 4
                    else 0.01 * (1 + math.cos(math.pi * (step - 4) / (plan["total_steps"] - 4))))
        assert row["lr"] == pytest.approx(expected, rel=1e-5), row["epoch"]
    # Early stopping: it stops at the first epoch without a better val_loss, and only there, saying so
    # (tests/test_train.py has a run where it surely fires, and its resume).
    stopped_at = next((i + 1 for i in range(1, len(rows))
                       if rows[i]["val_loss"] >= min(r["val_loss"] for r in rows[:i])), 3)
    assert len(rows) == stopped_at
    assert ("early stopping (--early-stopping 1)" in result.stdout) == (stopped_at < 3)
    for row in rows:  # top-2 accuracy, train and validation, and at least plain accuracy
        assert row["accuracy"] <= row["top2_accuracy"] <= 1 and row["val_accuracy"] <= row["val_top2_accuracy"]
    mean, std = (np.array(m) for m in record["normalization"])
    want_mean, want_std = _train_split_moments(run, 32)  # the training split's, not all images'
    np.testing.assert_allclose(mean, want_mean, atol=3e-3)
    np.testing.assert_allclose(std, want_std, atol=3e-3)
    with zipfile.ZipFile(run / "last.keras") as saved:  # what the model was compiled and saved with
        model = json.loads(saved.read("config.json"))
    compiled = model["compile_config"]
    assert (compiled["optimizer"]["class_name"], compiled["optimizer"]["config"]["weight_decay"]) == ("AdamW", 0.01)
    assert compiled["loss"]["config"]["label_smoothing"] == pytest.approx(0.1)
    layer = next(x for x in model["config"]["layers"] if x["class_name"] == "Normalization")["config"]
    np.testing.assert_allclose(layer["mean"], mean)
    np.testing.assert_allclose(layer["variance"], std ** 2)
    assert "mirrored, 2 worker(s)" in result.stdout and record["config"]["class_weights"] == "balanced"


@pytest.mark.multiprocess
@pytest.mark.timeout(200)
@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_mirrored_under_a_multi_rank_launch_is_refused_before_any_work(launcher, tiny_data, tmp_path):
    """Both ranks would train into one --out (rank 1 then dies on rank 0's checkpoint files)."""
    from conftest import MPIRUN

    out = tmp_path / "run"
    train = [str(BIN / "hvdweather-train"), "--data", str(tiny_data), "--out", str(out), "--strategy", "mirrored",
             "--replicas", "2", "--epochs", "1"]
    command = ["horovodrun", "-np", "2", *train] if launcher == "horovodrun" else [*MPIRUN, *train]
    result = run_cli(*command, timeout=180)
    assert result.returncode != 0
    assert "--strategy mirrored is one process" in result.stdout + result.stderr
    assert "a launcher started 2 processes" in result.stdout + result.stderr
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written
