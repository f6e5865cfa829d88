"""The Horovod backend and its callbacks: the only module of the package that imports horovod, and only
when a HorovodBackend is made (importing this module loads no horovod). Every Horovod-specific line is
tagged `# Horovod:`.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN              # Horovod, 4 processes
    mpirun -np 4 hvdweather-train --data DIR --out RUN                  # same, launched by MPI
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Callable
from typing import Any, TypeVar

import tensorflow as tf

from hvdweather.distributed.options import HorovodOptions, check_adasum_world
from hvdweather.distributed.runtime import Runtime, default_threads, set_threads
from hvdweather.errors import ConfigError

T = TypeVar("T")


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
    uneven shards, and the plain mean of 4/17 and 2/16 is 0.1801 where one process reports 6/33 = 0.1818.
    Weighted, the figures, the best checkpoint (val_loss) and early stopping do not depend
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
        set_threads(threads, max(2, threads))
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

        No BroadcastGlobalVariablesCallback: hvdweather.train.start.begin broadcasts rank 0's weights (or
        the resume state) before the first step. Horovod's callback broadcasts again after step 1 of the first epoch *of
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
