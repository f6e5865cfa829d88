"""Train a model of the zoo (the weather CNN by default) on one process, under Horovod, or under
MirroredStrategy.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN   # or: mpirun -np 4 hvdweather-train ...
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN

Order of work: cheap checks (flags, image size, data folder, run directory) -> scan images (split
across ranks) -> split -> datasets -> fit -> test report. Anything wrong fails before the scan.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdweather.callbacks import (
    Checkpoints,
    EarlyStop,
    EpochMetrics,
    LinearWarmup,
    PlannedLR,
    ProgressLog,
    TensorBoardLog,
    epochs_without_improvement,
    first_epoch_reaching,
    timed_callbacks,
)
from hvdweather.checks import check_batch, check_inputs, check_val_shards
from hvdweather.config import ConfigError, TrainConfig, decay_epochs, resolve_precision
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
from hvdweather.data.pipeline import eval_pipeline, sharded_files, train_pipeline
from hvdweather.data.sharding import shard_of, shard_size, start_element, steps_per_epoch
from hvdweather.data.source import Source
from hvdweather.data.split import (
    DUPLICATES_HEADER,
    Split,
    duplicate_rows,
    read_split,
    stratified_split,
    write_split,
)
from hvdweather.distributed import HorovodOptions, Runtime, TrainingBackend, make_backend
from hvdweather.evaluate.report import (
    TestPredictions,
    format_report,
    predict_probabilities,
    write_checkpoint_report,
    write_test_summaries,
)
from hvdweather.host import onednn_request, onednn_state, start_xla_quietly, versions
from hvdweather.model import use_fast_cpu_allocator
from hvdweather.models import apply_precision, create_model, reorder_weights, set_backbone_trainable
from hvdweather.optim import balanced_class_weights, make_loss, make_metrics, make_optimizer
from hvdweather.resume import STATE_FILE, check_same_files, check_same_world, restore
from hvdweather.runfiles import data_fields, read_json, rebase, split_root
from hvdweather.writers import RunWriter


@dataclass(frozen=True)
class Plan:
    """Batch, step and learning-rate arithmetic, derived once from the config and the runtime."""

    per_worker_batch_size: int
    global_batch_size: int  # per worker x workers: what one optimizer step averages over
    per_process_batch_size: int  # what one process batches: per worker x replicas in the process
    steps_per_epoch: int
    base_lr: float  # the LR for one worker (--lr)
    scaled_lr: float  # Horovod: base x workers (Goyal et al.), reached at the end of the warm-up
    warmup_steps: int  # steps of the linear ramp from base_lr to scaled_lr; 0 = start at scaled_lr
    # After the warm-up, with scaled_lr as the peak: constant, step (x decay_factor from each of
    # decay_steps on) or cosine (to zero at total_steps). Steps are fit's batches, from 0.
    schedule: str = "constant"
    total_steps: int = 0
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 1.0
    fine_tune_step: int = 0  # --freeze-backbone-epochs: the backbone trains from this step on (0 = always)
    fine_tune_lr_factor: float = 1.0  # the LR multiplier from fine_tune_step on
    backward_passes_per_step: int = 1  # Horovod: batches summed per optimizer update (global batch x this)

    def lr_at(self, step: int) -> float:
        """The LR of fit's batch `step` (0-based): the whole schedule in one pure function."""
        if step < self.warmup_steps:
            return self.base_lr + (step / self.warmup_steps) * (self.scaled_lr - self.base_lr)
        lr = self.scaled_lr
        if self.schedule == "step":
            lr *= self.decay_factor ** sum(step >= d for d in self.decay_steps)
        elif self.schedule == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if self.fine_tune_step and step >= self.fine_tune_step:
            lr *= self.fine_tune_lr_factor
        return lr

    def lr_callbacks(self) -> list[tf.keras.callbacks.Callback]:
        if self.schedule != "constant" or self.fine_tune_step:
            return [PlannedLR(self.lr_at, self.steps_per_epoch)]
        if self.warmup_steps == 0:
            return []
        return [LinearWarmup(self.base_lr, self.scaled_lr, self.warmup_steps, self.steps_per_epoch)]

    def initial_lr(self) -> float:
        """The optimizer's LR before the first step: the ramp (if any) starts at the base."""
        return self.lr_at(0)

    @property
    def images_per_step(self) -> int:
        """Images in one of fit's batches over all workers (an update takes backward_passes_per_step)."""
        return self.global_batch_size // self.backward_passes_per_step


