"""One-process training end to end: every run-directory file, bad images skipped, resume."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MWD_SAMPLE, run_cli

METRIC_KEYS = {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s",
               "images_per_s", "world_size", "strategy"}
REPORT_FILES = ("classification_report.csv", "classification_report.txt", "confusion_matrix.csv",
                "confusion_matrix.png", "curves.png")


@pytest.fixture(scope="module")
def corrupt_data(tiny_data, tmp_path_factory):
    """The tiny set plus a zero-byte, a truncated, a cut-in-the-middle (see test_decode_tf) and a
    not-an-image file posing as images."""
    from test_decode_tf import cut_in_the_middle

    root = tmp_path_factory.mktemp("dirty") / "data"
    shutil.copytree(tiny_data, root)
    good = next((root / "rainbow").glob("*.jpg"))
    (root / "rainbow" / "zero.jpg").write_bytes(b"")
    (root / "lightning" / "half.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (root / "lightning" / "middle.jpg").write_bytes(cut_in_the_middle(good.read_bytes()))
    (root / "fogsmog" / "page.png").write_text("<html>404</html>")
    return root


@pytest.fixture(scope="module")
def trained(corrupt_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    result = run_cli("hvdweather-train", "--data", str(corrupt_data), "--out", str(run), "--epochs", "2",
                     "--batch-size", "4", "--verbose", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result


@pytest.mark.timeout(300)
def test_run_directory_is_complete(trained):
    run, result = trained
    for name in ("config.json", "split.csv", "skipped.csv", "metrics.jsonl", "best.keras", "last.keras",
                 "shards.csv", "ranks.json"):
        assert (run / name).is_file(), name
    for name in REPORT_FILES:
        assert (run / "report" / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(METRIC_KEYS <= set(r) for r in rows)
    assert rows[0]["world_size"] == 1 and rows[0]["strategy"] == "horovod"
    config = json.loads((run / "config.json").read_text())
    assert config["world"]["num_workers"] == 1 and config["plan"]["global_batch_size"] == 4
    assert config["onednn"] == "on"  # as TensorFlow ran it: the console script asked for it
    assert config["config"]["precision"] == "auto" and config["precision_used"] == "float32"
    phases = rows[-1]["phases"]  # where the epoch went (callbacks.PHASES), the checkpoint's write included
    assert phases["train_steps_s"] > 0 and phases["validation_s"] > 0 and phases["checkpoint_s"] > 0
    assert sum(v for k, v in phases.items() if k != "epoch_s") == pytest.approx(phases["epoch_s"], abs=1e-3)
    assert "global batch 4" in result.stdout


@pytest.mark.timeout(300)
def test_bad_images_are_skipped_and_reported(trained):
    run, result = trained
    with open(run / "skipped.csv") as handle:
        skipped = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(handle)}
    assert set(skipped) == {"zero.jpg", "half.jpg", "page.png", "middle.jpg"}
    assert "empty" in skipped["zero.jpg"] and "truncated" in skipped["half.jpg"].lower()
    assert "damaged JPEG, decoded only in part" in skipped["middle.jpg"]
    assert "skipped 4 unreadable file(s)" in result.stdout and "Corrupt JPEG data" not in result.stderr
    with open(run / "split.csv") as handle:
        split_files = {row["path"].rsplit("/", 1)[-1] for row in csv.DictReader(handle)}
    assert not split_files & set(skipped)
    assert len(split_files) == 24


@pytest.mark.timeout(300)
def test_report_counts_every_test_image(trained):
    run, _ = trained
    with open(run / "split.csv") as handle:
        n_test = sum(1 for row in csv.DictReader(handle) if row["subset"] == "test")
    with open(run / "report" / "classification_report.csv") as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    assert int(rows["accuracy"]["support"]) == n_test
    assert {"macro avg", "weighted avg", "fogsmog", "lightning", "rainbow"} <= set(rows)
    matrix = np.loadtxt(run / "report" / "confusion_matrix.csv", delimiter=",", skiprows=1,
                        usecols=range(1, 4))
    assert matrix.sum() == n_test


# In a fresh process where `import horovod` (and every horovod.* module) raises ImportError, as on a
# machine without it: what a user needs to use a checkpoint is importable and works.
WITHOUT_HOROVOD = """
import sys
sys.modules["horovod"] = None  # any import of horovod or a submodule now raises ImportError
try:
    import horovod.tensorflow.keras
    raise SystemExit("horovod is still importable")
except ImportError:
    pass
