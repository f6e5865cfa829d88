"""Config values from outside the code: --config files (JSON or YAML), the merge of defaults, file and
flags, and the config a --resume continues with. Every key is checked against TrainConfig's fields."""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from hvdweather.config.flags import FIELD_OF_FLAG, LAUNCH_FIELDS, RESUMABLE, flag_name, resumable_flags
from hvdweather.config.train_config import TrainConfig, type_problem
from hvdweather.errors import ConfigError

_KINDS = {f.name: f.type for f in fields(TrainConfig)}  # field -> "int", "float", "bool" or "str"


def _field_names(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Keys as field names: dashes become underscores, and a flag's name maps to its field."""
    known = {f.name for f in fields(TrainConfig)}
    renamed = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        renamed[FIELD_OF_FLAG.get(name, name)] = value
    unknown = sorted(set(renamed) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}")
    return renamed


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file of TrainConfig fields (or flag names); unknown keys and wrong types are errors."""
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
        mark = getattr(exc, "problem_mark", None)  # YAML: where; JSON: lineno
        line = mark.line + 1 if mark is not None else getattr(exc, "lineno", None)
        what = getattr(exc, "problem", None) or getattr(exc, "msg", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--config {path}" + (f" line {line}" if line else "") + f": cannot parse ({what})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of field: value")
    return config_values(values, f"--config {path}")


def _numeric(name: str, value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads 1e-3 as a string (it wants 1.0e-3): a number field takes numeric strings."""
    kind = _KINDS.get(name)
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def config_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """A mapping of TrainConfig fields or flag names (a --config file, a sweep's base or grid cell) as
    field names; an unknown key or a value of the wrong type is a ConfigError starting with `source`."""
    values = {name: _numeric(name, value) for name, value in _field_names(values, source).items()}
    for name, value in values.items():
        problem = type_problem(name, _KINDS[name], value)
        if problem:
            raise ConfigError(f"{source}: {name} must be {problem}")
    return values


def make_config(file_values: dict[str, Any], flag_values: dict[str, Any]) -> TrainConfig:
    """Defaults < config file < flags given on the command line (None means 'not given')."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    try:
        return TrainConfig(**merged)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def resume_config(run_config: dict[str, Any], given: TrainConfig, given_names: set[str]) -> TrainConfig:
    """The config of a resumed run: the run's own config.json, with only RESUMABLE fields and --data taken
    from what was given now (`given_names`: fields set by a flag or a config file). --data may name
    another folder (the data set moved); training then checks that it holds the split's files. Any other
    difference is an error naming it, because it would change what the continued run computes."""
    source = f"--resume: {Path(given.out) / 'config.json'}"
    base = _field_names(run_config, source)
    for name in sorted(given_names - RESUMABLE - {"data"}):  # --data: the data set moved; its files are checked
        ours, theirs = getattr(given, name), base.get(name, getattr(TrainConfig(), name))
        if ours != theirs:
            raise ConfigError(f"--resume: {flag_name(name)} {ours} differs from the run's {theirs} "
                              f"({Path(given.out) / 'config.json'}); only {resumable_flags()} may change")
    # resume, out and overwrite describe this launch, not the run: a run started with --overwrite resumes
    keep = {name: getattr(given, name) for name in RESUMABLE | {"data"}
            if name in given_names or name in LAUNCH_FIELDS}
    return TrainConfig(**(base | keep))
