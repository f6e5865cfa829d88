"""Under horovodrun -np 2: every zoo model (smallest input) takes one training step through the
package's Horovod backend on each rank's own synthetic batch, is saved and reloaded; the primary writes
argv[1] with, per model, whether the output is one logit per class, the loss finite, every kernel changed,
every rank holds identical weights (digests gathered), and the reloaded model predicts the same, finite."""
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdweather.distributed import HorovodBackend
from hvdweather.geometry import MODEL_GEOMETRY
from hvdweather.models import create_model

backend = HorovodBackend(threads_per_worker=1)
rt = backend.runtime
result = {}
for name, geometry in MODEL_GEOMETRY.items():
    size = int(geometry["min_image_size"])
    tf.keras.utils.set_random_seed(0)
    model = create_model(name, 11, size)
    model.compile(optimizer=backend.wrap_optimizer(tf.keras.optimizers.SGD(0.05, momentum=0.9)),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backend.broadcast_weights(model)
    rng = np.random.default_rng(rt.rank)  # each rank its own images: only the allreduce makes them agree
    x = rng.uniform(size=(4, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 11, 4).astype(np.int32)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False, callbacks=backend.callbacks())
    # Every kernel moved (weights of 2 or more dimensions: conv, dense, embeddings): a frozen or cut-off
    # part, such as a backbone, would leave its kernels unchanged. Not every bias: a BatchNorm beta whose
    # shift the next BatchNorm's mean removes has a zero gradient; on MobileNetV2's 1x1 maps at 32 px
    # (blocks 13-16, batch 2) it is zero in floats too (measured once).
    changed = all(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)
                  if len(b.shape) >= 2)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w).tobytes() for w in model.get_weights())).hexdigest()
    path = Path(tempfile.mkdtemp()) / f"{name}.keras"
    model.save(path)
    reloaded = tf.keras.models.load_model(path, compile=False)
    same = all(np.array_equal(a, b) for a, b in zip(model.get_weights(), reloaded.get_weights()))
    prediction = model(x, training=False).numpy()
    same_output = np.isfinite(prediction).all() and np.allclose(reloaded(x, training=False), prediction, atol=1e-5)
    digests = backend.allgather_object(digest)
    result[name] = {"logits": model.output_shape == (None, 11),
                    "finite_loss": bool(np.isfinite(history.history["loss"][0])), "trained": changed,
                    "ranks_equal": len(set(digests)) == 1 and len(digests) == 2,
                    "reload_equal": same and bool(same_output)}
if rt.is_primary:
    Path(sys.argv[1]).write_text(json.dumps(result))
