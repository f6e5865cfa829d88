"""hvdweather-sweep: a 2x2 grid of 1-epoch runs on a tiny set, killed between cells and re-run, re-run
again without training, a cell with a bad setting as a failed row; grid files checked by TrainConfig."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run_cli
from hvdweather.errors import ConfigError
from hvdweather.study.grid import grid_cells

CELLS = ["lr-0.01_optimizer-sgd", "lr-0.01_optimizer-adam", "lr-0.02_optimizer-sgd", "lr-0.02_optimizer-adam"]


def write_grid(path: Path, data: Path, extra: str = "") -> Path:
    path.write_text(f"base: {{data: {data}, epochs: 1, batch-size: 4, verbose: 2}}\n"
                    "axes: {lr: [0.01, 0.02], optimizer: [sgd, adam]}\n"
                    "variants:\n  too-big-batch: {batch-size: 500}\n" + extra)
    return path


def ok_cells(study: Path) -> list[str]:
    record = study / "study.json"
    cells = json.loads(record.read_text())["cells"] if record.exists() else []
    return [c["run"] for c in cells if c["status"] == "ok"]


@pytest.fixture(scope="module")
def study(tiny_data, tmp_path_factory):
    """The sweep killed (SIGKILL to its process group) once its first cell has finished, then re-run."""
    root = tmp_path_factory.mktemp("study")
    grid, out = write_grid(root / "grid.yaml", tiny_data), root / "study"
    command = [str(BIN / "hvdweather-sweep"), str(grid), "--out", str(out)]
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        deadline = time.monotonic() + 200
        while not ok_cells(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and the second cell's training with it
        first.wait()
    assert ok_cells(out) == CELLS[:1], (root / "first.log").read_text()[-3000:]
    done_before = (out / CELLS[0] / "ranks.json").stat().st_mtime_ns
    second = run_cli("hvdweather-sweep", str(grid), "--out", str(out), timeout=400)
    return out, grid, second, done_before


@pytest.mark.timeout(700)
def test_killed_sweep_rerun_finishes_the_grid_and_compares_it(study):
    out, _, second, done_before = study
    assert second.returncode == 1, second.stderr[-3000:]  # one cell failed; the others ran
    assert f"{CELLS[0]}: ok (finished before, skipped)" in second.stdout
    assert (out / CELLS[0] / "ranks.json").stat().st_mtime_ns == done_before  # not trained again
    for name in CELLS:
        assert (out / name / "report" / "test_metrics.json").is_file(), name
        config = json.loads((out / name / "config.json").read_text())["config"]
        assert (config["lr"], config["optimizer"]) == (float(name.split("_")[0][3:]), name.split("-")[-1])
    with open(out / "compare.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == [*CELLS, "too-big-batch"]
    assert [(r["lr"], r["optimizer"]) for r in rows[:4]] == [("0.01", "sgd"), ("0.01", "adam"), ("0.02", "sgd"),
                                                             ("0.02", "adam")]
    assert all(r["status"] == "ok" and 0 <= float(r["last_test_accuracy"]) <= 1 for r in rows[:4])
    assert rows[4]["status"] == "failed" and "--batch-size 500" in rows[4]["error"]
    assert rows[4]["per_worker_batch_size"] == "500"
    for name in ("curves.png", "test_accuracy.png", "compare.md"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.timeout(300)
def test_rerunning_a_finished_sweep_trains_nothing(study):
    out, grid, _, _ = study
    before = {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in CELLS}
    third = run_cli("hvdweather-sweep", str(grid), "--out", str(out), timeout=250)
    assert third.returncode == 1 and third.stdout.count("(finished before, skipped)") == 4, third.stdout
    assert before == {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in CELLS}
    dry = run_cli("hvdweather-sweep", str(grid), "--out", str(out), "--dry-run", "--launcher", "mpirun",
                  "--np", "2", timeout=60)
    assert dry.returncode == 0 and f"{CELLS[0]}: done;" in dry.stdout
    assert "mpirun" in dry.stdout and "-np 2" in dry.stdout and "5 cell(s)" in dry.stdout


@pytest.mark.timeout(60)
def test_a_changed_grid_is_not_answered_with_old_runs(study, tmp_path):
    out, grid, _, _ = study
    changed = tmp_path / "grid.yaml"
    changed.write_text(grid.read_text().replace("epochs: 1", "epochs: 1, momentum: 0.5"))
    from hvdweather.study.sweep import SweepSpec, run_cell

    cell = next(c for c in grid_cells(changed) if c.name == CELLS[0])
    record = run_cell(SweepSpec(str(changed), str(out)), out, cell)
    assert record["status"] == "failed" and "momentum 0.9" in record["error"] and "0.5" in record["error"]


@pytest.mark.parametrize("text, message", [
    ("base: {data: d}\naxes: {lrr: [0.1]}\n", "axes: unknown field(s) lrr"),
    ("base: {data: d}\naxes: {lr: [fast]}\n", "lr must be a number"),
    ("base: {data: d, out: x}\naxes: {lr: [0.1]}\n", "out is set by the sweep"),
    ("base: {data: d}\n", "no axes: and no variants:"),
    ("base: {data: d}\naxes: {lr: [0.1, 0.1]}\n", "non-empty list of distinct values"),
    ("base: {data: d}\naxis: {lr: [0.1]}\n", "expected a mapping with base:"),
])
def test_bad_grids_are_refused_naming_the_field(tmp_path, text, message):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        grid_cells(grid)


def test_flag_names_and_field_names_are_both_axes(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: {data: d, epochs: 2}\naxes: {batch-size: [4, 8], momentum: [0.8, 0.9]}\n"
                    "variants: {slow: {lr: 0.001}, broken: {val-split: 0.95}}\n")
    cells = grid_cells(grid)
    assert [c.name for c in cells] == ["batch-size-4_momentum-0.8", "batch-size-4_momentum-0.9",
                                       "batch-size-8_momentum-0.8", "batch-size-8_momentum-0.9", "slow", "broken"]
    assert cells[3].values["per_worker_batch_size"] == 8 and cells[3].values["epochs"] == 2
    assert [bool(c.problem) for c in cells] == [False] * 5 + [True] and "--val-split" in cells[5].problem


@pytest.mark.timeout(120)
def test_tensorboard_event_files_hold_each_runs_scalars_and_confusion_matrix(study):
    """Read with TensorBoard's own event reader: the scalars equal metrics.jsonl, the test images are there."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = study[0]
    for name in CELLS:
        events = EventAccumulator(str(out / name / "tensorboard"), size_guidance={"scalars": 0, "images": 0,
                                                                                   "tensors": 0})
        events.Reload()
        tags = events.Tags()
        values = {tag: [(e.step, float(tf_value(e))) for e in events.Tensors(tag)] for tag in tags["tensors"]}
        row = json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])
        for key, tag in (("loss", "loss/train"), ("val_loss", "loss/val"), ("accuracy", "accuracy/train"),
                         ("val_accuracy", "accuracy/val"), ("lr", "lr"), ("images_per_s", "images_per_s")):
            assert values[tag] == [(1, pytest.approx(row[key], rel=1e-5))], (name, tag)
        report = json.loads((out / name / "report" / "test_metrics.json").read_text())
        assert values["test_last/accuracy"] == [(1, pytest.approx(report["last"]["test_accuracy"], rel=1e-5))]
        assert {"test_best/confusion_matrix", "test_last/confusion_matrix"} <= set(tags["tensors"])