import numpy as np
import tensorflow as tf
import hvdweather.models.weather_cnn  # registers the model's own layers with Keras
model = tf.keras.models.load_model(sys.argv[1], compile=False)
probabilities = tf.nn.softmax(model(np.zeros((2, *model.input_shape[1:]), np.float32))).numpy()
assert model.output_shape == (None, 3) and np.allclose(probabilities.sum(1), 1), probabilities
assert [name for name, module in sys.modules.items() if name.split(".")[0] == "horovod"] == ["horovod"]
print("loaded without horovod")
"""


@pytest.mark.timeout(300)
def test_checkpoint_loads_without_horovod(trained):
    """Proven to fail with `import horovod.tensorflow.keras` added to hvdweather/models/weather_cnn.py."""
    run, _ = trained
    done = subprocess.run([sys.executable, "-c", WITHOUT_HOROVOD, str(run / "best.keras")], capture_output=True,
                          text=True, timeout=200)
    assert done.returncode == 0 and "loaded without horovod" in done.stdout, done.stderr[-3000:]


@pytest.mark.timeout(300)
def test_resume_continues_the_same_run(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    split_before = (copy / "split.csv").read_text()
    # --resume alone: data, batch size and the rest come from the run's own config.json
    result = run_cli("hvdweather-train", "--out", str(copy), "--epochs", "3", "--resume", "--verbose", "2",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (copy / "split.csv").read_text() == split_before
    assert "epoch 3/3: loss" in result.stdout and "epoch 1/3" not in result.stdout
    config = json.loads((copy / "config.json").read_text())["config"]
    assert config["per_worker_batch_size"] == 4 and config["epochs"] == 3  # not the default 32


@pytest.mark.timeout(300)
def test_a_new_run_never_mixes_with_an_old_one(trained, tmp_path):
    run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads((run / "config.json").read_text())["config"]["data"]
    result = run_cli("hvdweather-train", "--data", data, "--out", str(copy), "--epochs", "1", timeout=120)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr and "--overwrite" in result.stderr
    assert len((copy / "metrics.jsonl").read_text().splitlines()) == 2  # untouched
    (copy / "notes.txt").write_text("mine")
    result = run_cli("hvdweather-train", "--data", data, "--out", str(copy), "--epochs", "1", "--batch-size", "4",
                     "--overwrite", "--verbose", "0", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert (copy / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_cache_dir_is_checked_before_training(tmp_path, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("hvdweather-train", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                     "--cache-dir", str(blocker / "cache"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("hvdweather-train: error: --cache-dir")


def test_cache_file_names_follow_the_data():
    from hvdweather.config import TrainConfig
    from hvdweather.train.inputs import cache_file

    cfg = TrainConfig(data="/d", cache_dir="/c")
    a = cache_file(cfg, ("/d/a.jpg", "/d/b.jpg"), 0)
    assert a.startswith("/c/train-256px-rank0-")
    assert cache_file(cfg, ("/d/a.jpg", "/d/b.jpg"), 0) == a
    assert cache_file(cfg, ("/d/a.jpg", "/d/c.jpg"), 0) != a
    assert cache_file(cfg, ("/d/a.jpg", "/d/b.jpg"), 1) != a


@pytest.mark.timeout(400)
def test_training_with_a_file_cache(trained, corrupt_data, tmp_path):
    """Epoch 1 fills --cache-dir; then every training image is emptied, so epoch 2 (a resume) can only
    read the cache; the run still ends as `trained` (the same flags, no cache), bit for bit. Proven to
    fail with the cache directory removed before the resume: the emptied files were decoded again (as
    black images, with a warning each) and epoch 2's losses differed."""
    data, run, cache = tmp_path / "data", tmp_path / "run", tmp_path / "cache"
    shutil.copytree(corrupt_data, data)
    first = run_cli("hvdweather-train", "--data", str(data), "--out", str(run), "--cache-dir", str(cache),
                    "--epochs", "1", "--batch-size", "4", "--verbose", "2", timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert [p.name[:len("train-256px-rank0-")] for p in cache.iterdir()][:1] == ["train-256px-rank0-"]
    with open(run / "split.csv") as handle:
        train_files = [row["path"] for row in csv.DictReader(handle) if row["subset"] == "train"]
    for path in train_files:  # validation and test images are read again on the resume: kept
        Path(path).write_bytes(b"")
    second = run_cli("hvdweather-train", "--out", str(run), "--resume", "--epochs", "2", timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "using a black image" not in second.stderr  # no training image was decoded again
    reference, _ = trained
    assert _digests(run) == _digests(reference)
    assert _rows(run, ("loss", "val_loss", "accuracy")) == _rows(reference, ("loss", "val_loss", "accuracy"))


def _digests(run: Path) -> list[str]:
    return [r["weights_sha256"] for r in json.loads((run / "ranks.json").read_text())]


def _rows(run: Path, keys: tuple[str, ...]) -> list[tuple[float, ...]]:
    return [tuple(row[k] for k in keys) for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.timeout(300)
def test_report_holds_best_and_last_checkpoint_test_metrics(trained, tmp_path):
    """report/test_metrics.json: a best and a last section, each agreeing with its own report files; the
    last section is what hvdweather-evaluate --checkpoint last computes from last.keras."""
    run, result = trained
    sections = json.loads((run / "report" / "test_metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sections["last"]["epoch"] == 2
    assert sections["best"]["epoch"] == min(rows, key=lambda r: r["val_loss"])["epoch"]
    for name, folder in (("best", run / "report"), ("last", run / "report" / "last")):
        with open(folder / "classification_report.csv") as handle:
            report = {row["class"]: row for row in csv.DictReader(handle)}
        section = sections[name]
        assert section["test_accuracy"] == pytest.approx(float(report["accuracy"]["f1"]), abs=1e-4)
        assert section["macro_f1"] == pytest.approx(float(report["macro avg"]["f1"]), abs=1e-4)
        assert section["top_k_accuracy"]["1"] == pytest.approx(section["test_accuracy"])
        assert section["top_k_accuracy"]["3"] == 1.0  # 3 classes: the true one is always among the top 3
        assert section["test_images"] == int(report["accuracy"]["support"])
    assert "last epoch 2:" in result.stdout
    evaluated = run_cli("hvdweather-evaluate", str(run), "--checkpoint", "last", "--out", str(tmp_path / "e"),
                        timeout=200)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert ((tmp_path / "e" / "classification_report.csv").read_text()
            == (run / "report" / "last" / "classification_report.csv").read_text())


@pytest.mark.timeout(300)
def test_real_photos_train_with_duplicates_kept_in_one_subset(tmp_path):
    """The committed MWD sample end to end: duplicates.csv lists both byte-identical pairs, each
    inside one subset, the start line counts them, and the GIF named .jpg is named and trained on.
    --no-group-duplicates gives the naive split and an empty duplicates.csv."""
    run = tmp_path / "run"
    result = run_cli("hvdweather-train", "--data", str(MWD_SAMPLE), "--out", str(run), "--epochs", "1",
                     "--batch-size", "4", "--verbose", "0", "--seed", "3", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run / "duplicates.csv") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, set] = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add(row["subset"])
    assert len(rows) == 4 and len(groups) == 2 and all(len(s) == 1 for s in groups.values())
    with open(run / "split.csv") as handle:
        subset_of = {row["path"].rsplit("/", 1)[-1]: row["subset"] for row in csv.DictReader(handle)}
    assert subset_of["cloudy102.jpg"] == subset_of["cloudy146.jpg"]
    assert subset_of["rain142.jpg"] == subset_of["rain24.jpeg"] and len(subset_of) == 44
    assert "2 duplicate group(s) (4 files) each kept in one subset" in result.stdout
    assert "rain141.jpg is a GIF" in result.stdout
    naive = run_cli("hvdweather-train", "--data", str(MWD_SAMPLE), "--out", str(tmp_path / "naive"),
                    "--epochs", "1", "--batch-size", "4", "--verbose", "0", "--no-group-duplicates", timeout=300)
    assert naive.returncode == 0, naive.stderr[-3000:]
    assert (tmp_path / "naive" / "duplicates.csv").read_text().strip() == "group,kind,class_name,subset,path"
    assert "duplicate group" not in naive.stdout


@pytest.mark.timeout(400)
def test_early_stopping_says_it_stopped_and_a_resume_trains_nothing(tiny_data, tmp_path):
    """--early-stopping 1 at an LR far too high for the tiny set (0.5: val_loss jumps between ~10 and ~70
    from epoch to epoch): the run stops at the first epoch whose val_loss is no better than the best before
    it, well before --epochs 8, with one line saying so, when and why; `--resume --epochs 10` then says it
    stopped early and exits 0 having trained nothing (it used to print "resuming after epoch N" and train
    nothing). The stop epoch is read from metrics.jsonl, not assumed: the trajectory moves with the
    shuffle order and the CPU's arithmetic (epoch 2 was worse than epoch 1 until the order changed; now
    epoch 4 is). Proven to fail with the old EarlyStop (no line) and the old resume."""
    run = tmp_path / "run"
    result = run_cli("hvdweather-train", "--data", str(tiny_data), "--out", str(run), "--epochs", "8",
                     "--batch-size", "2", "--image-size", "253", "--lr", "0.5", "--early-stopping", "1",
                     "--verbose", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    stopped = len(losses)
    # patience 1: every epoch before the last improved on the one before it, the last did not
    assert 2 <= stopped < 8 and all(b < a for a, b in zip(losses[:-2], losses[1:-1])), losses
    assert losses[-1] >= losses[-2], losses
    lines = result.stdout.splitlines()
    stop = [line for line in lines if line.startswith("early stopping")]
    assert stop == [f"early stopping (--early-stopping 1): val_loss has not improved on epoch {stopped - 1}'s "
                    f"{losses[-2]:.4f} for 1 epoch(s); stopped after epoch {stopped} of --epochs 8"]
    assert lines.index(stop[0]) == next(i for i, x in enumerate(lines) if x.startswith(f"epoch {stopped}/8")) + 1
    before = (run / "metrics.jsonl").read_text(), (run / "resume_state.pkl").stat().st_mtime_ns
    again = run_cli("hvdweather-train", "--out", str(run), "--resume", "--epochs", "10", timeout=200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{run} stopped early after epoch {stopped} (--early-stopping 1: no better val_loss for 1 epoch(s)); " \
           "nothing to resume" in again.stdout
    assert "resuming after" not in again.stdout and f"epoch {stopped + 1}/" not in again.stdout
    assert ((run / "metrics.jsonl").read_text(), (run / "resume_state.pkl").stat().st_mtime_ns) == before
