"""The PyTorch DDP reference: the reference project's parameter count, the one-line message without
PyTorch, rank shards, and one tiny 2-process run (rows of metrics.jsonl, identical weights on both ranks)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hvdweather.bench.torch_ddp import MISSING_TORCH, load_shard
from hvdweather.data.discovery import discover
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE

REFERENCE_PARAMETERS = 108_517  # the reference PyTorch weather project's CNN, conv biases included


def test_parameter_count_is_the_references():
    import torch  # noqa: F401  (make test always installs it: a broken install fails here)

    from hvdweather.bench.torch_ddp import build_torch_cnn

    model = build_torch_cnn(11, 256)
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETERS


def test_forward_at_the_minimum_size_gives_logits():
    import torch  # make test always installs it: a broken install must fail, not skip

    from hvdweather.bench.torch_ddp import build_torch_cnn

    size = WEATHER_CNN_MIN_IMAGE_SIZE
    assert build_torch_cnn(4, size).eval()(torch.rand(2, 3, size, size)).shape == (2, 4)


def test_without_torch_it_exits_2_with_one_line(tmp_path, tiny_data):
    code = ("import sys; sys.modules['torch'] = None; from hvdweather.bench.torch_ddp import main; "
            f"main(['--data', {str(tiny_data)!r}, '--out', {str(tmp_path / 'run')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == MISSING_TORCH
    assert not (tmp_path / "run").exists()


def test_rank_shards_are_disjoint_and_cover_the_files(tiny_data):
    import torch  # noqa: F401  (make test always installs it: a broken install fails here)
    catalog = discover(tiny_data)
    shards = [load_shard(catalog.paths, catalog.labels, 8, rank, 2) for rank in (0, 1)]
    assert sum(len(labels) for _, labels in shards) == len(catalog.paths)
    images, labels = shards[1]
    assert images.shape == (len(catalog.paths) // 2, 3, 8, 8) and str(images.dtype) == "torch.uint8"
    assert labels.tolist() == list(catalog.labels[1::2])


@pytest.mark.multiprocess
def test_two_process_run_writes_rows_and_ends_with_identical_weights(tmp_path):
    import torch  # noqa: F401  (make test always installs it: a broken install fails here)

    from hvdweather.data.synthetic import make_synthetic_dataset

    data, run = tmp_path / "data", tmp_path / "run"
    make_synthetic_dataset(data, images_per_class=6, seed=0)  # 66 images, 11 classes
    command = [sys.executable, "-m", "hvdweather.bench.torch_ddp", "--data", str(data), "--out", str(run),
               "--workers", "2", "--batch-size", "4", "--epochs", "2", "--image-size", "253", "--seed", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    steps = config["steps_per_epoch"]  # 44 train images // 2 ranks // 4 = 5
    assert steps == (config["subset_sizes"]["train"] // 2) // 4 > 0
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["strategy"] == "torch-ddp" and row["world_size"] == row["processes"] == 2
        assert row["global_batch_size"] == 8
        assert row["images_per_s"] == pytest.approx(steps * 8 / row["train_time_s"])
        assert 0 < row["train_time_s"] <= row["epoch_time_s"]
        assert 0.0 <= row["val_accuracy"] <= 1.0 and row["loss"] > 0
    assert config["versions"]["torch"] and config["args"]["workers"] == 2
    ranks = json.loads((run / "ranks.json").read_text())
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
