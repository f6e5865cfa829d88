"""A run folder read back from anywhere (issue 25): trained in one folder with a relative --data, then
evaluated and resumed from another folder, after being copied elsewhere with its data set, and after its
data set moved on its own. Before the fix, config.json and split.csv held the paths as typed, relative to
the folder training started in: from another folder hvdweather-evaluate died with a traceback
("Found empty input array") and left an empty eval-test-best/, and --resume said "--data data/tiny:
directory not found". Proven to fail so by running these tests against the code before the fix."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from hvdweather.runfiles import data_fields, locate_data, rebase, split_root


def _train(cwd: Path, *args: str):
    return run_cli("hvdweather-train", "--batch-size", "4", "--verbose", "0", *args, cwd=cwd, timeout=300)


def _one_line_error(result, prog: str, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _report(folder: Path) -> str:
    return (folder / "classification_report.csv").read_text()


@pytest.fixture(scope="module")
def first(tiny_data, tmp_path_factory) -> Path:
    """tiny_data copied to FIRST/data/tiny and trained from FIRST as `--data data/tiny --out runs/r`."""
    work = tmp_path_factory.mktemp("portable") / "first"
    shutil.copytree(tiny_data, work / "data" / "tiny")
    result = _train(work, "--data", "data/tiny", "--out", "runs/r", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.mark.timeout(600)
def test_a_run_folder_works_from_another_folder_and_when_copied_with_its_data(first, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = first / "runs" / "r"
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["data"] == str(first / "data" / "tiny") and record["data_from_run"] == "../../data/tiny"
    with open(run / "split.csv", newline="") as handle:
        assert all(os.path.isabs(row["path"]) for row in csv.DictReader(handle))

    result = run_cli("hvdweather-evaluate", str(run), cwd=elsewhere, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _report(run / "eval-test-best") == _report(run / "report")
    result = _train(elsewhere, "--out", str(run), "--resume", "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]

    # The run folder and its data set copied together to another place; the originals are gone.
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first / "data")
    try:
        result = run_cli("hvdweather-evaluate", str(moved / "runs" / "r"), "--out", "e1", cwd=elsewhere, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert _report(elsewhere / "e1") == _report(moved / "runs" / "r" / "report")
        result = _train(elsewhere, "--out", str(moved / "runs" / "r"), "--resume", "--epochs", "3")
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        shutil.copytree(moved / "data", first / "data")  # the module's other test reads it


@pytest.mark.timeout(600)
def test_a_data_set_moved_alone_is_a_one_line_error_until_a_flag_says_where(first, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(first / "runs" / "r", run, ignore=shutil.ignore_patterns("eval-*"))
    data = tmp_path / "now" / "tiny"
    shutil.move(first / "data", data.parent)  # the data set moved; the run folder did not follow
    try:
        _moved_alone(first, run, data, tmp_path)
    finally:
        shutil.move(data.parent, first / "data")


def _moved_alone(first: Path, run: Path, data: Path, tmp_path: Path) -> None:
    result = run_cli("hvdweather-evaluate", str(run), cwd=tmp_path, timeout=300)
    _one_line_error(result, "hvdweather-evaluate", "--data-root", str(first / "data" / "tiny"))
    assert not (run / "eval-test-best").exists()
    wrong = tmp_path / "wrong"
    shutil.copytree(data / "rainbow", wrong / "rainbow")
    result = run_cli("hvdweather-evaluate", str(run), "--data-root", str(wrong), cwd=tmp_path, timeout=300)
    _one_line_error(result, "hvdweather-evaluate", f"--data-root {wrong}", "test image(s) are not in")
    result = run_cli("hvdweather-evaluate", str(run), "--data-root", str(data), "--out", "e", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _report(tmp_path / "e") == _report(run / "report")
    more = str(len((run / "metrics.jsonl").read_text().splitlines()) + 1)  # one epoch to train
    result = _train(tmp_path, "--out", str(run), "--resume", "--epochs", more)
    _one_line_error(result, "hvdweather-train", "--resume", "--data DIR")
    shutil.copytree(data, wrong, dirs_exist_ok=True)
    (wrong / "rainbow" / next((data / "rainbow").iterdir()).name).unlink()  # one file of the split gone
    result = _train(tmp_path, "--out", str(run), "--resume", "--epochs", more, "--data", str(wrong))
    _one_line_error(result, "hvdweather-train", "--resume: 1 file(s) of the run's split are no longer in --data")
    result = _train(tmp_path, "--out", str(run), "--resume", "--epochs", more, "--data", str(data))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["data"] == str(data) and record["split_root"] == str(first / "data" / "tiny")
    assert "resuming after epoch" in result.stdout


@pytest.mark.timeout(600)
def test_an_old_run_with_paths_relative_to_where_it_trained_still_reads(first, tmp_path):
    """Runs written before: config.json's data and split.csv's paths as typed, no location fields."""
    old = first / "runs" / "old"
    shutil.copytree(first / "runs" / "r", old)
    record = json.loads((old / "config.json").read_text())
    record["config"]["data"] = "data/tiny"
    del record["split_root"], record["data_from_run"]
    (old / "config.json").write_text(json.dumps(record))
    with open(old / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(old / "split.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([row | {"path": os.path.relpath(row["path"], first)} for row in rows])

    result = run_cli("hvdweather-evaluate", "runs/old", "--out", str(tmp_path / "here"), cwd=first, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli("hvdweather-evaluate", str(old), cwd=tmp_path, timeout=300)
    _one_line_error(result, "hvdweather-evaluate", "data/tiny", "relative to the folder training started in",
                    "--data-root")
    result = run_cli("hvdweather-evaluate", str(old), "--data-root", str(first / "data" / "tiny"), "--out", "there",
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _report(tmp_path / "here") == _report(tmp_path / "there") == _report(old / "report")


def test_rebase_moves_paths_under_the_old_root_only(tmp_path):
    assert rebase(("/a/data/x/1.jpg", "/elsewhere/2.jpg"), "/a/data", "/b/d") == ("/b/d/x/1.jpg", "/elsewhere/2.jpg")
    assert rebase(("data/x/1.jpg",), "data", "/b/d") == ("/b/d/x/1.jpg",)  # an old run's relative paths
    assert rebase(("/a/data2/1.jpg",), "/a/data", "/b") == ("/a/data2/1.jpg",)  # a sibling is not under it
    assert rebase(("p",), "", "/b") == ("p",)


def test_location_fields_and_where_the_data_is_found(tmp_path):
    (tmp_path / "data").mkdir()
    fields = data_fields(str(tmp_path / "data"), tmp_path / "runs" / "r", None)
    assert fields == {"split_root": str(tmp_path / "data"), "data_from_run": "../../data"}
    assert data_fields(str(tmp_path / "data"), tmp_path / "r", {"split_root": "/old"})["split_root"] == "/old"
    assert split_root({"config": {"data": "rel"}}) == "rel"
    record = {"config": {"data": str(tmp_path / "gone")}, "data_from_run": "../../data"}
    assert locate_data(record, tmp_path / "runs" / "r") == str(tmp_path / "data")
    assert locate_data({"config": {"data": "gone"}}, tmp_path) == ""


def test_speed_is_the_median_after_epoch_one_in_every_table():
    """One rule (runfiles.median_after_first) behind the scaling, knobs and study tables (issue 23: three
    copies). Epoch 1 (tracing, cache filling) is left out unless it is the only epoch."""
    from hvdweather.bench.scaling import summarize_metrics
    from hvdweather.runfiles import median_after_first, timed_epochs

    rows = [{"epoch": e, "images_per_s": v, "epoch_time_s": 10.0 / v, "train_time_s": 8.0 / v,
             "val_accuracy": a} for e, v, a in ((1, 1.0, 0.2), (2, 30.0, 0.4), (3, 10.0, 0.6), (4, 20.0, 0.7))]
    assert [r["epoch"] for r in timed_epochs(rows)] == [2, 3, 4] and timed_epochs(rows[:1]) == rows[:1]
    assert median_after_first(rows) == 20.0 and median_after_first(rows[:1]) == 1.0
    summary = summarize_metrics(rows, 0.5)
    assert (summary["images_per_s"], summary["epoch_time_s"], summary["epochs_to_target"]) == (20.0, 0.5, 3)
