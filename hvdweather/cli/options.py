"""What several commands share: the click context settings, --onednn, and defaults read from the config
and spec dataclasses (one home per default: the dataclass; the flag shows it)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from hvdweather.host import ONEDNN_MODES, apply_onednn

# -h as well as --help; 100 columns where the terminal has them (the flags' help is long).
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def field_default(spec: type, name: str) -> Any:
    """The default of dataclass `spec`'s field `name`, as its flag is typed: a tuple as a comma list, a
    whole float as an int (--help shows 900 as before, not 900.0; click's type=float makes it 900.0)."""
    value = next(field for field in dataclasses.fields(spec) if field.name == name).default
    if value is dataclasses.MISSING:
        raise TypeError(f"{spec.__name__}.{name} has no default")
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def onednn_option(expose: bool = False) -> Callable[[Callable], Callable]:
    """--onednn on|off|auto on every command that imports TensorFlow. Applied while the flags are parsed
    (eager, before any other option), so before TensorFlow is imported, in each rank of a launcher (each
    parses the same argv) and in every process the command starts (they inherit the environment).
    `expose`: the command gets the resolved mode (on, off, auto) to pass on or to label its outputs."""
    def apply(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
        return apply_onednn(value)["mode"]

    return click.option("--onednn", type=click.Choice(ONEDNN_MODES), default=None, is_eager=True,
                        expose_value=expose, callback=apply,
                        help="TensorFlow's oneDNN kernels: on (TF_ENABLE_ONEDNN_OPTS=1; TensorFlow leaves them "
                             "off on AVX2-only CPUs, and capped at AVX2 they trained ~1.9x faster), off (=0), "
                             "auto (unset: TensorFlow's choice for this CPU). [default: on, unless "
                             "TF_ENABLE_ONEDNN_OPTS is set]")
