"""Four executors: ways to spread chunks of images over CPU processes, behind the same few hooks.

Not to be confused with the training backends (Horovod / Mirrored in `hvdweather.distributed`): an
executor only runs the EDA's and prepare's per-image work.

    hvdweather-eda DATA --out DIR --executor sequential
    hvdweather-eda DATA --out DIR --executor multiprocessing --processes 4
    mpirun -np 4 hvdweather-eda DATA --out DIR --executor mpi
    hvdweather-eda DATA --out DIR --executor spark [--spark-master URL]   (hvdweather.eda.spark)

The hooks: `share(make)` (the primary computes something, e.g. the file list, and every process gets
it, or the same error), `map(fn, tasks, progress)` (run this process's share of the tasks),
`sum_arrays(arrays)` and `gather(obj)` (combine on the primary; other MPI ranks get None), and
`progress(...)` (one display, the primary's). Work is split by image, never by class folder: 11
folders of unequal size leave workers idle, while `balanced_chunks` gives every chunk the same number
of images (+-1) and a mix of all classes. mpi4py is imported only by the mpi executor, PySpark only by
the spark executor.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hvdweather.config import ConfigError
from hvdweather.data.sharding import shard_of
from hvdweather.eda.executor import Progress, SequentialExecutor, T
from hvdweather.host import available_cores, launched_processes, say

EXECUTORS = ("sequential", "multiprocessing", "mpi", "spark")
def _pool_context() -> multiprocessing.context.BaseContext:
    # fork is cheapest, but forking a process that already runs TensorFlow's thread pools can
    # deadlock the children; then start clean interpreters instead.
    return multiprocessing.get_context("spawn" if "tensorflow" in sys.modules else "fork")


class MultiprocessingExecutor(SequentialExecutor):
    """A multiprocessing.Pool of `workers` processes; chunks are handed out as workers free up."""

    name = "multiprocessing"

    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn: Callable[[Any], T], tasks: Sequence[Any], progress: Progress) -> list[T]:
        results = []
        # The pool is started here, inside the timed stage, as in the reference PyTorch weather project's measurements.
        with _pool_context().Pool(self.workers) as pool:
            for task, result in zip(tasks, pool.imap(fn, tasks)):
                results.append(result)
                progress.update(len(task.index))
        return results


def launched_by_mpirun() -> bool:
    """True when an MPI launcher started this process (OpenMPI, MPICH/Hydra, Slurm's PMI)."""
    return any(name in os.environ for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


class MpiExecutor(SequentialExecutor):
    """One process per rank (mpi4py): rank 0 lists the work, every rank computes its share of the
    chunks, numpy buffers are combined with MPI reductions and rank 0 writes.

    Distributed code must never hang: errors the primary finds while preparing the work are
    broadcast so every rank stops with them, and an unexpected exception on any rank aborts the job.
    """

    name = "mpi"

    def __init__(self, workers: int | None = None):
        from mpi4py import MPI  # only this executor needs MPI; the others must run without it

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.workers = self.size
        if workers is not None and workers != self.size:
            raise ConfigError(f"--processes {workers} does not match the {self.size} MPI rank(s); with "
                              "--executor mpi the process count is mpirun's -np (leave --processes out)")
        if self.size == 1 and not launched_by_mpirun():
            print("note: --executor mpi was not started by mpirun; running as a single rank "
                  "(use: mpirun -np N hvdweather-eda ... --executor mpi)", file=sys.stderr, flush=True)

    def share(self, make: Callable[[], T]) -> T:
        outcome: tuple[bool, Any] = (True, None)
        if self.is_primary:
            try:
                outcome = (True, make())
            except Exception as exc:  # sent to every rank, so none waits for work that never comes
                outcome = (False, exc)
        ok, value = self.comm.bcast(outcome, root=0)
        if not ok and self.is_primary:
            raise value
        if not ok:
            raise SystemExit(2)  # the primary prints the one-line error; N copies would only be noise
        return value

    def map(self, fn: Callable[[Any], T], tasks: Sequence[Any], progress: Progress) -> list[T]:
        mine = shard_of(list(tasks), self.size, self.rank)
        progress.total = sum(len(task.index) for task in mine)  # rank 0 shows its own share
        progress.label = f"{progress.label} (rank 0 of {self.size}, its share)"
        try:
            return super().map(fn, mine, progress)
        except BaseException:
            self.abort()
            raise

    def sum_arrays(self, arrays: list[np.ndarray]) -> list[np.ndarray] | None:
        totals = []
        for array in arrays:
            array = np.ascontiguousarray(array)
            total = np.empty_like(array) if self.is_primary else None
            self.comm.Reduce(array, total, op=self.MPI.SUM, root=0)  # buffer reduction, no pickling
            totals.append(total)
        return totals if self.is_primary else None

    def gather(self, obj: T) -> list[T] | None:
        return self.comm.gather(obj, root=0)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self) -> None:
        """Print this rank's traceback and end the whole job (the other ranks would wait forever)."""
        traceback.print_exc()
        say(f"rank {self.rank}: failed; aborting all {self.size} ranks", sys.stderr)
        self.comm.Abort(1)


def make_executor(name: str, workers: int | None = None, spark_master: str | None = None) -> SequentialExecutor:
    """The executor called `name`; `workers` defaults to all cores (multiprocessing, spark's local mode),
    mpirun's -np, or the Spark cluster's default parallelism (`spark_master`: spark only)."""
    processes = launched_processes()
    if processes > 1 and name != "mpi":  # every process would do all the work and write one --out
        raise ConfigError(f"--executor {name} under a launch of {processes} processes (mpirun/srun): each would "
                          "write the whole --out folder; add --executor mpi to share the work among them, or "
                          "run the command once, without the launcher")
    if workers is not None and workers < 1:
        raise ConfigError(f"--processes must be >= 1, got {workers}")
    if spark_master is not None and name != "spark":
        raise ConfigError(f"--spark-master is for --executor spark, not {name}")
    if name == "spark":
        from hvdweather.eda.spark import SparkExecutor  # deferred: PySpark is an optional extra

        return SparkExecutor(workers, spark_master)
    if name == "sequential":
        if workers not in (None, 1):
            raise ConfigError(f"--processes {workers}: the sequential executor runs in one process; "
                              "use --executor multiprocessing or mpi for more")
        return SequentialExecutor()
    if name == "multiprocessing":
        return MultiprocessingExecutor(workers or available_cores())
    if name == "mpi":
        return MpiExecutor(workers)
    raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