def make_plan(cfg: TrainConfig, n_train: int, runtime: Runtime, shard_count: int) -> Plan:
    """Batches, steps and the LR schedule; a batch larger than a process's shard is an error."""
    per_process = cfg.per_worker_batch_size * runtime.replicas_per_process
    check_batch(cfg.per_worker_batch_size, per_process, n_train, shard_count, runtime.num_workers)
    steps = steps_per_epoch(n_train, shard_count, per_process)
    passes = cfg.backward_passes_per_step
    if steps < passes:
        raise ConfigError(f"--backward-passes-per-step {passes}: an epoch has only {steps} batch(es) per worker")
    steps -= steps % passes  # whole updates per epoch: no half-summed gradient across a checkpoint
    workers = runtime.num_workers
    # Horovod: LR scaled by the number of workers; with Adasum not (its combination of gradients is
    # scale-preserving; Horovod's docs scale by local size only for GPU+NCCL, not on CPU).
    lr_factor = 1 if cfg.adasum else workers
    warmup = max(1, round(cfg.warmup_epochs * steps)) if cfg.warmup_epochs > 0 and lr_factor > 1 else 0
    return Plan(cfg.per_worker_batch_size, cfg.per_worker_batch_size * workers * passes, per_process, steps,
                cfg.lr, cfg.lr * lr_factor, warmup, cfg.lr_schedule, cfg.epochs * steps,
                tuple((e - 1) * steps for e in decay_epochs(cfg)), cfg.lr_decay_factor,
                cfg.freeze_backbone_epochs * steps if cfg.freeze_backbone_epochs else 0,
                cfg.fine_tune_lr_factor, passes)


def scan(cfg: TrainConfig, source: Source, backend: TrainingBackend, writer: RunWriter) -> tuple[Catalog, Duplicates]:
    """Decode-check and hash every file once (each process takes 1/shard_count); report and drop the
    bad ones; find the duplicates the split must keep together."""
    catalog = source.catalog
    mine = shard_of(catalog.paths, backend.shard_count, backend.shard_index)
    parts = backend.allgather_object(source.inspect(mine, backend.runtime.threads, cfg.group_near_duplicates))
    facts = {path: fact for part in parts for path, fact in part.items()}
    bad = {path: fact.reason for path, fact in facts.items() if fact.reason}
    rows = source.skipped_rows() + sorted([p, r] for p, r in bad.items())
    writer.write_csv("skipped.csv", ["path", "reason"], rows)
    if rows:
        writer.log(f"skipped {len(rows)} unreadable file(s); see {writer.path('skipped.csv')}")
    duplicates = find_duplicates(facts, cfg.group_duplicates, cfg.group_near_duplicates)
    if duplicates.wrong_extension:
        path, real = duplicates.wrong_extension[0]
        writer.log(f"{len(duplicates.wrong_extension)} file(s) hold another format than their extension says "
                   f"(e.g. {path} is a {real}); decoded by their content")
    return catalog.without(set(bad)), duplicates


def make_split(cfg: TrainConfig, source: Source, backend: TrainingBackend, writer: RunWriter) -> Split:
    """Reuse split.csv on --resume, else scan, split (duplicates kept in one subset) and write
    split.csv and duplicates.csv."""
    split_file = writer.path("split.csv")
    if cfg.resume and split_file.exists():  # every rank reads it, as it reads the data: a shared folder
        record = read_json(writer.path("config.json")) or {}
        return read_split(split_file, source.catalog.class_names, split_root(record), cfg.data)
    catalog, duplicates = scan(cfg, source, backend, writer)
    split = stratified_split(catalog, cfg.val_split, cfg.test_split, cfg.seed, duplicates.groups)
    writer.write_with("split.csv", lambda path: write_split(split, path))
    writer.write_csv("duplicates.csv", DUPLICATES_HEADER, duplicate_rows(split, duplicates.groups, duplicates.exact))
    return split


