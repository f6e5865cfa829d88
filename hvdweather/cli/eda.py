"""hvdweather-eda and hvdweather-prepare: the two commands that read every image of a class-folder set once,
spread over CPU processes by an executor (hvdweather/eda/executors.py).

    hvdweather-eda DATA --out runs/eda --executor multiprocessing --processes 4
    mpirun -np 4 hvdweather-prepare DATA --out prepared --executor mpi
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import click

from hvdweather.cli.options import CONTEXT, field_default, onednn_option
from hvdweather.config import TrainConfig
from hvdweather.eda.executors import EXECUTORS
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE

_PROCESSES_HELP = ("multiprocessing: pool processes [default: all cores]; mpi: ranks come from mpirun -np "
                   "(leave this out); spark: local[N] threads, or the chunking for --spark-master [default: all "
                   "cores, or the cluster's parallelism]; sequential: 1")


def _executor_options(prog: str) -> Callable[[Callable], Callable]:
    """--executor (how the EDA / prepare work is spread over processes), --processes and --spark-master."""
    def decorate(command: Callable) -> Callable:
        command = click.option("--spark-master", default=None, metavar="URL",
                               help="--executor spark only: Spark master URL, e.g. spark://head:7077 or "
                                    "local[4]. [default: local[--processes]]")(command)
        command = click.option("--processes", type=click.IntRange(min=1), default=None,
                               help=_PROCESSES_HELP)(command)
        return click.option("--executor", type=click.Choice(EXECUTORS), default="sequential", show_default=True,
                            help=f"How the images are spread over CPU processes. mpi: launch as `mpirun -np N "
                                 f"{prog} DATA --out DIR --executor mpi`.")(command)
    return decorate


def _executor(flags: dict):
    """The executor the --executor, --processes and --spark-master flags ask for (taken out of `flags`)."""
    from hvdweather.eda.executors import make_executor

    return make_executor(flags.pop("executor"), flags.pop("processes"), flags.pop("spark_master"))


def _progress(flags: dict) -> bool:
    progress = flags.pop("progress")
    return sys.stderr.isatty() if progress is None else progress


@click.command(context_settings=CONTEXT)
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for histograms.npz/.csv, summary.json, class_counts.csv, skipped.csv, PNGs.")
@_executor_options("hvdweather-eda")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write the PNG plots.")
@click.option("--progress/--no-progress", default=None, help="Progress line on stderr. "
              "[default: when stderr is a terminal]")
@click.option("--duplicates/--no-duplicates", default=True, show_default=True,
              help="Hash every file (SHA-256, pHash): duplicates.csv, near_duplicates.csv/.png.")
def eda_command(**flags) -> None:
    """Per-class RGB histograms, counts, sizes, formats and mean/std of the class folders in DATA, and
    its exact and near duplicates."""
    from hvdweather.eda.analyse import run_eda  # deferred: --help answers without loading the EDA's modules

    executor, progress = _executor(flags), _progress(flags)
    run_eda(flags["data"], flags["out"], executor, flags["plots"], progress, flags["duplicates"])


@click.command(context_settings=CONTEXT)
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Prepared directory: TFRecord shards, prepared.json, images.csv, classes.txt, skipped.csv.")
@click.option("--image-size", type=int, default=field_default(TrainConfig, "image_size"), show_default=True,
              help="Images are stored resized to this square; train with the same --image-size (each "
                   "model's smallest size applies: the weather CNN's is "
                   f"{WEATHER_CNN_MIN_IMAGE_SIZE}, the zoo's 32-64).")
@_executor_options("hvdweather-prepare")
@click.option("--images-per-shard", type=click.IntRange(min=1), default=256, show_default=True,
              help="Target shard size; the shard count is rounded up to a multiple of the processes.")
@click.option("--progress/--no-progress", default=None, help="Progress line on stderr. "
              "[default: when stderr is a terminal]")
@onednn_option()
def prepare_command(**flags) -> None:
    """Decode, convert to RGB and resize every image of DATA once, into sharded TFRecords."""
    from hvdweather.data.prepare import run_prepare  # deferred: it imports TensorFlow; --help stays fast

    executor, progress = _executor(flags), _progress(flags)
    run_prepare(flags["data"], flags["out"], flags["image_size"], executor, flags["images_per_shard"], progress)
