"""Train a model of the zoo (the weather CNN by default, or any --model of hvdweather.models) on one
process, under Horovod, or under MirroredStrategy; --elastic runs under Horovod's elastic loop.

    horovodrun -np 4 hvdweather-train --data DIR --out RUN   # or: mpirun -np 4 hvdweather-train ...
    hvdweather-train --strategy mirrored --replicas 2 --data DIR --out RUN

One job per module: plan (batch, steps, the LR of every step), context (what the steps share, and
start_run), inputs (scan, split, normalisation, datasets), start (new run, resume or finished), fit
(compile and model.fit), report and record (the test report and the run's own files), run (the
fixed-world `train`) and elastic (`train_elastic`, the same steps in Horovod's elastic loop).
"""
from hvdweather.train.context import start_run
from hvdweather.train.run import train

__all__ = ["start_run", "train"]
