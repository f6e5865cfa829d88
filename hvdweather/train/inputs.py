"""What a run trains on: the scan (every file decode-checked and hashed once, split across ranks), the
split (duplicates kept in one subset; split.csv reused on --resume), the input normalisation and the
tf.data datasets of this rank's shard.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow as tf

from hvdweather.config import TrainConfig
from hvdweather.data.discovery import Catalog
from hvdweather.data.fingerprint import Duplicates, find_duplicates
from hvdweather.data.normalization import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Moments,
    channel_sums,
    moments_from_eda,
    moments_from_sums,
)
from hvdweather.data.pipeline import PipelineOptions, eval_pipeline, train_pipeline
from hvdweather.data.sharding import shard_of, shard_size, start_element
from hvdweather.data.split import (
    DUPLICATES_HEADER,
    Split,
    duplicate_rows,
    read_split,
    stratified_split,
    write_split,
)
from hvdweather.runfiles import read_json, split_root
from hvdweather.train.context import RunContext
from hvdweather.train.plan import Plan


def scan(run: RunContext) -> tuple[Catalog, Duplicates]:
    """Decode-check and hash every file once (each process takes 1/shard_count); report and drop the
    bad ones; find the duplicates the split must keep together."""
    cfg, backend, writer = run.cfg, run.backend, run.writer
    catalog = run.source.catalog
    mine = shard_of(catalog.paths, backend.shard_count, backend.shard_index)
    parts = backend.allgather_object(run.source.inspect(mine, run.runtime.threads, cfg.group_near_duplicates))
    facts = {path: fact for part in parts for path, fact in part.items()}
    bad = {path: fact.reason for path, fact in facts.items() if fact.reason}
    rows = run.source.skipped_rows() + sorted([p, r] for p, r in bad.items())
    writer.write_csv("skipped.csv", ["path", "reason"], rows)
    if rows:
        writer.log(f"skipped {len(rows)} unreadable file(s); see {writer.path('skipped.csv')}")
    duplicates = find_duplicates(facts, cfg.group_duplicates, cfg.group_near_duplicates)
    if duplicates.wrong_extension:
        path, real = duplicates.wrong_extension[0]
        writer.log(f"{len(duplicates.wrong_extension)} file(s) hold another format than their extension says "
                   f"(e.g. {path} is a {real}); decoded by their content")
    return catalog.without(set(bad)), duplicates


def make_split(run: RunContext) -> Split:
    """Reuse split.csv on --resume, else scan, split (duplicates kept in one subset) and write
    split.csv and duplicates.csv."""
    cfg, writer = run.cfg, run.writer
    split_file = writer.path("split.csv")
    if cfg.resume and split_file.exists():  # every rank reads it, as it reads the data: a shared folder
        record = read_json(writer.path("config.json")) or {}
        return read_split(split_file, run.source.catalog.class_names, split_root(record), cfg.data)
    catalog, duplicates = scan(run)
    split = stratified_split(catalog, cfg.val_split, cfg.test_split, cfg.seed, duplicates.groups)
    writer.write_with("split.csv", lambda path: write_split(split, path))
    writer.write_csv("duplicates.csv", DUPLICATES_HEADER, duplicate_rows(split, duplicates.groups, duplicates.exact))
    return split


def fixed_normalization(cfg: TrainConfig) -> Moments | None:
    """--normalize without a pass over the images: none, ImageNet's constants or --stats."""
    if cfg.normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return moments_from_eda(cfg.stats) if cfg.normalize == "dataset" else None


def input_normalization(run: RunContext, split: Split) -> Moments | None:
    """--normalize: None, ImageNet's constants, or the training split's mean/std (a resumed run reads
    its own from config.json: the same floats, no second pass over the images)."""
    cfg, backend = run.cfg, run.backend
    if cfg.normalize == "dataset" and cfg.resume:
        record = backend.broadcast_object(run.writer.read_json("config.json")) or {}
        if record.get("normalization"):
            return tuple(map(tuple, record["normalization"]))
    if cfg.normalize != "dataset" or cfg.stats:
        return fixed_normalization(cfg)
    mine = run.source.decoded(split.paths["train"], split.labels["train"], cfg.image_size, backend.shard_count,
                              backend.shard_index)
    return moments_from_sums(backend.allgather_object(channel_sums(mine)))  # Horovod: every rank's sums


def cache_file(cfg: TrainConfig, train_paths: tuple[str, ...], shard_index: int) -> str:
    """A --cache-dir file name that changes with the files, size and shard: tf.data silently reuses a
    complete cache file, so a name that ignored the data would train on stale images."""
    digest = hashlib.sha256("\n".join([cfg.data, str(cfg.image_size), *train_paths]).encode()).hexdigest()
    return str(Path(cfg.cache_dir) / f"train-{cfg.image_size}px-rank{shard_index}-{digest[:12]}")


def make_datasets(run: RunContext, split: Split, plan: Plan, epochs_done: int = 0) -> dict[str, tf.data.Dataset]:
    """Train (infinite; a resumed run starts where the uninterrupted one was), val and test datasets."""
    cfg, backend = run.cfg, run.backend
    shards = (backend.shard_count, backend.shard_index)
    threads = run.runtime.threads

    def decoded(subset: str) -> tf.data.Dataset:
        return run.source.decoded(split.paths[subset], split.labels[subset], cfg.image_size, *shards)

    cache = cache_file(cfg, split.paths["train"], backend.shard_index) if cfg.cache_dir else ""
    n_local = shard_size(split.size("train"), *shards)
    start = start_element(epochs_done, plan.steps_per_epoch, plan.per_process_batch_size)
    datasets = {"train": train_pipeline(decoded("train"), n_local, plan.per_process_batch_size,
                                        cfg.seed + backend.shard_index, PipelineOptions(cfg.augment, cache, threads),
                                        start)}
    for subset in ("val", "test"):
        if split.size(subset):
            datasets[subset] = eval_pipeline(decoded(subset), plan.per_process_batch_size,
                                             cache_path="" if subset == "val" else None, threads=threads)
    return datasets
