"""Two thin distributed backends behind the same hooks: Horovod and tf.distribute.MirroredStrategy.

hvdweather.distributed.horovod is the only module of the package that imports horovod (when a
HorovodBackend is made, not at import). Every Horovod-specific line is tagged `# Horovod:`.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN              # Horovod, 4 processes
    mpirun -np 4 hvdweather-train --data DIR --out RUN                  # same, launched by MPI
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN  # one process, 2 replicas

The hooks (backend.TrainingBackend): `scope()` to build the model in, `wrap_optimizer()`, `callbacks()`,
the input shard (`shard_count`, `shard_index`), `allgather_object()` / `broadcast_object()`, and the
`runtime` facts (runtime.Runtime). Modules: runtime (Runtime, threads), options (Horovod's options),
horovod (its backend and callbacks), mirrored, backend (the hooks and make_backend).
"""
from hvdweather.distributed.backend import TrainingBackend, make_backend
from hvdweather.distributed.horovod import (
    AverageBatchNormStatistics,
    AverageEpochMetrics,
    ElasticCommit,
    HorovodBackend,
)
from hvdweather.distributed.mirrored import MirroredBackend
from hvdweather.distributed.options import HorovodOptions, check_adasum_world
from hvdweather.distributed.runtime import Runtime, default_threads

__all__ = ["AverageBatchNormStatistics", "AverageEpochMetrics", "ElasticCommit", "HorovodBackend",
           "HorovodOptions", "MirroredBackend", "Runtime", "TrainingBackend", "check_adasum_world",
           "default_threads", "make_backend"]
