"""One SGD update through the package's Horovod backend with --adasum, under horovodrun -np 2; the
primary saves the new weights, what Adasum of the two ranks' gradients gives and what their average
gives to argv[1] (keys "weights_<i>", "adasum_<i>", "average_<i>").

Adasum of two gradients (Maleki et al. 2021, per tensor, as Horovod applies it):
    (1 - g1.g2 / (2 |g1|^2)) g1 + (1 - g1.g2 / (2 |g2|^2)) g2
"""
import sys

import numpy as np
import tensorflow as tf

from hvdweather.config import TrainConfig
from hvdweather.distributed import HorovodBackend, HorovodOptions
from hvdweather.optim import make_optimizer

LR = 0.5
backend = HorovodBackend(threads_per_worker=1, options=HorovodOptions(adasum=True))
rt = backend.runtime
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 6)).astype(np.float32)
y = rng.integers(0, 3, 8).astype(np.int32)
mine = slice(rt.rank * 4, rt.rank * 4 + 4)
tf.keras.utils.set_random_seed(0)
model = tf.keras.Sequential([tf.keras.Input((6,)), tf.keras.layers.Dense(5, activation="tanh"),
                             tf.keras.layers.Dense(3)])
loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
with tf.GradientTape() as tape:
    local_loss = loss(y[mine], model(x[mine]))
local = [g.numpy() for g in tape.gradient(local_loss, model.trainable_variables)]
before = [w.numpy() for w in model.trainable_variables]
g1, g2 = backend.allgather_object(local)
model.compile(optimizer=backend.wrap_optimizer(make_optimizer(TrainConfig(momentum=0.0), LR)), loss=loss)
model.fit(x[mine], y[mine], batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=backend.callbacks())
saved = {}
for i, (a, b, w0, w1) in enumerate(zip(g1, g2, before, model.trainable_variables)):
    dot = float(np.sum(a * b))
    adasum = (1 - dot / (2 * np.sum(a * a))) * a + (1 - dot / (2 * np.sum(b * b))) * b
    saved |= {f"weights_{i}": w1.numpy(), f"adasum_{i}": w0 - LR * adasum, f"average_{i}": w0 - LR * (a + b) / 2}
if rt.is_primary:
    np.savez(sys.argv[1], **saved)
