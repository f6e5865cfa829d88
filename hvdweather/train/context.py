"""What the training steps share, so that each takes one argument for it instead of five loose ones:
`RunContext` (the config, the data source, the backend and the run directory's writer: fixed for a
run, or for one world of an elastic run) and `FitInputs` (the split, the plan, the compiled model and
its datasets: what fit trains and the report tests). Every step takes them in that order:
`step(run, inputs, ...)`.

`start_run` is what every run starts with, before either exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from hvdweather.checks import check_inputs
from hvdweather.config import TrainConfig, resolve_precision
from hvdweather.data.source import Source
from hvdweather.data.split import Split
from hvdweather.distributed import HorovodOptions, Runtime, TrainingBackend, make_backend
from hvdweather.host import start_xla_quietly
from hvdweather.models import apply_precision
from hvdweather.models.weather_cnn import use_fast_cpu_allocator
from hvdweather.train.plan import Plan
from hvdweather.writers import RunWriter


@dataclass(frozen=True)
class RunContext:
    """The run as every step sees it. An elastic run makes one per world: the writer follows the rank."""

    cfg: TrainConfig
    source: Source
    backend: TrainingBackend
    writer: RunWriter  # writes on the primary only (rank 0 of this world)

    @classmethod
    def of(cls, cfg: TrainConfig, source: Source, backend: TrainingBackend) -> RunContext:
        """The context of the backend's present world, writing into --out."""
        return cls(cfg, source, backend, backend.runtime.writer(cfg.out))

    @property
    def runtime(self) -> Runtime:
        return self.backend.runtime


@dataclass(frozen=True)
class FitInputs:
    """What fit trains on and the report tests: made after the split, the plan and the model."""

    split: Split
    plan: Plan
    model: tf.keras.Model
    datasets: dict[str, tf.data.Dataset]  # train (infinite), and val and test when the split has them


def start_run(cfg: TrainConfig, source: Source | None = None) -> tuple[Source, TrainingBackend]:
    """What every run starts with, fixed-world (train.run) or elastic (train.elastic): the checks
    (`source`: check_inputs's, when the caller ran them already, as hvdweather-train does before
    TensorFlow loads), the allocator, the backend, XLA's start-up lines and the precision policy."""
    if source is None:
        source = check_inputs(cfg)  # fail in seconds, before the backend starts
    use_fast_cpu_allocator()  # before TensorFlow's first allocation (models/weather_cnn.py quotes the gain)
    backend = make_backend(cfg.strategy, cfg.replicas, cfg.threads_per_worker, cfg.horovod_timeline,
                           HorovodOptions(cfg.fp16_allreduce, cfg.backward_passes_per_step, cfg.adasum,
                                          cfg.autotune, cfg.autotune_log))
    start_xla_quietly()  # after the backend set the devices and threads
    apply_precision(resolve_precision(cfg))  # before any layer is built
    return source, backend
