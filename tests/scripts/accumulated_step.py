"""Two updates per optimizer through the package's Horovod backend with its options; the primary saves
every optimizer's weights to argv[1] (keys "<optimizer>_<index>"; the initial weights, the same for
every optimizer: "initial_<index>"). argv[2]: backward passes per step;
argv[3]: optimizers, comma-separated (hvdweather.optim names); argv[4] (optional): "fp16" to compress.

Each update averages 8 images (16 in all, in order). Alone with 1 pass: two batches of 8. Under
horovodrun -np 2 with 2 passes: each rank takes 4 images of each update as two batches of 2, summed
locally, then averaged over ranks: the same two updates if the accumulation is right, including the
optimizer's step count (Adam's bias correction reads it). No BatchNorm or Dropout (their per-batch
behaviour differs by design).
"""
import sys

import numpy as np
import tensorflow as tf

from hvdweather.config import TrainConfig
from hvdweather.distributed import HorovodBackend, HorovodOptions
from hvdweather.optim import make_optimizer

IMAGES_PER_UPDATE, UPDATES = 8, 2
passes = int(sys.argv[2])
backend = HorovodBackend(threads_per_worker=1, options=HorovodOptions(fp16_allreduce=sys.argv[4:] == ["fp16"],
                                                                      backward_passes_per_step=passes))
rt = backend.runtime
rng = np.random.default_rng(0)
x = rng.normal(size=(IMAGES_PER_UPDATE * UPDATES, 6)).astype(np.float32)
y = rng.integers(0, 3, IMAGES_PER_UPDATE * UPDATES).astype(np.int32)
per_rank = IMAGES_PER_UPDATE // rt.size
mine = np.concatenate([np.arange(u * IMAGES_PER_UPDATE + rt.rank * per_rank,
                                 u * IMAGES_PER_UPDATE + (rt.rank + 1) * per_rank) for u in range(UPDATES)])
saved = {}
for name in sys.argv[3].split(","):
    tf.keras.utils.set_random_seed(0)  # the same initial weights for every optimizer and rank count
    model = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(5, activation="tanh"),
                                 tf.keras.layers.Dense(3)])
    saved |= {f"initial_{i}": w for i, w in enumerate(model.get_weights())}
    cfg = TrainConfig(optimizer=name, momentum=0.9, weight_decay=0.01 if name == "adamw" else 0.0)
    model.compile(optimizer=backend.wrap_optimizer(make_optimizer(cfg, 0.5 if name == "sgd" else 0.01)),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[mine], y[mine], batch_size=per_rank // passes, epochs=1, shuffle=False, verbose=0,
              callbacks=backend.callbacks())
    saved |= {f"{name}_{i}": w for i, w in enumerate(model.get_weights())}
    saved[f"{name}_iterations"] = np.array(int(model.optimizer.iterations.numpy()))
if rt.is_primary:
    np.savez(sys.argv[1], **saved)
