"""hvdweather-train's input checks that need no TensorFlow, for the batch jobs, before any rank starts:

    python jobs/lib/check_train.py WORKERS HVDWEATHER-TRAIN-ARG...

The arguments are read by hvdweather-train's own options and config rules (`--config` files included),
the data set by the package's own reader, and the split is the one training makes (same fractions, same
seed). Prints "IMAGES CLASSES TRAIN_IMAGES", or exits 2 with one line: training's own error for a bad
flag or data set, or the batch check below.

The batch check is training's (`hvdweather.data.sharding.steps_per_epoch`, which `make_plan` uses):
every one of WORKERS workers must get a whole per-worker batch from its shard of the TRAINING images,
so WORKERS x batch <= TRAIN_IMAGES (the same holds for one mirrored process with WORKERS replicas).
The job counts the training images before any file is decoded, so duplicate groups and unreadable
files, which training removes after its scan, can make training refuse a batch this check let
through; never the other way round.
"""
from __future__ import annotations

import sys

import click

from hvdweather.cli import train_command, train_config
from hvdweather.data.sharding import steps_per_epoch
from hvdweather.data.source import open_source
from hvdweather.data.split import stratified_split
from hvdweather.errors import INPUT_ERRORS


class BatchError(Exception):
    """WORKERS x per-worker batch does not fit the training images: the one-line message says why."""


def training_images(workers: int, args: list[str]) -> tuple[int, int, int]:
    """(images, classes, training images) of the run `hvdweather-train ARGS` would start; raises
    training's input errors, click's for a bad flag, and BatchError when WORKERS x batch cannot fit."""
    params = train_command.make_context("hvdweather-train", list(args), resilient_parsing=False).params
    config_file = params.pop("config_file")
    if params.pop("no_augment"):
        params["augment"] = "none"
    params["resume"] = None  # the job adds --resume itself, to a run directory it names later
    cfg = train_config(config_file, params)
    catalog = open_source(cfg.data, cfg.image_size).catalog
    n_train = len(stratified_split(catalog, cfg.val_split, cfg.test_split, cfg.seed).paths["train"])
    batch, passes = cfg.per_worker_batch_size, cfg.backward_passes_per_step
    steps = steps_per_epoch(n_train, workers, batch)  # one process per worker; the same count mirrored
    if steps < 1:
        raise BatchError(f"impossible task count: {workers} workers x per-worker batch {batch} = {workers * batch} "
                         f"images per step, but --data {cfg.data} leaves only {n_train} training images "
                         f"({len(catalog.paths)} images less --val-split {cfg.val_split} and --test-split "
                         f"{cfg.test_split}); use fewer tasks or a smaller --batch-size")
    if steps < passes:  # training's words (make_plan)
        raise BatchError(f"--backward-passes-per-step {passes}: an epoch has only {steps} batch(es) per worker")
    return len(catalog.paths), len(catalog.class_names), n_train


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: check_train.py WORKERS HVDWEATHER-TRAIN-ARG...", file=sys.stderr)
        return 2
    try:
        images, classes, n_train = training_images(int(argv[0]), argv[1:])
    except (*INPUT_ERRORS, BatchError) as exc:
        print(exc, file=sys.stderr)
        return 2
    except click.ClickException as exc:  # an unknown flag or a bad value, in click's words
        print(exc.format_message(), file=sys.stderr)
        return 2
    print(images, classes, n_train)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