def duplicates_note(writer: RunWriter) -> str:
    """The start line's words on duplicate files, from the run's duplicates.csv (a resume reads it too)."""
    rows = writer.read_csv("duplicates.csv")
    if not rows:
        return ""
    groups = {row["group"] for row in rows}
    conflicts = {row["group"] for row in rows if row["kind"] == "conflict"}
    note = f"; {len(groups)} duplicate group(s) ({len(rows)} files) each kept in one subset"
    if conflicts:
        note += f", {len(conflicts)} of them under several classes (trained on, never tested)"
    return note + f" (see {writer.path('duplicates.csv')})"


def cache_file(cfg: TrainConfig, train_paths: tuple[str, ...], shard_index: int) -> str:
    """A --cache-dir file name that changes with the files, size and shard: tf.data silently reuses a
    complete cache file, so a name that ignored the data would train on stale images."""
    digest = hashlib.sha256("\n".join([cfg.data, str(cfg.image_size), *train_paths]).encode()).hexdigest()
    return str(Path(cfg.cache_dir) / f"train-{cfg.image_size}px-rank{shard_index}-{digest[:12]}")


def make_datasets(cfg: TrainConfig, source: Source, split: Split, backend: TrainingBackend,
                  plan: Plan, epochs_done: int = 0) -> dict[str, tf.data.Dataset]:
    """Train (infinite; a resumed run starts where the uninterrupted one was), val and test datasets."""
    shards = (backend.shard_count, backend.shard_index)
    threads = backend.runtime.threads

    def decoded(subset: str) -> tf.data.Dataset:
        return source.decoded(split.paths[subset], split.labels[subset], cfg.image_size, *shards)

    cache = cache_file(cfg, split.paths["train"], backend.shard_index) if cfg.cache_dir else ""
    n_local = shard_size(split.size("train"), *shards)
    start = start_element(epochs_done, plan.steps_per_epoch, plan.per_process_batch_size)
    datasets = {"train": train_pipeline(decoded("train"), n_local, plan.per_process_batch_size,
                                        cfg.seed + backend.shard_index, cfg.augment, cache, threads, start)}
    for subset in ("val", "test"):
        if split.size(subset):
            datasets[subset] = eval_pipeline(decoded(subset), plan.per_process_batch_size,
                                             cache_path="" if subset == "val" else None, threads=threads)
    return datasets


def compile_model(cfg: TrainConfig, backend: TrainingBackend, num_classes: int, plan: Plan,
                  normalization: Moments | None = None, epochs_done: int = 0) -> tf.keras.Model:
    """The --model network (weights, input normalisation), its backbone frozen when the run is (or a
    resumed run was, at its last checkpoint) inside --freeze-backbone-epochs; compiled."""
    with backend.scope():
        model = create_model(cfg.model, num_classes, cfg.image_size, cfg.weights, normalization)
        if cfg.freeze_backbone_epochs and epochs_done <= cfg.freeze_backbone_epochs:
            set_backbone_trainable(model, False)
        recompile(cfg, backend, model, num_classes, plan.initial_lr())
    return model


def recompile(cfg: TrainConfig, backend: TrainingBackend, model: tf.keras.Model, num_classes: int,
              lr: float) -> None:
    """Compile with a fresh optimizer: at the start, and when fine-tuning unfreezes the backbone (every
    rank does it at the same epoch, so all build their slots for the same new trainable set)."""
    with backend.scope():
        model.compile(optimizer=backend.wrap_optimizer(make_optimizer(cfg, lr)), loss=make_loss(cfg),
                      metrics=make_metrics(cfg, num_classes))


