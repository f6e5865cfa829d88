"""hvdweather.bench.spec: what every benchmark uses to turn flags into a
checked spec. Fast, no subprocess and no TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from hvdweather.bench.spec import (
    check_train_flags,
    config_per_worker_batch,
    list_field,
    parse_list,
    spec_from_flags,
)
from hvdweather.config import ConfigError


def test_parse_list_reads_integers_and_names():
    assert parse_list("1, 2,4", "--workers") == (1, 2, 4)
    assert parse_list("b,a", "--parts", ("a", "b", "c")) == ("b", "a")  # the order given is kept


@pytest.mark.parametrize("text, choices", [("0,2", None), ("a", None), ("2,2", None), ("", None), (" , ", None),
                                           ("mpi,dask", ("sequential", "mpi")), ("mpi,mpi", ("mpi",)),
                                           ("", ("mpi",))])
def test_parse_list_rejects_bad_values_naming_the_flag(text, choices):
    with pytest.raises(ConfigError, match="^--flag "):
        parse_list(text, "--flag", choices)


@dataclass(frozen=True)
class ToySpec:
    data: str
    sizes: tuple[int, ...] = list_field((1,), "--sizes")
    kinds: tuple[str, ...] = list_field(("a",), "--kinds", ("a", "b"))
    count: int = 3

    def check(self) -> None:
        if self.count > 5:
            raise ConfigError(f"--count must be <= 5, got {self.count}")


def test_spec_from_flags_parses_lists_keeps_defaults_for_none_and_checks():
    spec = spec_from_flags(ToySpec, data="d", sizes="4,2", kinds="b", count=None)
    assert spec == ToySpec(data="d", sizes=(4, 2), kinds=("b",), count=3)
    assert spec_from_flags(ToySpec, data="d", sizes=(7,)).sizes == (7,)  # already a tuple: left alone
    with pytest.raises(ConfigError, match="--kinds"):
        spec_from_flags(ToySpec, data="d", kinds="a,c")
    with pytest.raises(ConfigError, match="--count"):
        spec_from_flags(ToySpec, data="d", count=6)


@pytest.mark.parametrize("values, flag", [({"per_worker_batch_size": 0}, "--batch-size"),
                                          ({"epochs": 0}, "--epochs"), ({"image_size": 64}, "--image-size"),
                                          ({"threads_per_worker": -1}, "--threads-per-worker"),
                                          ({"target_accuracy": 1.5}, "--target-accuracy")])
def test_train_flags_are_checked_by_the_training_config(values, flag):
    values = {"per_worker_batch_size": 8, **values}
    with pytest.raises(ConfigError, match=f"^{flag} "):
        check_train_flags(**values)


def test_train_flags_that_train_accepts_pass():
    cfg = check_train_flags(8, epochs=2, image_size=256)
    assert (cfg.per_worker_batch_size, cfg.epochs) == (8, 2)


def test_config_batch_under_the_old_and_new_key():
    assert config_per_worker_batch({"config": {"per_worker_batch_size": 16}}) == 16
    assert config_per_worker_batch({"config": {"batch_size": 32}}) == 32  # a run from before the rename
    assert config_per_worker_batch({"per_worker_batch_size": 4}) == 4  # a flat config.json
    assert config_per_worker_batch({"config": {}}) is None and config_per_worker_batch(None) is None
