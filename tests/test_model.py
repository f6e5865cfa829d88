"""The weather CNN: the seeds' parameter count, logits out, sizes it refuses."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hvdweather.model import build_weather_cnn, min_image_size


def _trainable(model: tf.keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_seed_parameter_count():
    assert _trainable(build_weather_cnn(11, 256)) == 108_517


def test_logits_shape_and_no_softmax():
    model = build_weather_cnn(5, 256)
    out = model(tf.random.uniform((2, 256, 256, 3)), training=False).numpy()
    assert out.shape == (2, 5)
    assert not np.allclose(out.sum(axis=1), 1.0)  # raw logits, not probabilities


def test_minimum_size_is_the_exact_limit():
    assert min_image_size() == 253
    build_weather_cnn(3, 253)
    with pytest.raises(ValueError, match="--image-size 252 is too small"):
        build_weather_cnn(3, 252)


def test_builder_is_pure():
    tf.keras.utils.set_random_seed(0)
    a = build_weather_cnn(4, 256).get_weights()
    tf.keras.utils.set_random_seed(0)
    b = build_weather_cnn(4, 256).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
