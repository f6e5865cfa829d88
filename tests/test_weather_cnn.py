"""The weather CNN: the reference's function with fewer parameters, logits out, sizes it refuses, and the
fused BatchNorm + tanh layer against Keras's own BatchNormalization + tanh."""
from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from hvdweather.geometry import WEATHER_CNN_BLOCKS, WEATHER_CNN_MIN_IMAGE_SIZE
from hvdweather.models.weather_cnn import BatchNormTanh, build_weather_cnn

REFERENCE_PARAMETERS = 108_517  # the reference PyTorch weather project's CNN at 256 px, 11 classes


def _trainable(model: tf.keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_parameter_count_is_the_reference_less_conv1s_biases():
    conv1_biases = WEATHER_CNN_BLOCKS[0][0]  # 6, cancelled by the BatchNorm after conv1
    assert _trainable(build_weather_cnn(11, 256)) == REFERENCE_PARAMETERS - conv1_biases


def test_logits_shape_and_no_softmax():
    model = build_weather_cnn(5, 256)
    out = model(tf.random.uniform((2, 256, 256, 3)), training=False).numpy()
    assert out.shape == (2, 5)
    assert not np.allclose(out.sum(axis=1), 1.0)  # raw logits, not probabilities


def test_minimum_size_is_the_exact_limit():
    assert WEATHER_CNN_MIN_IMAGE_SIZE == 253
    build_weather_cnn(3, 253)
    with pytest.raises(ValueError, match="--image-size 252 is too small"):
        build_weather_cnn(3, 252)


def test_builder_is_pure():
    tf.keras.utils.set_random_seed(0)
    a = build_weather_cnn(4, 256).get_weights()
    tf.keras.utils.set_random_seed(0)
    b = build_weather_cnn(4, 256).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def _keras_bn_tanh(fused: BatchNormTanh, shape: tuple[int, ...]) -> tf.keras.Sequential:
    """Keras's BatchNormalization + tanh holding the fused layer's weights."""
    reference = tf.keras.Sequential([tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9),
                                     tf.keras.layers.Activation("tanh")])
    reference.build(shape)
    reference.layers[0].set_weights([w.numpy() for w in (fused.gamma, fused.beta, fused.moving_mean,
                                                         fused.moving_variance)])
    return reference


@pytest.mark.parametrize("shape", [(4, 17, 13, 6), (3, 1, 1, 120)])
def test_fused_bn_tanh_matches_keras_forward_backward_and_statistics(shape):
    tf.keras.utils.set_random_seed(1)
    x = tf.random.normal(shape) * 3.0 + 1.5
    dy = tf.random.normal(shape)
    fused = BatchNormTanh(epsilon=1e-5, momentum=0.9)
    fused.build(shape)
    fused.gamma.assign(tf.random.uniform(shape[-1:], 0.5, 1.5))
    fused.beta.assign(tf.random.normal(shape[-1:]))
    reference = _keras_bn_tanh(fused, shape)
    grads = []
    for layer, weights in ((fused, [fused.gamma, fused.beta]), (reference, reference.layers[0].trainable_weights)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        grads.append((y, *tape.gradient(y, [x, *weights], output_gradients=dy)))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.layers[0].moving_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.layers[0].moving_variance.numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False).numpy(), reference(x, training=False).numpy(),
                               rtol=2e-4, atol=2e-5)


def test_saved_model_loads_and_predicts_the_same(tmp_path):
    model = build_weather_cnn(3, 253)
    model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tf.random.uniform((4, 253, 253, 3)), tf.constant([0, 1, 2, 0]), epochs=1, verbose=0)  # moves BN stats
    # Graph-mode evaluate/predict run TF's graph optimiser, whose Conv2D+FusedBatchNorm+Tanh fusion
    # fails under oneDNN when the conv has no bias: eager calls alone would not catch it.
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.evaluate(tf.random.uniform((4, 253, 253, 3)), tf.constant([0, 1, 2, 0]), verbose=0)
    model.save(tmp_path / "x.keras")
    loaded = tf.keras.models.load_model(tmp_path / "x.keras")
    x = tf.random.uniform((2, 253, 253, 3))
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-6)
    assert any(isinstance(layer, BatchNormTanh) for layer in loaded.layers)


def test_fast_cpu_allocator_leaves_an_explicit_choice(monkeypatch):
    from hvdweather.models.weather_cnn import use_fast_cpu_allocator

    monkeypatch.delenv("TF_CPU_ALLOCATOR_USE_BFC", raising=False)
    use_fast_cpu_allocator()
    assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "true"
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "false")
    use_fast_cpu_allocator()
    assert os.environ["TF_CPU_ALLOCATOR_USE_BFC"] == "false"


MIRRORED_FIT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hvdweather.models.weather_cnn import BatchNormTanh, build_weather_cnn
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice("/cpu:0"))
with strategy.scope():
    model = build_weather_cnn(3, 253)
    model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
images = tf.random.uniform((8, 253, 253, 3))
data = tf.data.Dataset.from_tensor_slices((images, tf.constant([0, 1, 2, 0] * 2))).batch(4)
model.fit(data, epochs=1, verbose=0)
model.evaluate(data, verbose=0)
bn = next(layer for layer in model.layers if isinstance(layer, BatchNormTanh))
assert float(tf.reduce_max(tf.abs(bn.moving_mean))) > 0, "moving mean not updated"
print("ok")
"""


def test_fused_layer_trains_under_mirrored_strategy():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MIRRORED_FIT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
