"""What hvdweather-predict and hvdweather-evaluate are asked: one frozen dataclass per command, one field per
flag (the flags' defaults are these fields'). TensorFlow-free, so the CLI builds and checks a request
before the modules that load TensorFlow are imported."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictRequest:
    """hvdweather-predict MODEL IMAGES... and its flags."""

    model: str  # a run directory, or a .keras file in one
    images: tuple[str, ...]  # image files and folders (searched recursively), in argument order
    out: str = "predictions.csv"  # the CSV: path, predicted class, probability, top-k pairs, error
    top_k: int = 3  # most probable classes listed per image (at most the model's classes)
    batch_size: int = 32  # images per forward pass, per process
    checkpoint: str = "best"  # best (lowest val loss) or last
    grid: str = ""  # also a contact sheet PNG of up to 64 images ("" = none)
    threads_per_worker: int = 0  # TensorFlow threads per process (0 = cores on the node / its processes)


@dataclass(frozen=True)
class EvaluateRequest:
    """hvdweather-evaluate RUN_DIR and its flags."""

    run_dir: str  # the run directory hvdweather-train wrote
    checkpoint: str = "best"  # best (lowest val loss) or last
    data: str = ""  # another labelled class-folder set instead of the run's own test split ("" = the split)
    data_root: str = ""  # where the run's data set lies now ("" = config.json's place, else beside RUN_DIR)
    out: str = ""  # report folder ("" = RUN_DIR/eval-<test|data name>-<checkpoint>)
    batch_size: int = 0  # images per forward pass, per process (0 = the run's --batch-size)
    threads_per_worker: int = 0  # TensorFlow threads per process (0 = cores on the node / its processes)
