"""One SGD update through the package's Horovod backend with its options; the primary saves the
weights to argv[1]. argv[2]: backward passes per step; argv[3]: "fp16" to compress the allreduce.

Alone with 1 pass: the whole batch of 8. Under horovodrun -np 2 with 2 passes: each rank takes its 4
images as two batches of 2, summed locally, then averaged over ranks: the same update if Horovod's
accumulation is right. No BatchNorm or Dropout (their per-batch behaviour differs by design).
"""
import sys

import numpy as np
import tensorflow as tf

from hvdweather.distributed import HorovodBackend, HorovodOptions

GLOBAL_BATCH = 8
passes = int(sys.argv[2])
backend = HorovodBackend(threads_per_worker=1, options=HorovodOptions(fp16_allreduce=sys.argv[3:] == ["fp16"],
                                                                      backward_passes_per_step=passes))
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
model.fit(x[mine], y[mine], batch_size=per_rank // passes, epochs=1, shuffle=False, verbose=0,
          callbacks=backend.callbacks())
if rt.is_primary:
    np.savez(sys.argv[1], *model.get_weights())
