"""Config: validation messages name the flag; files load; flags given on the command line win."""
from __future__ import annotations

import dataclasses
import json

import pytest

from hvdweather.config import ConfigError, TrainConfig, load_config_file, make_config


@pytest.mark.parametrize("field,value,flag", [
    ("epochs", 0, "--epochs"), ("batch_size", -4, "--batch-size"), ("lr", 0.0, "--lr"),
    ("image_size", 0, "--image-size"), ("val_split", 1.5, "--val-split"), ("strategy", "ddp", "--strategy"),
    ("threads_per_worker", -1, "--threads-per-worker"), ("replicas", 0, "--replicas"),
])
def test_bad_values_name_the_flag(field, value, flag):
    with pytest.raises(ConfigError, match=flag):
        TrainConfig(**{field: value})


def test_splits_must_leave_training_data():
    with pytest.raises(ConfigError, match="at least 10%"):
        TrainConfig(val_split=0.5, test_split=0.45)


def test_json_and_yaml_files_and_flags_win(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"epochs": 7, "batch_size": 8}))
    (tmp_path / "c.yaml").write_text("epochs: 9\nbatch-size: 4\n")
    cfg = make_config(load_config_file(tmp_path / "c.json"), {"epochs": None, "lr": 0.5})
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (7, 8, 0.5)
    cfg = make_config(load_config_file(tmp_path / "c.yaml"), {"epochs": 2})
    assert (cfg.epochs, cfg.batch_size) == (2, 4)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(tmp_path / "bad.json")
    (tmp_path / "extra.json").write_text('{"epochz": 3}')
    with pytest.raises(ConfigError, match="unknown field.*epochz"):
        load_config_file(tmp_path / "extra.json")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]
