"""Train the weather CNN on one process, under Horovod, or under MirroredStrategy.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN   # or: mpirun -np 4 hvdweather-train ...
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN

Order of work: cheap checks (flags, image size, data folder, run directory) -> scan images (split
across ranks) -> split -> datasets -> fit -> test report. Anything wrong fails before the scan.
"""
from __future__ import annotations

import hashlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdweather.config import ConfigError, TrainConfig
from hvdweather.data import records
from hvdweather.data.decode_tf import check_decodable
from hvdweather.data.discovery import Catalog, discover, find_unreadable
from hvdweather.data.pipeline import (
    decoded_files,
    eval_pipeline,
    shard_size,
    sharded_files,
    steps_per_epoch,
    train_pipeline,
)
from hvdweather.data.split import Split, read_split, stratified_split, write_split
from hvdweather.distributed import LinearWarmup, make_backend, versions
from hvdweather.errors import check_output_dir
from hvdweather.evaluate import format_report, predict_labels, write_report
from hvdweather.model import build_weather_cnn, min_image_size
from hvdweather.writers import Checkpoints, EpochMetrics, RunWriter


@dataclass(frozen=True)
class Plan:
    """Batch and step arithmetic, derived once from the config and the runtime."""

    per_worker_batch_size: int
    global_batch_size: int
    dataset_batch_size: int  # what one process batches: per-worker x replicas in the process
    steps_per_epoch: int
    base_lr: float
    scaled_lr: float


def check_inputs(cfg: TrainConfig) -> Catalog:
    """The cheap checks that must fail in seconds, before any image is decoded."""
    if cfg.image_size < min_image_size():
        raise ConfigError(f"--image-size {cfg.image_size} is too small for the weather CNN "
                          f"(needs >= {min_image_size()}); use the default 256")
    if records.is_prepared(cfg.data):  # hvdweather-prepare output: the catalog comes from its images.csv
        catalog = records.prepared_catalog(cfg.data, cfg.image_size)
    else:
        catalog = discover(cfg.data)
    check_output_dir(cfg.out)
    if cfg.cache_dir:
        check_output_dir(cfg.cache_dir, "--cache-dir")
    return catalog


def scan_catalog(catalog: Catalog, backend, writer: RunWriter) -> Catalog:
    """Decode-check every file once (each rank checks 1/N), report and drop the unreadable ones."""
    rt = backend.runtime
    mine = catalog.paths[rt.rank::rt.size]
    gathered = backend.allgather_object(find_unreadable(mine, threads=rt.threads, check=check_decodable))
    bad = {path: reason for part in gathered for path, reason in part.items()}
    writer.write_csv("skipped.csv", ["path", "reason"], sorted([p, r] for p, r in bad.items()))
    if bad:
        writer.log(f"skipped {len(bad)} unreadable file(s) of {len(catalog.paths)}; "
                   f"see {writer.path('skipped.csv')}")
    return catalog.without(set(bad))


def make_split(cfg: TrainConfig, catalog: Catalog, backend, writer: RunWriter) -> Split:
    """Reuse split.csv on --resume, else scan, split and write split.csv."""
    split_file = writer.path("split.csv")
    if cfg.resume and split_file.exists():
        return read_split(split_file, catalog.class_names)
    if records.is_prepared(cfg.data):  # prepare decoded every file once and reported the bad ones
        writer.write_text("skipped.csv", records.skipped_csv(cfg.data))
        usable = catalog
    else:
        usable = scan_catalog(catalog, backend, writer)
    split = stratified_split(usable, cfg.val_split, cfg.test_split, cfg.seed)
    writer.write_with("split.csv", lambda path: write_split(split, path))
    return split


def make_plan(cfg: TrainConfig, split: Split, runtime) -> Plan:
    dataset_batch = cfg.batch_size * runtime.replicas_per_process
    steps = steps_per_epoch(split.size("train"), runtime.size, dataset_batch)
    if steps < 1:
        per_rank = split.size("train") // runtime.size
        raise ConfigError(f"--batch-size {cfg.batch_size}: a worker's training shard has only {per_rank} "
                          f"image(s) per process ({runtime.num_workers} workers); lower --batch-size")
    return Plan(cfg.batch_size, cfg.batch_size * runtime.num_workers, dataset_batch, steps, cfg.lr,
                cfg.lr * runtime.num_workers)  # Horovod: LR scaled by the number of workers