def run_record(cfg: TrainConfig, runtime: Runtime, plan: Plan, split: Split) -> dict[str, Any]:
    """What config.json holds: the resolved config, the world, the batch/LR plan, versions, oneDNN as asked
    and as TensorFlow runs it, and the precision --precision resolved to."""
    previous = read_json(Path(cfg.out) / "config.json") if cfg.resume else None
    return {"config": cfg.to_dict() | {"data": os.path.abspath(cfg.data)},
            **data_fields(cfg.data, cfg.out, previous),  # a run folder that works from any folder (issue 25)
            "world": runtime.__dict__ | {"num_workers": runtime.num_workers},
            "plan": plan.__dict__, "class_names": list(split.class_names),
            "subset_sizes": {s: split.size(s) for s in ("train", "val", "test")},
            "versions": versions(), "onednn": onednn_state(), "onednn_request": onednn_request(),
            "precision_used": resolve_precision(cfg), "host": platform.node(), "command": sys.argv}


def fixed_normalization(cfg: TrainConfig) -> Moments | None:
    """--normalize without a pass over the images: none, ImageNet's constants or --stats."""
    if cfg.normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return moments_from_eda(cfg.stats) if cfg.normalize == "dataset" else None


def input_normalization(cfg: TrainConfig, source: Source, split: Split, backend: TrainingBackend,
                        writer: RunWriter) -> Moments | None:
    """--normalize: None, ImageNet's constants, or the training split's mean/std (a resumed run reads
    its own from config.json: the same floats, no second pass over the images)."""
    if cfg.normalize == "dataset" and cfg.resume:
        record = backend.broadcast_object(writer.read_json("config.json")) or {}
        if record.get("normalization"):
            return tuple(map(tuple, record["normalization"]))
    if cfg.normalize != "dataset" or cfg.stats:
        return fixed_normalization(cfg)
    mine = source.decoded(split.paths["train"], split.labels["train"], cfg.image_size, backend.shard_count,
                          backend.shard_index)
    return moments_from_sums(backend.allgather_object(channel_sums(mine)))  # Horovod: every rank's sums


def load_resume_state(cfg: TrainConfig, writer: RunWriter, backend: TrainingBackend) -> dict[str, Any] | None:
    """The run's resume state on every rank (the primary reads it and broadcasts); None for a new run
    or one killed before its first epoch ended."""
    state = writer.read_state(STATE_FILE) if cfg.resume else None
    return backend.broadcast_object(state)


def check_resume(cfg: TrainConfig, writer: RunWriter, backend: TrainingBackend, catalog: Catalog,
                 split: Split) -> None:
    """A resume continues the same run: same world, same files (config: see config.resume_config)."""
    rt = backend.runtime
    record = backend.broadcast_object(writer.read_json("config.json")) or {}
    if not cfg.elastic:  # an elastic run changes its world by design; its plan follows each world
        check_same_world(record, rt.strategy, rt.num_workers)
    # The run's files live on the primary's disk; every rank then checks the same sets, so all stop.
    skipped = backend.broadcast_object(set(rebase([row["path"] for row in writer.read_csv("skipped.csv")],
                                                  split_root(record), cfg.data)))
    check_same_files(catalog, set().union(*split.paths.values()), skipped, cfg.data)


def unfreeze(cfg: TrainConfig, backend: TrainingBackend, model: tf.keras.Model, checkpoints: Checkpoints,
             plan: Plan) -> None:
    """End of --freeze-backbone-epochs: everything trains, with a fresh optimizer at the fine-tuning LR.
    Keras lists trainable weights first, so the best weights kept so far are put in the new order."""
    before = list(model.weights)
    set_backbone_trainable(model, True)
    if checkpoints.best_weights is not None:
        checkpoints.best_weights = reorder_weights(checkpoints.best_weights, before, model.weights)
    recompile(cfg, backend, model, model.output_shape[-1], plan.lr_at(plan.fine_tune_step))


