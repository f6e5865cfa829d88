"""The one training configuration: a frozen dataclass that CLI flags and config files map onto.

Runtime facts (rank, world size) never live here; see `hvdweather.distributed.Runtime`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hvdweather.errors import ConfigError

__all__ = ["ConfigError", "TrainConfig", "load_config_file", "make_config", "validate"]


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # class-folder data set (WEAPD/ImageFolder layout) or a prepared TFRecord directory
    out: str = "runs/latest"  # run directory: config, split, metrics, checkpoints, report
    strategy: str = "horovod"  # horovod (one process per worker) or mirrored (one process, N replicas)
    replicas: int = 1  # mirrored only: replicas in the one process (CPU is split into logical devices)
    epochs: int = 10  # passes over the training shard
    batch_size: int = 32  # PER WORKER (the seeds' meaning); global batch = batch_size x workers
    lr: float = 0.01  # base learning rate for one worker; scaled by the number of workers
    optimizer: str = "sgd"  # sgd (momentum 0.9) or adam
    momentum: float = 0.9  # sgd momentum
    warmup_epochs: float = 1.0  # epochs to ramp the LR from base to base x workers (0 disables)
    seed: int = 42  # seeds split, shuffle, augmentation and weight initialisation
    image_size: int = 256  # images are resized to image_size x image_size
    val_split: float = 0.15  # fraction of each class held out for validation
    test_split: float = 0.15  # fraction of each class held out for the final test report
    augment: bool = False  # random flips/brightness/contrast on training images
    cache_dir: str = ""  # cache decoded uint8 images in files under this directory ("" = in memory)
    threads_per_worker: int = 0  # TF intra-op threads per worker (0 = cores / workers on this node)
    resume: bool = False  # continue from last.keras in --out with the same split
    target_accuracy: float = 0.0  # record the first epoch reaching this val accuracy (0 = off)
    # Horovod timeline JSON path (profiling; horovod only). Not "--timeline": horovodrun would take that
    # flag for its own --timeline-filename (argparse prefix matching) even after the command.
    horovod_timeline: str = ""
    verbose: int = 1  # Keras progress: 0 silent, 1 bar, 2 one line per epoch (rank 0 only)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_POSITIVE_INT = ("epochs", "batch_size", "image_size", "replicas")
_NON_NEGATIVE = ("threads_per_worker", "warmup_epochs", "target_accuracy", "verbose")


def validate(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the flag for any value that cannot work."""
    for name in _POSITIVE_INT:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"--{_flag(name)} must be a positive integer, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(cfg, name)}")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be a positive number, got {cfg.lr}")
    for name in ("val_split", "test_split"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"--{_flag(name)} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.val_split + cfg.test_split >= 0.9:
        raise ConfigError("--val-split + --test-split must leave at least 10% of images for training")
    if cfg.strategy not in ("horovod", "mirrored"):
        raise ConfigError(f"--strategy must be horovod or mirrored, got {cfg.strategy!r}")
    if cfg.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"--optimizer must be sgd or adam, got {cfg.optimizer!r}")
    if cfg.target_accuracy > 1:
        raise ConfigError(f"--target-accuracy is a fraction in [0, 1], got {cfg.target_accuracy}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file of TrainConfig fields; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as exc:  # both parsers raise their own error types
        raise ConfigError(f"--config {path}: cannot parse ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(k.replace("-", "_") for k in values) - known)
    if unknown:
        raise ConfigError(f"--config {path}: unknown field(s) {', '.join(unknown)}")
    return {k.replace("-", "_"): v for k, v in values.items()}


def make_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < flags given on the command line (None means 'not given')."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