def tf_value(event) -> float:
    """A scalar summary's value (TF2 writes scalars as tensors); an image summary's has none."""
    from tensorboard.util import tensor_util

    array = tensor_util.make_ndarray(event.tensor_proto)
    return float(array) if array.ndim == 0 else float("nan")


def test_prepare_cell_writes_the_cells_config_and_prints_its_command(tiny_data, tmp_path):
    """What each SLURM array task runs (jobs/slurm/sweep_array.sbatch): cell N's run folder and config,
    printed as 'RUN_DIR CONFIG'; nothing trains. Failed with a TypeError after the CLI's move into cli/
    (the --prepare-cell value hid the function of the same name)."""
    grid, out = write_grid(tmp_path / "grid.yaml", tiny_data), tmp_path / "study"
    result = run_cli("hvdweather-sweep", str(grid), "--out", str(out), "--prepare-cell", "2", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir, config = result.stdout.split()
    assert Path(run_dir) == out / CELLS[2] and Path(run_dir).is_dir() and Path(config).is_file()
    assert not (Path(run_dir) / "metrics.jsonl").exists()
    refused = run_cli("hvdweather-sweep", str(grid), "--out", str(out), "--prepare-cell", "9", timeout=60)
    assert refused.returncode == 2 and "--prepare-cell 9: the grid has 5 cell(s)" in refused.stderr