def fit_phases(cfg: TrainConfig, backend: TrainingBackend, model: tf.keras.Model,
               datasets: dict[str, tf.data.Dataset], plan: Plan, initial_epoch: int,
               checkpoints: Checkpoints, **fit_args: Any) -> None:
    """model.fit; under --freeze-backbone-epochs in two parts: the head alone, then everything. Every
    rank switches at the same epoch. A run resumed exactly at the switch was compiled frozen (its
    checkpoint was) and switches before its first step, as the uninterrupted run did."""
    freeze = cfg.freeze_backbone_epochs
    parts = [(initial_epoch, cfg.epochs)]
    if freeze and initial_epoch <= freeze:
        parts = [(initial_epoch, min(freeze, cfg.epochs)), (freeze, cfg.epochs)]
    for index, (start, end) in enumerate(parts):
        if index == 1:
            if model.stop_training or start >= end:  # early stopping ended the run in the first part
                return
            unfreeze(cfg, backend, model, checkpoints, plan)
        if start >= end:
            continue
        # Each fit opens a new iterator, at the stream's first batch (initial_epoch's): the second part
        # skips what the first took, so it goes on with the batches a run resumed at the switch sees.
        train = datasets["train"].skip((start - initial_epoch) * plan.steps_per_epoch)
        backend.trace_train_step(model, train)
        model.fit(train, epochs=end, initial_epoch=start, steps_per_epoch=plan.steps_per_epoch,
                  validation_data=datasets.get("val"), **fit_args)


@dataclass(frozen=True)
class Start:
    """Where fit starts: epochs already trained and the best checkpoint so far (a resume or an elastic
    reset carries them over; a new run starts from nothing)."""

    epochs_done: int = 0
    best_loss: float = float("inf")
    best_epoch: int = 0
    best_weights: list | None = None


def begin(backend: TrainingBackend, writer: RunWriter, model: tf.keras.Model, state: dict[str, Any] | None,
          resuming: bool = True) -> Start:
    """Every rank's model before step 1: the resume state restored, or rank 0's initial weights.
    `resuming` False: a finished run only writing its report (it trains nothing, so it says nothing)."""
    if not state:
        backend.broadcast_weights(model)
        return Start()
    with backend.scope():  # the optimizer's slots are created here: mirrored ones under mirrored
        restore(model, state)
    if resuming:
        writer.log(f"resuming after epoch {state['epochs_done']} (from {writer.path(STATE_FILE)})")
    return Start(state["epochs_done"], state["best_loss"], state["best_epoch"], state["best_weights"])


def fit(cfg: TrainConfig, backend: TrainingBackend, writer: RunWriter, model: tf.keras.Model,
        datasets: dict[str, tf.data.Dataset], plan: Plan, start: Start,
        class_weight: dict[int, float] | None = None,
        last_callbacks: Callable[[Checkpoints], list[tf.keras.callbacks.Callback]] = lambda _: [],
        ) -> tuple[Checkpoints, EpochMetrics]:
    """model.fit from `start`, with the callbacks in Horovod's order: average, LR, then the readers of
    averaged metrics; `last_callbacks(checkpoints)` run after all of them (the elastic commit)."""
    rt = backend.runtime
    # Every rank's EarlyStop must see the same epochs, or one stops while another waits in an allreduce.
    previous = backend.broadcast_object(writer.read_jsonl("metrics.jsonl")[:start.epochs_done])
    writer.write_jsonl("metrics.jsonl", previous)  # drop rows of an epoch whose checkpoint never landed
    world = {"world_size": rt.num_workers, "processes": rt.size, "strategy": rt.strategy,
             "global_batch_size": plan.global_batch_size}
    metrics = EpochMetrics(writer, plan.steps_per_epoch * plan.images_per_step, world,
                           cfg.target_accuracy, previous)
    checkpoints = Checkpoints(writer, start.best_loss, start.best_epoch, start.best_weights)
    callbacks = [*backend.callbacks(), *plan.lr_callbacks(), metrics, checkpoints]
    if cfg.early_stopping:  # after the checkpoint, so the last epoch trained is saved
        callbacks.append(EarlyStop(cfg.early_stopping, previous, writer))
        if stopped_early(cfg, previous):
            return checkpoints, metrics  # it stopped at its last checkpoint: nothing left to train
    if cfg.tensorboard:  # after EpochMetrics: it logs that callback's row
        callbacks.append(TensorBoardLog(writer, metrics))
    keras_verbose = writer.keras_verbose(cfg.verbose)
    if cfg.verbose and not keras_verbose:  # a log file, not a terminal: whole lines
        callbacks.append(ProgressLog(writer, cfg.epochs, plan.images_per_step, step_lines=cfg.verbose == 1))
    callbacks.extend(last_callbacks(checkpoints))
    callbacks = timed_callbacks(callbacks, metrics, writer)  # metrics.jsonl's per-phase times
    fit_phases(cfg, backend, model, datasets, plan, start.epochs_done, checkpoints, callbacks=callbacks,
               verbose=keras_verbose, class_weight=class_weight)
    return checkpoints, metrics