def cache_file(cfg: TrainConfig, train_paths: tuple[str, ...], rank: int) -> str:
    """A --cache-dir file name that changes with the files, size and rank: tf.data silently reuses a
    complete cache file, so a name that ignored the data would train on stale images."""
    digest = hashlib.sha256("\n".join([cfg.data, str(cfg.image_size), *train_paths]).encode()).hexdigest()
    return str(Path(cfg.cache_dir) / f"train-{cfg.image_size}px-rank{rank}-{digest[:12]}")


def make_datasets(cfg: TrainConfig, split: Split, backend, plan: Plan) -> dict[str, tf.data.Dataset]:
    rt = backend.runtime
    shards = (backend.shard_count, backend.shard_index)

    def decoded(subset: str) -> tf.data.Dataset:
        if records.is_prepared(cfg.data):  # pixels were decoded and resized once, by hvdweather-prepare
            return records.decoded_records(cfg.data, split.paths[subset], cfg.image_size, *shards)
        return decoded_files(split.paths[subset], split.labels[subset], cfg.image_size, *shards)

    cache = cache_file(cfg, split.paths["train"], rt.rank) if cfg.cache_dir else ""
    n_local = shard_size(split.size("train"), *shards)
    datasets = {"train": train_pipeline(decoded("train"), n_local, plan.dataset_batch_size,
                                        cfg.seed + rt.rank, cfg.augment, cache, rt.threads)}
    for subset in ("val", "test"):
        if split.size(subset):
            datasets[subset] = eval_pipeline(decoded(subset), plan.dataset_batch_size,
                                             cache_path="" if subset == "val" else None, threads=rt.threads)
    return datasets


