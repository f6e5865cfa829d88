"""Two thin distributed backends behind the same hooks: Horovod and tf.distribute.MirroredStrategy.

This is the only module that imports horovod. Every Horovod-specific line is tagged `# Horovod:`.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN              # Horovod, 4 processes
    mpirun -np 4 hvdweather-train --data DIR --out RUN                  # same, launched by MPI
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN  # one process, 2 replicas

The hooks: `scope()` to build the model in, `wrap_optimizer()`, `callbacks()`, the input shard
(`shard_count`, `shard_index`), `allgather_object()` / `broadcast_object()`, and the `runtime` facts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import tensorflow as tf

from hvdweather.errors import ConfigError
from hvdweather.host import available_cores
from hvdweather.writers import RunWriter

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Facts about this process in the job; never stored on the config."""

    strategy: str  # "horovod" or "mirrored"
    rank: int  # process rank in the job
    local_rank: int  # process rank on this node (GPU pinning)
    size: int  # processes in the job
    local_size: int  # processes on this node
    replicas_per_process: int  # model replicas inside one process (mirrored: N, horovod: 1)
    threads: int  # TF intra-op threads this process uses

    @property
    def num_workers(self) -> int:
        """Workers that each take a per-worker batch per step: the LR and global-batch factor."""
        return self.size * self.replicas_per_process

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    def writer(self, run_dir: str | Path) -> RunWriter:
        """This process's writer for `run_dir`: it writes on the primary only, so callers never test the rank."""
        return RunWriter(run_dir, self.is_primary)


