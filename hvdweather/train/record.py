"""What a run says about itself: config.json (the resolved config, the world, the plan, versions), the
start line, and at the end shards.csv and ranks.json (which rank trained on which file, and every rank's
weight digest, so that equal models can be seen to be equal).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdweather.config import resolve_precision
from hvdweather.data.pipeline import sharded_files
from hvdweather.data.split import Split
from hvdweather.distributed import TrainingBackend
from hvdweather.host import onednn_request, onednn_state, versions
from hvdweather.runfiles import data_fields, read_json
from hvdweather.train.context import FitInputs, RunContext
from hvdweather.train.plan import Plan
from hvdweather.writers import RunWriter


def run_record(run: RunContext, split: Split, plan: Plan) -> dict[str, Any]:
    """What config.json holds: the resolved config, the world, the batch/LR plan, versions, oneDNN as asked
    and as TensorFlow runs it, and the precision --precision resolved to."""
    cfg, runtime = run.cfg, run.runtime
    previous = read_json(Path(cfg.out) / "config.json") if cfg.resume else None
    return {"config": cfg.to_dict() | {"data": os.path.abspath(cfg.data)},
            **data_fields(cfg.data, cfg.out, previous),  # a run folder that works from any folder
            "world": runtime.__dict__ | {"num_workers": runtime.num_workers},
            "plan": plan.__dict__, "class_names": list(split.class_names),
            "subset_sizes": {s: split.size(s) for s in ("train", "val", "test")},
            "versions": versions(), "onednn": onednn_state(), "onednn_request": onednn_request(),
            "precision_used": resolve_precision(cfg), "host": platform.node(), "command": sys.argv}


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


def log_start(run: RunContext, split: Split, plan: Plan) -> None:
    """The start line: world, batch and LR plan, subsets, and the classes (so a wrong set shows at once)."""
    writer, rt, catalog = run.writer, run.runtime, run.source.catalog
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


def record_ranks(run: RunContext, inputs: FitInputs) -> None:
    """shards.csv (which rank trained on which file) and ranks.json (host, shard size, weight digest)."""
    backend, writer = run.backend, run.writer
    files = local_train_files(inputs.split, backend)
    gathered = backend.allgather_object({"rank": run.runtime.rank, "host": platform.node(),
                                         "train_files": files, "weights_sha256": weights_digest(inputs.model)})
    writer.write_csv("shards.csv", ["rank", "path"], [[g["rank"], f] for g in gathered for f in g["train_files"]])
    writer.write_json("ranks.json", [{k: v for k, v in g.items() if k != "train_files"}
                                     | {"n_train_files": len(g["train_files"])} for g in gathered])
