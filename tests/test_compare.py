"""hvdweather-compare on hand-made run directories: the values in each row against what the files say,
the varied-settings columns, refusals of runs that cannot share a table, and the CLI's outputs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from hvdweather.config import TrainConfig
from hvdweather.errors import ConfigError
from hvdweather.study.compare import compare_runs

CLASSES = ["fogsmog", "rainbow"]


def make_run(root: Path, name: str, losses: list[float], accuracies: list[float], classes=CLASSES,
             test_files=("a.jpg", "b.jpg"), with_last: bool = True, best_test: float = 0.5, **config) -> Path:
    """A run directory as hvdweather-train leaves it, with chosen numbers (a 4-image-per-s run)."""
    run = root / name
    (run / "report").mkdir(parents=True)
    cfg = TrainConfig(data=str(root / "data"), out=str(run), **config).to_dict()
    world = config.get("world_size", 1)
    (run / "config.json").write_text(json.dumps({"config": cfg, "world": {"num_workers": world},
                                                 "class_names": list(classes)}))
    rows = [{"epoch": i + 1, "loss": loss + 0.1, "accuracy": acc, "val_loss": loss, "val_accuracy": acc,
             "epoch_time_s": 2.0 + i, "images_per_s": 10.0 * (i + 1), "world_size": world}
            for i, (loss, acc) in enumerate(zip(losses, accuracies))]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(run / "split.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subset", "label", "class_name", "path"])
        for index, file in enumerate(test_files):
            writer.writerow(["test", index % 2, classes[index % 2], str(root / "data" / classes[index % 2] / file)])
    best = min(rows, key=lambda r: r["val_loss"])["epoch"]
    sections = {"best": {"epoch": best, "test_accuracy": best_test, "macro_f1": 0.4,
                         "top_k_accuracy": {"1": 0.5, "2": 1.0}}}
    if with_last:
        sections["last"] = {"epoch": len(rows), "test_accuracy": 0.25, "macro_f1": 0.2,
                            "top_k_accuracy": {"1": 0.25, "2": 1.0}}
    (run / "report" / "test_metrics.json").write_text(json.dumps(sections))
    return run


def test_rows_hold_best_and_last_checkpoint_and_only_the_varied_settings(tmp_path):
    a = make_run(tmp_path, "a", [0.9, 0.5, 0.7], [0.3, 0.6, 0.7], lr=0.01)
    b = make_run(tmp_path, "b", [0.8, 0.9], [0.2, 0.4], lr=0.1)
    rows = compare_runs([a, b], tmp_path / "cmp", target_accuracy=0.6, top_k=2)
    first, second = rows
    assert first["lr"] == 0.01 and second["lr"] == 0.1
    assert "per_worker_batch_size" not in first and "out" not in first  # equal or not a setting
    assert (first["best_epoch"], first["best_val_loss"], first["best_val_accuracy"]) == (2, 0.5, 0.6)
    assert (first["last_epoch"], first["last_val_loss"], first["last_val_accuracy"]) == (3, 0.7, 0.7)
    assert (first["best_test_accuracy"], first["last_test_accuracy"]) == (0.5, 0.25)
    assert (first["best_top2_accuracy"], first["last_macro_f1"]) == (1.0, 0.2)
    assert first["epochs_to_target"] == 2 and second["epochs_to_target"] is None
    assert first["images_per_s"] == 25.0  # median of epochs 2 and 3 (epoch 1 left out)
    assert first["wall_s"] == 2.0 + 3.0 + 4.0 and second["best_epoch"] == 1
    with open(tmp_path / "cmp" / "compare.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["run"] for r in table] == ["a", "b"] and table[1]["lr"] == "0.1"
    assert "| a | ok | 0.01 |" in (tmp_path / "cmp" / "compare.md").read_text()
    for name in ("curves.png", "test_accuracy.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 5000, name


def test_a_run_without_last_section_has_empty_last_columns(tmp_path):
    a = make_run(tmp_path, "a", [0.9], [0.3], with_last=False)
    (row,) = compare_runs([a], tmp_path / "cmp")
    assert row["best_test_accuracy"] == 0.5 and row["last_test_accuracy"] is None and row["last_epoch"] is None


def test_runs_of_other_classes_or_other_test_images_are_refused(tmp_path):
    a = make_run(tmp_path, "a", [0.9], [0.3])
    other_classes = make_run(tmp_path, "b", [0.9], [0.3], classes=["dew", "hail"])
    other_split = make_run(tmp_path, "c", [0.9], [0.3], test_files=("a.jpg", "z.jpg"))
    with pytest.raises(ConfigError, match="different classes"):
        compare_runs([a, other_classes], tmp_path / "cmp")
    with pytest.raises(ConfigError, match="tested on different images"):
        compare_runs([a, other_split], tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "compare.csv").exists()


def test_runs_of_several_seed_values_share_a_table_and_get_mean_and_std_per_setting(tmp_path):
    """Each seed splits anew (other test images): allowed when seed varies, summarised over the --seed values."""
    a = make_run(tmp_path, "a", [0.9], [0.3], seed=1, lr=0.01, best_test=0.5)
    b = make_run(tmp_path, "b", [0.8], [0.3], seed=2, lr=0.01, best_test=0.7, test_files=("c.jpg", "d.jpg"))
    c = make_run(tmp_path, "c", [0.9], [0.3], seed=1, lr=0.1, best_test=0.6)
    compare_runs([a, b, c], tmp_path / "cmp")
    with open(tmp_path / "cmp" / "seed_spread.csv") as handle:
        groups = {row["lr"]: row for row in csv.DictReader(handle)}
    assert groups["0.01"]["seed_values"] == "1 2" and groups["0.1"]["seed_values"] == "1"
    assert float(groups["0.01"]["best_test_accuracy_mean"]) == pytest.approx(0.6)
    assert float(groups["0.01"]["best_test_accuracy_std"]) == pytest.approx(0.1414, abs=1e-4)
    assert float(groups["0.1"]["best_test_accuracy_std"]) == 0.0
    assert "| 0.01 | 1 2 | 0.6000 ± 0.1414 |" in (tmp_path / "cmp" / "seed_spread.md").read_text()
    different_split_same_seed = make_run(tmp_path, "d", [0.9], [0.3], seed=1, lr=0.01,
                                         test_files=("z.jpg", "b.jpg"))
    with pytest.raises(ConfigError, match="tested on different images"):
        compare_runs([a, different_split_same_seed], tmp_path / "cmp2")


def test_failed_cells_are_rows_with_their_error(tmp_path):
    a = make_run(tmp_path, "a", [0.9], [0.3], seed=3)
    rows = compare_runs([a], tmp_path / "cmp", failed=[{"run": "bad", "status": "failed", "error": "exit 2: boom",
                                                        "settings": {"seed": 4}}])
    assert [(r["run"], r["status"], r["seed"]) for r in rows] == [("a", "ok", 3), ("bad", "failed", 4)]
    assert "lr" not in rows[0]  # a field the failed cell does not set is no varied setting
    assert "exit 2: boom" in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.timeout(120)
def test_cli_refuses_in_one_line_and_writes_the_table(tmp_path):
    a = make_run(tmp_path, "a", [0.9], [0.3], seed=1)
    b = make_run(tmp_path, "b", [0.9], [0.3], classes=["dew", "hail"])
    refused = run_cli("hvdweather-compare", str(a), str(b), "--out", str(tmp_path / "x"), timeout=100)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "different classes" in refused.stderr
    missing = run_cli("hvdweather-compare", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), timeout=100)
    assert missing.returncode == 2 and "no config.json" in missing.stderr
    done = run_cli("hvdweather-compare", str(a), "--out", str(tmp_path / "y"), timeout=100)
    assert done.returncode == 0, done.stderr
    assert "compared 1 run(s)" in done.stdout and (tmp_path / "y" / "compare.csv").exists()


def test_a_diverged_run_does_not_flatten_the_others_and_columns_keep_one_precision(tmp_path):
    """Issue 25: one run's val_loss of 17,461 flattened every other curve (linear axis), the table printed
    17461.0 beside 0.5000 and `top_k 0` for the default. Proven to fail against the code before the fix."""
    from hvdweather.study.compare import plot_curves
    from hvdweather.study.runs import read_run

    classes = [f"c{i}" for i in range(6)]
    a = make_run(tmp_path, "a", [0.9, 0.5], [0.3, 0.6], classes=classes)
    b = make_run(tmp_path, "b", [17461.0, 250.0], [0.1, 0.2], classes=classes, top_k=5)
    figure = plot_curves([read_run(a), read_run(b)])
    assert figure.axes[0].get_yscale() == "log" and "log scale" in figure.axes[0].get_title()
    rows = compare_runs([a, b], tmp_path / "cmp", top_k=2)
    assert [r["top_k"] for r in rows] == [3, 5]  # 0 means 3 with >= 5 classes
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| 250.0000 |" in table and "| 0.5000 |" in table and "| 20.0 |" in table  # images_per_s: to 0.1