def compile_model(cfg: TrainConfig, backend, num_classes: int, plan: Plan) -> tf.keras.Model:
    with backend.scope():
        model = build_weather_cnn(num_classes, cfg.image_size)
        if cfg.optimizer == "sgd":
            optimizer = tf.keras.optimizers.SGD(plan.scaled_lr, momentum=cfg.momentum)
        else:
            optimizer = tf.keras.optimizers.Adam(plan.scaled_lr)
        model.compile(optimizer=backend.wrap_optimizer(optimizer),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    return model


def run_record(cfg: TrainConfig, runtime, plan: Plan, split: Split) -> dict[str, Any]:
    """What config.json holds: the resolved config, the world, the batch plan and versions."""
    return {"config": cfg.to_dict(), "world": runtime.__dict__ | {"num_workers": runtime.num_workers},
            "plan": plan.__dict__, "class_names": list(split.class_names),
            "subset_sizes": {s: split.size(s) for s in ("train", "val", "test")},
            "versions": versions(),
            "host": platform.node(), "command": sys.argv}


def resume_point(cfg: TrainConfig, writer: RunWriter, backend, model: tf.keras.Model) -> tuple[int, float]:
    """(epochs already done, best loss so far) from the run directory; weights from last.keras.

    The primary reads the files and broadcasts; every rank then holds rank 0's weights, so the very
    first step is already synchronised (Horovod's broadcast callback only runs after that step).
    """
    state = (0, float("inf"))
    rows = writer.read_jsonl("metrics.jsonl") if cfg.resume else []  # empty on other ranks
    if rows and writer.path("last.keras").exists():
        losses = [r.get("val_loss", r.get("loss")) for r in rows]
        state = (len(rows), min((v for v in losses if v is not None), default=float("inf")))
        model.load_weights(writer.path("last.keras"))
    state = backend.broadcast_object(state)
    backend.broadcast_weights(model)
    return state


def fit(cfg: TrainConfig, backend, writer: RunWriter, model, datasets, plan: Plan):
    """model.fit with the callbacks in Horovod's order: broadcast, average, warm-up, then readers."""
    rt = backend.runtime
    initial_epoch, best_loss = resume_point(cfg, writer, backend, model)
    world = {"world_size": rt.num_workers, "processes": rt.size, "strategy": rt.strategy,
             "global_batch_size": plan.global_batch_size}
    metrics = EpochMetrics(writer, plan.steps_per_epoch * plan.global_batch_size, world)
    checkpoints = Checkpoints(writer, best_loss)
    callbacks = backend.callbacks()
    if cfg.warmup_epochs > 0 and rt.num_workers > 1:
        callbacks.append(LinearWarmup(plan.base_lr, plan.scaled_lr, cfg.warmup_epochs, plan.steps_per_epoch))
    callbacks += [metrics, checkpoints]
    if initial_epoch >= cfg.epochs:
        writer.log(f"already trained {initial_epoch} epoch(s) of {cfg.epochs}; nothing to resume")
    backend.trace_train_step(model, datasets["train"])
    model.fit(datasets["train"], epochs=cfg.epochs, initial_epoch=min(initial_epoch, cfg.epochs),
              steps_per_epoch=plan.steps_per_epoch, validation_data=datasets.get("val"),
              callbacks=callbacks, verbose=writer.keras_verbose(cfg.verbose))
    return checkpoints


def local_train_files(split: Split, backend) -> list[str]:
    """The files this rank's tf.data shard really yields (read from the sharded dataset itself)."""
    ds = sharded_files(split.paths["train"], split.labels["train"], backend.shard_count, backend.shard_index)
    return [path.decode() for path, _ in ds.as_numpy_iterator()]


def weights_digest(model: tf.keras.Model) -> str:
    """SHA-256 over every weight (trainable and BN statistics): equal digests = identical models."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def record_ranks(backend, writer: RunWriter, model: tf.keras.Model, split: Split) -> None:
    """shards.csv (which rank trained on which file) and ranks.json (host, shard size, weight digest)."""
    files = local_train_files(split, backend)
    gathered = backend.allgather_object({"rank": backend.runtime.rank, "host": platform.node(),
                                         "train_files": files, "weights_sha256": weights_digest(model)})
    writer.write_csv("shards.csv", ["rank", "path"], [[g["rank"], f] for g in gathered for f in g["train_files"]])
    writer.write_json("ranks.json", [{k: v for k, v in g.items() if k != "train_files"}
                                     | {"n_train_files": len(g["train_files"])} for g in gathered])


def report(cfg: TrainConfig, backend, writer: RunWriter, model, datasets, split: Split, checkpoints):
    """Gather every rank's test predictions (best weights) and write report/ on the primary."""
    if checkpoints.best_weights is not None:
        model.set_weights(checkpoints.best_weights)
    if "test" not in datasets:
        return None
    y_true, y_pred = predict_labels(model, datasets["test"])
    parts = backend.allgather_object((y_true, y_pred))
    y_true = np.concatenate([p[0] for p in parts])
    y_pred = np.concatenate([p[1] for p in parts])
    rows = writer.read_jsonl("metrics.jsonl")
    frame = write_report(writer, y_true, y_pred, split.class_names, rows)
    writer.log(format_report(frame))
    writer.log(f"test accuracy {frame.loc['accuracy', 'f1']:.4f} on {len(y_true)} images "
               f"(best epoch {checkpoints.best_epoch or 'resumed'}); report in {writer.path('report')}")
    return frame


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns a small summary (every rank)."""
    catalog = check_inputs(cfg)  # fail in seconds, before the backend starts
    backend = make_backend(cfg.strategy, cfg.replicas, cfg.threads_per_worker, cfg.horovod_timeline)
    rt = backend.runtime
    writer = RunWriter(cfg.out, rt.is_primary)
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every rank
    split = make_split(cfg, catalog, backend, writer)
    plan = make_plan(cfg, split, rt)
    writer.write_json("config.json", run_record(cfg, rt, plan, split))
    writer.log(f"hvdweather: {rt.strategy}, {rt.num_workers} worker(s) x per-worker batch "
               f"{plan.per_worker_batch_size} = global batch {plan.global_batch_size}; "
               f"lr {plan.base_lr:g} x {rt.num_workers} = {plan.scaled_lr:g}; {plan.steps_per_epoch} steps/epoch; "
               f"{rt.threads} thread(s) per process; train/val/test = "
               f"{split.size('train')}/{split.size('val')}/{split.size('test')} images")
    datasets = make_datasets(cfg, split, backend, plan)
    model = compile_model(cfg, backend, len(split.class_names), plan)
    checkpoints = fit(cfg, backend, writer, model, datasets, plan)
    frame = report(cfg, backend, writer, model, datasets, split, checkpoints)
    record_ranks(backend, writer, model, split)
    accuracy = None if frame is None else float(frame.loc["accuracy", "f1"])
    return {"run_dir": str(writer.run_dir), "test_accuracy": accuracy, "world_size": rt.num_workers}
