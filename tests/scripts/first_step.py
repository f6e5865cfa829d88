"""One SGD step through the package's Horovod backend; the primary saves the weights to argv[1] and,
when given, the initial weights to argv[2] (so a test can tell that the step moved every weight).

Run alone (1 rank, the whole batch) and under horovodrun -np 2 (each rank half the batch): with
gradients averaged correctly the two results are equal. The model has no BatchNorm or Dropout, whose
per-rank batch statistics / masks would differ by design.
"""
import sys

import numpy as np
import tensorflow as tf

from hvdweather.distributed import HorovodBackend

GLOBAL_BATCH = 8

backend = HorovodBackend(threads_per_worker=1)
rt = backend.runtime
tf.keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(GLOBAL_BATCH, 6)).astype(np.float32)
y = rng.integers(0, 3, GLOBAL_BATCH).astype(np.int32)
per_rank = GLOBAL_BATCH // rt.size
mine = slice(rt.rank * per_rank, (rt.rank + 1) * per_rank)
model = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(5, activation="tanh"),
                             tf.keras.layers.Dense(3)])
model.compile(optimizer=backend.wrap_optimizer(tf.keras.optimizers.SGD(0.5, momentum=0.9)),
              loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
initial = model.get_weights()
model.fit(x[mine], y[mine], batch_size=per_rank, epochs=1, shuffle=False, verbose=0,
          callbacks=backend.callbacks())
if rt.is_primary:
    np.savez(sys.argv[1], *model.get_weights())
    if len(sys.argv) > 2:
        np.savez(sys.argv[2], *initial)
