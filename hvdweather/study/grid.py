"""A study's grid file -> its cells, TensorFlow-free, checked by TrainConfig itself.

    base:                      # a config: the same fields (or flag names) as hvdweather-train --config
      data: data/synthetic
      epochs: 6
    axes:                      # field: values; the grid is their product
      lr: [0.01, 0.03]
      optimizer: [sgd, adam]
    variants:                  # optional: named configs (over base) added to the grid
      big-batch: {batch-size: 64}

Fields are mapped and type-checked by `config.config_values` (so a field added to TrainConfig is a valid
axis at once); each cell's whole config is then built by `config.make_config`. An unknown field or a
wrongly typed value refuses the grid; a value TrainConfig refuses (lr -1) makes that cell a failed row.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdweather.config import config_values, flag_name, make_config
from hvdweather.errors import ConfigError

SWEEP_OWNS = ("out", "resume", "overwrite")  # the sweep sets these per cell


@dataclass(frozen=True)
class Cell:
    """One training run of the study."""

    name: str  # its run directory under STUDY_DIR
    settings: dict[str, Any]  # what it sets over base: its axes values, or its variant
    values: dict[str, Any]  # base | settings: what its --config file holds
    problem: str  # why TrainConfig refuses it ('' when it is valid)


def read_grid(path: str | Path) -> dict[str, Any]:
    """The grid file's mapping: base, axes and/or variants, nothing else."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"GRID {path}: file not found")
    try:
        grid = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"GRID {path}: cannot parse ({exc})") from None
    if not isinstance(grid, dict) or set(grid) - {"base", "axes", "variants"}:
        raise ConfigError(f"GRID {path}: expected a mapping with base:, axes: and/or variants:, got "
                          f"{sorted(grid) if isinstance(grid, dict) else type(grid).__name__}")
    if not grid.get("axes") and not grid.get("variants"):
        raise ConfigError(f"GRID {path}: no axes: and no variants:, so no cells; add e.g. axes: {{lr: [0.01, 0.1]}}")
    return grid


def _mapping(value: Any, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected a mapping of field: value, got {value!r}")
    values = config_values(value, source)
    owned = sorted(set(values) & set(SWEEP_OWNS))
    if owned:
        raise ConfigError(f"{source}: {', '.join(owned)} is set by the sweep (each cell runs in STUDY_DIR/<name>)")
    return values


def _axes(value: Any, source: str) -> dict[str, list[Any]]:
    """Axis field -> its values, each value type-checked as that field's."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: expected field: [values], got {value!r}")
    axes = {}
    for key, values in value.items():
        if not isinstance(values, list) or not values or len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{source}: {key} must be a non-empty list of distinct values, got {values!r}")
        checked = [_mapping({key: v}, source) for v in values]
        axes[next(iter(checked[0]))] = [next(iter(c.values())) for c in checked]
    return axes


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value).replace("/", "-").replace(" ", "")


def cell_name(settings: dict[str, Any]) -> str:
    """lr-0.01_optimizer-adam: each setting as field-value (flag spelling), joined by '_'."""
    return "_".join(f"{flag_name(key).lstrip('-')}-{_text(value)}" for key, value in settings.items())


def _cell(name: str, settings: dict[str, Any], base: dict[str, Any]) -> Cell:
    values = base | settings
    if values.get("data"):  # the cells run from this directory: an absolute path reads the same in every log
        values["data"] = os.path.abspath(values["data"])
    try:
        make_config(values, {})
        problem = "" if values.get("data") else "no data: set base: data: DIR (a folder of class folders)"
    except ConfigError as exc:
        problem = str(exc)
    return Cell(name, settings, values, problem)


def grid_cells(path: str | Path) -> list[Cell]:
    """Every cell of the grid: the product of the axes (first axis slowest), then the variants."""
    grid = read_grid(path)
    base = _mapping(grid.get("base"), f"GRID {path}: base")
    axes = _axes(grid.get("axes"), f"GRID {path}: axes")
    variants = grid.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError(f"GRID {path}: variants: expected name: {{field: value}}, got {variants!r}")
    cells = [_cell(cell_name(dict(zip(axes, combo))), dict(zip(axes, combo)), base)
             for combo in itertools.product(*axes.values())] if axes else []
    cells += [_cell(str(name), _mapping(v, f"GRID {path}: variants: {name}"), base) for name, v in variants.items()]
    names = [c.name for c in cells]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"GRID {path}: two cells named {repeated[0]}; rename the variant")
    return cells