def local_train_files(split: Split, backend: TrainingBackend) -> list[str]:
    """The files this rank's tf.data shard really yields (read from the sharded dataset itself)."""
    ds = sharded_files(split.paths["train"], split.labels["train"], backend.shard_count, backend.shard_index)
    return [path.decode() for path, _ in ds.as_numpy_iterator()]


def weights_digest(model: tf.keras.Model) -> str:
    """SHA-256 over every weight (trainable and BN statistics): equal digests = identical models."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def record_ranks(backend: TrainingBackend, writer: RunWriter, model: tf.keras.Model, split: Split) -> None:
    """shards.csv (which rank trained on which file) and ranks.json (host, shard size, weight digest)."""
    files = local_train_files(split, backend)
    gathered = backend.allgather_object({"rank": backend.runtime.rank, "host": platform.node(),
                                         "train_files": files, "weights_sha256": weights_digest(model)})
    writer.write_csv("shards.csv", ["rank", "path"], [[g["rank"], f] for g in gathered for f in g["train_files"]])
    writer.write_json("ranks.json", [{k: v for k, v in g.items() if k != "train_files"}
                                     | {"n_train_files": len(g["train_files"])} for g in gathered])


def gather_test(backend: TrainingBackend, model: tf.keras.Model,
                dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every rank predicts its test shard; all ranks get the whole (labels, probabilities) back."""
    parts = backend.allgather_object(predict_probabilities(model, dataset))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def report(backend: TrainingBackend, writer: RunWriter, model: tf.keras.Model,
           datasets: dict[str, tf.data.Dataset], split: Split, checkpoints: Checkpoints, last_epoch: int,
           tensorboard: bool = False):
    """Test metrics of the last weights (report/last/) and of the best (report/, as before), both in
    report/test_metrics.json: the CIFAR-10 lab's "best model vs last model". Ends with the best weights."""
    best_is_last = checkpoints.best_weights is None or checkpoints.best_epoch == last_epoch
    if "test" not in datasets:
        if not best_is_last:
            model.set_weights(checkpoints.best_weights)
        return None
    rows = writer.read_jsonl("metrics.jsonl")
    y_true, probabilities = gather_test(backend, model, datasets["test"])  # the weights fit ended with
    test = TestPredictions(y_true, probabilities, split.class_names)
    _, last = write_checkpoint_report(writer, test, None, "report/last", last_epoch)
    if tensorboard:
        write_test_summaries(writer, "last", last, test)
    if not best_is_last:  # else the best weights are the last ones: no second pass
        model.set_weights(checkpoints.best_weights)
        y_true, probabilities = gather_test(backend, model, datasets["test"])
    test = TestPredictions(y_true, probabilities, split.class_names)
    frame, best = write_checkpoint_report(writer, test, rows, "report", checkpoints.best_epoch or last_epoch)
    if tensorboard:
        write_test_summaries(writer, "best", best, test)
    writer.write_json("report/test_metrics.json", {"best": best, "last": last})
    writer.log(format_report(frame))
    writer.log(f"test accuracy {best['test_accuracy']:.4f} on {len(y_true)} images "
               f"(best epoch {checkpoints.best_epoch or 'resumed'}); last epoch {last_epoch}: "
               f"{last['test_accuracy']:.4f}; report in {writer.path('report')}")
    return frame


