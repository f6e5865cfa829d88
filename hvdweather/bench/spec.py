"""Flags -> a checked benchmark spec, the same way for every benchmark (pipeline, scaling, eda).

Each benchmark has a frozen dataclass with one field per flag. A comma-list flag's field is declared with
`list_field`, which names the flag and its allowed names; `spec_from_flags` parses those lists with the one
parser (`parse_list`), builds the spec and runs its `check()`, so a bad flag is a one-line ConfigError in
seconds, before any run. Flags that the benchmark passes on to `hvdweather-train` are checked by the
training config itself (`check_train_flags`), so the benchmark and training never disagree on what is valid.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Protocol, TypeVar

from hvdweather.config import TrainConfig
from hvdweather.errors import ConfigError


class BenchSpec(Protocol):
    """What every benchmark spec offers: checks that can fail in seconds."""

    def check(self) -> None: ...


SpecT = TypeVar("SpecT", bound=BenchSpec)


def list_field(default: tuple[Any, ...], flag: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field filled from a comma-list flag: `choices` names, or distinct positive integers."""
    return dataclasses.field(default=default, metadata={"flag": flag, "choices": choices})


def parse_list(text: str, flag: str, choices: tuple[str, ...] | None = None) -> tuple[Any, ...]:
    """'1,2,4' -> (1, 2, 4), or 'a,b' -> ('a', 'b') checked against `choices`; a ConfigError names the flag.

    Duplicates are refused: a worker count listed twice would run twice and give one table cell two values.
    """
    items = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if choices is not None:
        if not items or set(items) - set(choices) or len(set(items)) != len(items):
            raise ConfigError(f"{flag} must be a comma-separated subset of {','.join(choices)}, got {text!r}")
        return items
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        values = ()
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise ConfigError(f"{flag} must be distinct comma-separated positive integers, got {text!r}")
    return values


def spec_from_flags(spec_type: type[SpecT], **flags: Any) -> SpecT:
    """The CLI's flags (keyword = field name) -> a checked spec. None means 'not given': the default stays."""
    values = {name: value for name, value in flags.items() if value is not None}
    for spec_field in dataclasses.fields(spec_type):  # type: ignore[arg-type]
        flag = spec_field.metadata.get("flag")
        if flag and isinstance(values.get(spec_field.name), str):
            values[spec_field.name] = parse_list(values[spec_field.name], flag, spec_field.metadata["choices"])
    spec = spec_type(**values)
    spec.check()
    return spec


def check_train_flags(per_worker_batch_size: int, **values: Any) -> TrainConfig:
    """The flags a benchmark passes to hvdweather-train, checked by TrainConfig's own validation (which
    names the flag: --epochs, --image-size against the CNN's minimum, ...), before any process starts:
    a run refused at start-up would otherwise cost a launcher and a TensorFlow import per grid cell."""
    return TrainConfig(per_worker_batch_size=per_worker_batch_size, **values)


def config_per_worker_batch(config_json: dict[str, Any] | None) -> int | None:
    """The per-worker batch a run's config.json records, under the new key or the old `batch_size`
    (runs written before the rename, e.g. an old SLURM array still being collected); None if absent."""
    section = (config_json or {}).get("config") or config_json or {}
    for key in ("per_worker_batch_size", "batch_size"):
        if isinstance(section.get(key), int):
            return section[key]
    return None
