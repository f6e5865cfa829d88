"""Elastic training (--elastic): the run goes on while workers come and go.

    horovodrun -np 2 --min-np 1 --max-np 4 --host-discovery-script jobs/lib/discover_hosts_file.sh \\
        hvdweather-train --elastic --data DIR --out RUN

The same steps as the fixed-world run (hvdweather.train.run), arranged for Horovod's elastic loop
(HorovodBackend.run_elastic in hvdweather.distributed.horovod): nothing collective before the loop (a
worker that joins mid-run starts the program from the top while the others wait in the state sync), the
run's set-up once, in the first world, and in every world a plan (shards, steps, LR) for that world, from
the epoch the state was committed at. docs/cluster.md has the whole story and the upstream issues this
works around.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import tensorflow as tf

from hvdweather.callbacks import Checkpoints
from hvdweather.checks import check_run_dir, check_val_shards
from hvdweather.config import TrainConfig
from hvdweather.data.source import Source
from hvdweather.models import create_model
from hvdweather.train.context import FitInputs, RunContext, start_run
from hvdweather.train.fit import fit, recompile
from hvdweather.train.inputs import fixed_normalization, make_datasets, make_split
from hvdweather.train.plan import make_plan
from hvdweather.train.record import log_start, run_record
from hvdweather.train.report import finish
from hvdweather.train.start import Start, begin, check_resume, load_resume_state


def train_elastic(cfg: TrainConfig, source: Source | None = None) -> dict[str, Any]:
    """--elastic: train.context.start_run's steps, then the model is built by every worker alone (no
    collective: a worker that joins mid-run starts here while the others wait in Horovod's state sync),
    then `elastic_attempt` runs under Horovod's elastic loop, once per world the job has."""
    source, backend = start_run(cfg, source)
    tf.keras.utils.set_random_seed(cfg.seed)  # same model on every worker; the state sync makes it exact
    num_classes = len(source.catalog.class_names)
    with backend.scope():
        model = create_model(cfg.model, num_classes, cfg.image_size, cfg.weights, fixed_normalization(cfg))
        recompile(RunContext.of(cfg, source, backend), model, num_classes, cfg.lr)
        model.optimizer.build(model.trainable_variables)  # the slots exist, so the state holds them

    def attempt(state: Any) -> dict[str, Any]:  # a context per world: run_elastic has set its runtime
        return elastic_attempt(RunContext.of(cfg, source, backend), model, state)

    return backend.run_elastic(model, attempt, epoch=0, split=None, best=Start())


def elastic_attempt(run: RunContext, model: tf.keras.Model, state: Any) -> dict[str, Any]:
    """One world of an elastic run (`run`: that world's context): the first sets the run up (run
    directory, scan, split, or the resume state); every one recomputes the plan (shards, steps, LR) for
    its world and trains from the state's epoch, committing the state at each epoch end."""
    cfg, backend, writer, rt = run.cfg, run.backend, run.writer, run.runtime
    if state.split is None:  # the job's first world (the state sync gives later ones its split)
        start_elastic_run(run, model, state)
    split, start = state.split, replace(state.best, epochs_done=state.epoch)
    check_val_shards(split.size("val"), backend.shard_count)
    plan = make_plan(cfg, split.size("train"), rt, backend.shard_count)
    writer.write_json("config.json", run_record(run, split, plan) | {"normalization": fixed_normalization(cfg)})
    log_start(run, split, plan)
    hosts = backend.allgather_object(backend.worker_host())
    writer.log(f"elastic: {rt.size} worker(s) from epoch {state.epoch + 1}: "
               + ", ".join(f"rank {rank} on {host}" for rank, host in enumerate(hosts)))
    model.optimizer.learning_rate.assign(plan.lr_at(state.epoch * plan.steps_per_epoch))
    inputs = FitInputs(split, plan, model, make_datasets(run, split, plan, state.epoch))

    def commit(checkpoints: Checkpoints) -> list[tf.keras.callbacks.Callback]:
        return [backend.elastic_commit(state, lambda epoch: {"best": Start(
            epoch, checkpoints.best_loss, checkpoints.best_epoch, checkpoints.best_weights)})]

    checkpoints, metrics = fit(run, inputs, start, commit)
    return {"run_dir": str(writer.run_dir)} | finish(run, inputs, checkpoints, metrics)


def start_elastic_run(run: RunContext, model: tf.keras.Model, state: Any) -> None:
    """The first world's set-up, kept in the state so that no later world repeats it: the run directory
    check (every rank; the scan's allgather follows before any rank writes), the split, and on --resume
    the run's resume state. Saved at once, so a reset before the first commit keeps it."""
    check_run_dir(run.cfg)
    split = make_split(run)
    if run.cfg.resume:
        check_resume(run, split)
    loaded = load_resume_state(run)
    if loaded:
        start = begin(run, model, loaded)
        state.epoch, state.best = start.epochs_done, start
    state.split = split
    state.save()  # Horovod: in memory only, no collective