def default_threads(requested: int, local_size: int) -> int:
    """Threads per process: as requested, else an equal share of the node's cores (at least 1)."""
    return requested if requested > 0 else max(1, available_cores() // max(1, local_size))


def _set_threads(intra: int, inter: int) -> None:
    # N ranks each using every core oversubscribe the node (horovod#2295, #2804): cap each one.
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


class AverageBatchNormStatistics(tf.keras.callbacks.Callback):
    """Average the non-trainable variables (BatchNorm moving mean/variance) over ranks after the last
    training step of each epoch, before validation.

    Horovod averages gradients, not these: each rank's moving statistics follow its own shard, so
    ranks would validate with different models and the checkpoint would hold rank 0's view only.
    """

    def __init__(self, hvd_tf):
        super().__init__()
        self.hvd_tf = hvd_tf

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Floating-point statistics only, same order on every rank (integer step counters are equal
        # on all ranks already, and averaging would round them).
        # Moving statistics only: a frozen backbone's weights are non-trainable too, but equal on every
        # rank already, and averaging millions of them each epoch would cost time and ulps.
        variables = [v for v in self.model.non_trainable_variables
                     if v.dtype.is_floating and "moving_" in v.name]
        if batch + 1 != self.params.get("steps") or not variables:
            return
        averaged = self.hvd_tf.grouped_allreduce(variables, op=self.hvd_tf.Average)  # Horovod
        for variable, value in zip(variables, averaged):
            variable.assign(value)


class AverageEpochMetrics(tf.keras.callbacks.Callback):
    """Epoch metrics averaged over the ranks in one allreduce, before any callback reads them (the place
    of Horovod's MetricAverageCallback, which makes one allreduce per metric and a plain mean of all).

    Training metrics take the plain mean: every rank ran the same steps of equal batches. Validation
    metrics (val_*) are weighted by each rank's validation images: validation runs on all ranks over
    uneven shards, and the plain mean of 4/17 and 2/16 is 0.1801 where one process reports 6/33 = 0.1818
    (issue 25 #8). Weighted, the figures, the best checkpoint (val_loss) and early stopping do not depend
    on the number of ranks.
    """

    def __init__(self, hvd_tf):
        super().__init__()
        self.hvd_tf = hvd_tf

    def validation_images(self) -> float:
        """This rank's validation images. Keras's val figures are means over them, and its loss tracker
        holds their count (the denominator of that mean; validation is the last thing it tracked)."""
        tracker = next((m for m in self.model.metrics if m.name == "loss"), None)
        if tracker is None or not hasattr(tracker, "count"):  # a Keras without it: never average unweighted
            raise RuntimeError("AverageEpochMetrics: Keras's loss tracker has no count to weight val_* with")
        return float(tracker.count.numpy())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not logs:
            return
        names = sorted(logs)  # the same order on every rank
        images = self.validation_images() if any(n.startswith("val_") for n in names) else 0.0
        weights = [images if name.startswith("val_") else 1.0 for name in names]
        local = [float(logs[name]) * weight for name, weight in zip(names, weights)] + [images, 1.0]
        # Horovod: one allreduce for every metric and both counts; float64, so the sums add no rounding
        summed = self.hvd_tf.allreduce(tf.constant(local, tf.float64), op=self.hvd_tf.Sum,
                                        name="AverageEpochMetrics").numpy()
        total_images, ranks = summed[-2], summed[-1]
        for name, value in zip(names, summed[:-2]):
            logs[name] = float(value / (total_images if name.startswith("val_") else ranks))


def check_adasum_world(size: int, local_size: int, gpu_nccl: bool) -> None:
    """Horovod's Adasum pairs up ranks (on GPUs with NCCL, nodes): their number must be a power of two.
    Horovod itself raises only when the first training step is traced, after the scan and the model."""
    count, unit = (size // max(1, local_size), "nodes") if gpu_nccl else (size, "ranks")
    if count & (count - 1):  # Horovod: check_num_rank_power_of_2
        raise ConfigError(f"--adasum needs a power-of-two number of {unit} (1, 2, 4, 8...), got {count}: "
                          f"launch on that many {unit} or drop --adasum")


@dataclass(frozen=True)
class HorovodOptions:
    """Horovod's own training options (as in its examples), from the config's fields of the same names."""

    fp16_allreduce: bool = False  # Horovod: gradients sent as float16 (hvd.Compression.fp16)
    backward_passes_per_step: int = 1  # Horovod: local gradient accumulation before each allreduce
    adasum: bool = False  # Horovod: op=hvd.Adasum instead of averaging
    autotune: bool = False  # Horovod: HOROVOD_AUTOTUNE, tunes fusion buffer and cycle time
    autotune_log: str = ""  # Horovod: HOROVOD_AUTOTUNE_LOG, a CSV of what autotune tried


class HorovodBackend:
    """One process per worker; gradients averaged by Horovod's allreduce."""

    def __init__(self, threads_per_worker: int = 0, timeline: str = "", options: HorovodOptions | None = None):
        self.options = options or HorovodOptions()
        if timeline:
            os.environ["HOROVOD_TIMELINE"] = timeline  # Horovod: read once, at init, by rank 0
        if self.options.autotune:  # Horovod: read at init
            os.environ["HOROVOD_AUTOTUNE"] = "1"
            if self.options.autotune_log:
                os.environ["HOROVOD_AUTOTUNE_LOG"] = self.options.autotune_log
        # Horovod: OpenMPI busy-polls while a rank waits in a collective, so Horovod's background
        # thread spins on the cores this rank's TF threads need. Measured on 2 cores, 2 ranks x 1 thread:
        # busy-polling cost ~1.5x the CPU time and a third of the images/s (~200 vs ~295). Read at
        # MPI_Init (in hvd.init); the environment wins, e.g. =0 on nodes with cores to spare.
        os.environ.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
        import horovod.tensorflow as hvd_tf  # Horovod: object collectives live here
        import horovod.tensorflow.keras as hvd  # Horovod: the Keras layer

        self.hvd, self.hvd_tf = hvd, hvd_tf
        hvd.init()  # Horovod: start the ranks' communication
        if self.options.adasum and not hvd.mpi_enabled():  # Horovod: Gloo has no Adasum op
            raise ConfigError("--adasum needs Horovod's MPI controller: launch with mpirun or horovodrun "
                              "without --gloo (under Gloo, Horovod fails with 'No Adasum operation enabled')")
        gpus = tf.config.list_physical_devices("GPU")
        if self.options.adasum:
            check_adasum_world(hvd.size(), hvd.local_size(), bool(gpus) and hvd.nccl_built())
        if gpus:  # Horovod: one GPU per process, picked by local rank (not testable on CPU-only CI)
            tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
            tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
        threads = default_threads(threads_per_worker, hvd.local_size())
        _set_threads(threads, max(2, threads))
        self.runtime = Runtime("horovod", hvd.rank(), hvd.local_rank(), hvd.size(), hvd.local_size(), 1,
                               threads)

    @property
    def shard_count(self) -> int:
        return self.runtime.size

    @property
    def shard_index(self) -> int:
        return self.runtime.rank

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def wrap_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
        opts = self.options
        options = {"compression": self.hvd.Compression.fp16 if opts.fp16_allreduce else self.hvd.Compression.none,
                   # Horovod: sum this many batches locally, then allreduce; averaged, so the update equals
                   # one batch this many times larger
                   "backward_passes_per_step": opts.backward_passes_per_step,
                   "average_aggregated_gradients": opts.backward_passes_per_step > 1}
        if opts.adasum:
            # Horovod 0.28.1's Keras DistributedOptimizer refuses every op but Average and Sum (and
            # hvd.keras has no Adasum), though the allreduce it builds takes Adasum: call what it calls,
            # with op=Adasum, so each gradient tensor is combined by Adasum instead of averaged.
            from horovod._keras import create_distributed_optimizer  # Horovod

            wrapped = create_distributed_optimizer(  # Horovod: Adasum-combine the gradients
                tf.keras, optimizer, name=None, device_dense="", device_sparse="", sparse_as_dense=False,
                gradient_predivide_factor=1.0, op=self.hvd_tf.Adasum, **options)
        else:
            wrapped = self.hvd.DistributedOptimizer(optimizer, op=self.hvd.Average, **options)  # Horovod
        helper = wrapped._agg_helper
        if helper is not None:
            # Horovod: a backward pass that only sums still adds 1 to the optimizer's `iterations`
            # (gradient_aggregation_eager.py), so Adam's and AdamW's bias correction 1 - beta^t saw
            # t = N, 2N, ... where one batch N times larger has t = 1, 2, ...: count applied updates only.
            # SGD and RMSprop never read `iterations`; their updates were exact already.
            helper.apply_gradients = lambda apply, opt, *args, **kwargs: tf.cond(
                tf.equal(helper.counter, 0), apply, lambda: opt.iterations.assign_add(0))
        return wrapped

    def callbacks(self) -> list[tf.keras.callbacks.Callback]:
        """Metric averaging first, so later callbacks read averaged metrics (Horovod's examples' order).

        No BroadcastGlobalVariablesCallback: train.py broadcasts rank 0's weights (or the resume state)
        before the first step. Horovod's callback broadcasts again after step 1 of the first epoch *of
        this process*, which copies rank 0's freshly updated BatchNorm moving statistics over the
        others': a resumed run would then differ from the uninterrupted one.
        """
        return [
            AverageEpochMetrics(self.hvd_tf),  # Horovod: epoch metrics averaged over ranks (val_* weighted)
            AverageBatchNormStatistics(self.hvd_tf),  # Horovod: one set of BN statistics on all ranks
        ]

    def trace_train_step(self, model: tf.keras.Model, dataset: tf.data.Dataset) -> None:
        """Build fit's training graph now, from the dataset's spec (no iterator, so nothing is decoded):
        epoch 1 then measures data and compute, not seconds of tracing. fit reuses the traced function."""
        model.make_train_function().get_concrete_function(tf.data.IteratorSpec(dataset.element_spec))

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd_tf.allgather_object(obj)  # Horovod: one entry per rank, in rank order

    def broadcast_object(self, obj: Any) -> Any:
        return self.hvd_tf.broadcast_object(obj, root_rank=0)  # Horovod

    def broadcast_weights(self, model: tf.keras.Model) -> None:
        self.hvd_tf.broadcast_variables(model.variables, root_rank=0)  # Horovod: rank 0's weights everywhere

    def run_elastic(self, model: tf.keras.Model, body: Callable[[Any], T], **attributes: Any) -> T:
        """Run `body(state)` under Horovod's elastic loop and return what it returns.

        `state` is a `hvd.elastic.KerasState` of the compiled model and its optimizer, plus `attributes`
        (e.g. epoch=0). On every (re-)entry Horovod has synced it from rank 0, and `self.runtime` holds
        the new world, so body recomputes shards, steps and LR from it. On a reset (a host added or
        removed at a commit, or a peer lost inside a collective) the state goes back to its last commit
        and body runs again on the new world. Nothing collective may run before this call: a worker that
        joins mid-run starts the program from the top while the others wait in the state sync.
        """
        if os.environ.get("HOROVOD_ELASTIC") != "1":  # Horovod: set by horovodrun's elastic driver only
            raise ConfigError("--elastic: launch with horovodrun -np N --min-np M --max-np X "
                              "--host-discovery-script SCRIPT (docs/cluster.md); this process was not")
        from horovod.common.elastic import run_fn  # Horovod: the elastic retry loop
        from horovod.common.exceptions import HorovodInternalError

        state = self.hvd.elastic.KerasState(model, **attributes)  # Horovod: model, optimizer, attributes

        def entry(state: Any) -> T:
            try:
                self.runtime = dataclasses.replace(self.runtime, rank=self.hvd.rank(), size=self.hvd.size(),
                                                   local_rank=self.hvd.local_rank(), local_size=self.hvd.local_size())
                return body(state)
            except tf.errors.OpError as exc:
                # Horovod 0.28.1's hvd.elastic.run turns only UnknownErrors naming HorovodAllreduce,
                # HorovodAllgather or HorovodBroadcast into a reset; a peer lost inside the grouped
                # allreduce (BatchNorm statistics) or the object collectives raises other names and
                # would end the survivors too. Any Horovod op failing is a lost peer here.
                if "Horovod" in (exc.message or ""):
                    raise HorovodInternalError(exc) from exc
                raise

        def reset() -> None:  # Horovod: what hvd.elastic.run does between attempts
            self.hvd.shutdown()
            self.hvd.init()

        return run_fn(entry, reset)(state)

    def worker_host(self) -> str:
        """The host this worker was started on, as the launcher names it (horovodrun's slot host, e.g.
        localhost vs 127.0.0.1 for two "hosts" on one machine), else the machine's name."""
        return os.environ.get("HOROVOD_HOSTNAME") or platform.node()  # Horovod: set per worker by horovodrun

    def elastic_commit(self, state: Any, snapshot: Callable[[int], dict[str, Any]]) -> tf.keras.callbacks.Callback:
        """The callback that commits `state` at each epoch end; place it last. See ElasticCommit."""
        return ElasticCommit(state, snapshot)


class ElasticCommit(tf.keras.callbacks.Callback):
    """Commit the elastic state once per epoch, after the checkpoint: the epoch count, `snapshot(epoch)`'s
    attributes, weights and optimizer; then Horovod checks for host changes, and raises (all ranks at
    once) to reset onto the new world. A new world therefore starts at an epoch boundary, with its shards,
    steps and LR recomputed, and a lost worker costs at most the epoch in flight.

    Instead of Horovod's CommitStateCallback + UpdateBatchStateCallback + UpdateEpochStateCallback:
    with fit(initial_epoch=...) their epoch count is off after a reset (horovod/horovod#2844), their
    commit at epoch end runs before the epoch is counted, and a mid-epoch batch index means nothing once
    the shards are recomputed for another world. Callbacks are new on every entry, so no state of an
    earlier world leaks in (horovod/horovod#2285).
    """

    def __init__(self, state: Any, snapshot: Callable[[int], dict[str, Any]]):
        super().__init__()
        self.state, self.snapshot = state, snapshot

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.state.epoch = epoch + 1
        for name, value in self.snapshot(epoch + 1).items():
            setattr(self.state, name, value)
        self.state.commit()  # Horovod: save in memory, then raise HostsUpdatedInterrupt on a host change


class MirroredBackend:
    """One process holding N synchronous replicas (GPUs, or logical CPU devices on a CPU-only host)."""

    def __init__(self, replicas: int = 1, threads_per_worker: int = 0):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            if replicas > len(gpus):
                raise ValueError(f"--replicas {replicas}: only {len(gpus)} GPU(s) visible")
            devices = [f"/gpu:{i}" for i in range(replicas)]
            cross_device_ops = None  # NCCL all-reduce, MirroredStrategy's GPU default
        else:
            # TensorFlow sees all cores as one CPU device; split it so that N replicas exist.
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
            devices = [f"/cpu:{i}" for i in range(replicas)]
            cross_device_ops = tf.distribute.ReductionToOneDevice(reduce_to_device="/cpu:0")
        per_replica = threads_per_worker if threads_per_worker > 0 else max(1, available_cores() // replicas)
        threads = per_replica * replicas
        # Replicas share one intra-op pool; inter-op >= replicas lets their steps run side by side.
        _set_threads(threads, max(2, replicas))
        self.strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)
        self.runtime = Runtime("mirrored", 0, 0, 1, 1, replicas, threads)

    shard_count = 1
    shard_index = 0

    def scope(self) -> contextlib.AbstractContextManager:
        return self.strategy.scope()

    def wrap_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
        return optimizer  # MirroredStrategy all-reduces the replicas' gradients itself

    def callbacks(self) -> list[tf.keras.callbacks.Callback]:
        return []  # one process: variables start mirrored, metrics are already global

    def trace_train_step(self, model: tf.keras.Model, dataset: tf.data.Dataset) -> None:
        pass  # fit builds its own distributed iterator, whose spec differs: tracing now would be wasted

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def broadcast_weights(self, model: tf.keras.Model) -> None:
        pass  # one process: the mirrored variables are already identical


class TrainingBackend(Protocol):
    """The hooks train.py uses; Horovod and Mirrored implement them. Sharding (data and the
    decode check) always goes by `shard_count` / `shard_index`, never by the runtime's rank/size."""

    runtime: Runtime
    shard_count: int
    shard_index: int

    def scope(self) -> contextlib.AbstractContextManager: ...

    def wrap_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer: ...

    def callbacks(self) -> list[tf.keras.callbacks.Callback]: ...

    def trace_train_step(self, model: tf.keras.Model, dataset: tf.data.Dataset) -> None: ...

    def allgather_object(self, obj: Any) -> list[Any]: ...

    def broadcast_object(self, obj: Any) -> Any: ...

    def broadcast_weights(self, model: tf.keras.Model) -> None: ...


def make_backend(strategy: str, replicas: int = 1, threads_per_worker: int = 0,
                 timeline: str = "", options: HorovodOptions | None = None) -> TrainingBackend:
    """Start the chosen backend. Call before any other TensorFlow work: it sets threads and devices."""
    if strategy == "horovod":
        return HorovodBackend(threads_per_worker, timeline, options)
    if strategy == "mirrored":
        return MirroredBackend(replicas, threads_per_worker)
    raise ValueError(f"--strategy must be horovod or mirrored, got {strategy!r}")