def log_start(writer: RunWriter, rt: Runtime, plan: Plan, split: Split, catalog: Catalog) -> None:
    """The start line: world, batch and LR plan, subsets, and the classes (so a wrong set shows at once)."""
    names = list(split.class_names)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    warmup = f" (warm-up {plan.warmup_steps} steps)" if plan.warmup_steps else ""
    passes = f" x {plan.backward_passes_per_step} backward passes" if plan.backward_passes_per_step > 1 else ""
    writer.log(f"hvdweather: {rt.strategy}, {rt.num_workers} worker(s) x per-worker batch "
               f"{plan.per_worker_batch_size}{passes} = global batch {plan.global_batch_size}; "
               f"lr {plan.base_lr:g} x {plan.scaled_lr / plan.base_lr:g} = {plan.scaled_lr:g}{warmup}; "  # Adasum: x 1
               f"{plan.steps_per_epoch} steps/epoch; {rt.threads} thread(s) per process; train/val/test = "
               f"{split.size('train')}/{split.size('val')}/{split.size('test')} images; "
               f"{len(names)} classes: {shown}{duplicates_note(writer)}")
    if catalog.ignored:
        writer.log(f"ignored {len(catalog.ignored)} image(s) at the top level of {catalog.root}, outside "
                   f"any class folder (e.g. {catalog.ignored[0]})")


def log_target(writer: RunWriter, cfg: TrainConfig, metrics: EpochMetrics) -> None:
    if cfg.target_accuracy > 0:
        epoch = first_epoch_reaching(metrics.rows, cfg.target_accuracy)
        writer.log(f"target accuracy {cfg.target_accuracy:g}: " + (f"first reached at epoch {epoch}" if epoch
                   else f"not reached in {len(metrics.rows)} epoch(s)"))


def start_run(cfg: TrainConfig, source: Source | None = None) -> tuple[Source, TrainingBackend]:
    """What every run starts with, fixed-world (train) or elastic (hvdweather.elastic): the checks
    (`source`: check_inputs's, when the caller ran them already, as hvdweather-train does before
    TensorFlow loads), the allocator, the backend, XLA's start-up lines and the precision policy."""
    if source is None:
        source = check_inputs(cfg)  # fail in seconds, before the backend starts
    use_fast_cpu_allocator()  # before TensorFlow's first allocation (model.py quotes the gain)
    backend = make_backend(cfg.strategy, cfg.replicas, cfg.threads_per_worker, cfg.horovod_timeline,
                           HorovodOptions(cfg.fp16_allreduce, cfg.backward_passes_per_step, cfg.adasum,
                                          cfg.autotune, cfg.autotune_log))
    start_xla_quietly()  # after the backend set the devices and threads
    apply_precision(resolve_precision(cfg))  # before any layer is built
    return source, backend


def train(cfg: TrainConfig, source: Source | None = None,
          on_checkpoint: Callable[[int], None] = lambda epochs: None) -> dict[str, Any]:
    """Run one fixed-world training job end to end; returns a small summary (every rank). `on_checkpoint(n)`
    hears how many epochs the run's checkpoint holds, at the start and after each epoch's checkpoint, so
    that a caller can say it when the run is interrupted (hvdweather.cli on Ctrl-C). --elastic runs go
    through hvdweather.elastic.train_elastic, built on this module's steps."""
    if cfg.elastic:
        raise ConfigError("--elastic runs are trained by hvdweather.elastic.train_elastic")
    source, backend = start_run(cfg, source)
    rt = backend.runtime
    writer = rt.writer(cfg.out)
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every rank
    split = make_split(cfg, source, backend, writer)
    if cfg.resume:
        check_resume(cfg, writer, backend, source.catalog, split)
    state = load_resume_state(cfg, writer, backend)
    summary = {"run_dir": str(writer.run_dir), "test_accuracy": None, "world_size": rt.num_workers}
    finished = nothing_to_train(cfg, writer, backend, state) if state else ""
    if finished:
        # Killed after its last checkpoint but before the report (a requeue can land there): finish that.
        reported = backend.broadcast_object(writer.exists("ranks.json"))
        writer.log(finished + ("" if reported else "; writing its report"))
        if reported:
            return summary
    check_val_shards(split.size("val"), backend.shard_count)
    plan = make_plan(cfg, split.size("train"), rt, backend.shard_count)
    normalization = input_normalization(cfg, source, split, backend, writer)
    writer.write_json("config.json", run_record(cfg, rt, plan, split) | {"normalization": normalization})
    log_start(writer, rt, plan, split, source.catalog)
    datasets = make_datasets(cfg, source, split, backend, plan, state["epochs_done"] if state else 0)
    model = compile_model(cfg, backend, len(split.class_names), plan, normalization,
                          state["epochs_done"] if state else 0)
    start = begin(backend, writer, model, state, resuming=not finished)
    on_checkpoint(start.epochs_done)
    saved = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_checkpoint(epoch + 1))
    checkpoints, metrics = fit(cfg, backend, writer, model, datasets, plan, start, class_weights(cfg, split),
                               lambda _: [saved])  # after Checkpoints: the epoch is on disk when it is told
    return summary | finish(cfg, backend, writer, model, datasets, split, checkpoints, metrics)


def stopped_early(cfg: TrainConfig, rows: list[dict[str, Any]]) -> int:
    """The epoch at which early stopping ended the run these metrics rows are of (0: it did not)."""
    if not cfg.early_stopping or not rows:
        return 0
    return int(rows[-1]["epoch"]) if epochs_without_improvement(rows)[1] >= cfg.early_stopping else 0


def nothing_to_train(cfg: TrainConfig, writer: RunWriter, backend: TrainingBackend, state: dict[str, Any]) -> str:
    """Why a resumed run has no epoch left to train: all of --epochs done, or early stopping ended it
    ("" when it has). Collective: every rank holds the same state, and gets rank 0's metrics rows."""
    done = state["epochs_done"]
    if done >= cfg.epochs:
        return (f"{cfg.out} already trained {done} epoch(s) of --epochs {cfg.epochs}; nothing to resume "
                "(raise --epochs to train on)")
    rows = backend.broadcast_object(writer.read_jsonl("metrics.jsonl")[:done])
    epoch = stopped_early(cfg, rows)
    if not epoch:
        return ""
    monitor = "val_loss" if "val_loss" in rows[-1] else "loss"
    return (f"{cfg.out} stopped early after epoch {epoch} (--early-stopping {cfg.early_stopping}: no better "
            f"{monitor} for {cfg.early_stopping} epoch(s)); nothing to resume")


def class_weights(cfg: TrainConfig, split: Split) -> dict[int, float] | None:
    return (balanced_class_weights(np.asarray(split.labels["train"]), len(split.class_names))
            if cfg.class_weights == "balanced" else None)


def finish(cfg: TrainConfig, backend: TrainingBackend, writer: RunWriter, model: tf.keras.Model,
           datasets: dict[str, tf.data.Dataset], split: Split, checkpoints: Checkpoints,
           metrics: EpochMetrics) -> dict[str, Any]:
    """After fit: the test report, the target line, shards.csv and ranks.json (collective: every rank)."""
    # The last epoch trained: early stopping may end before --epochs (the same on every rank).
    # The primary's rows hold every epoch (on a resume of a finished run, other ranks have none).
    last_epoch = backend.broadcast_object(metrics.rows[-1]["epoch"] if metrics.rows else 0)
    frame = report(backend, writer, model, datasets, split, checkpoints, last_epoch, cfg.tensorboard)
    log_target(writer, cfg, metrics)
    record_ranks(backend, writer, model, split)
    return {"test_accuracy": None if frame is None else float(frame.loc["accuracy", "f1"]),
            "world_size": backend.runtime.num_workers}
