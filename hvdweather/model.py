"""Pure model builders: the seeds' weather CNN, ported from PyTorch to Keras, logits out."""
from __future__ import annotations

import tensorflow as tf

# (filters, kernel, pool) per conv block of the seeds' ConvolutionalModel; pool 0 = no pooling.
_BLOCKS = ((6, 4, 5), (16, 5, 2), (32, 8, 4), (120, 4, 0))


def min_image_size() -> int:
    """The smallest square input for which every valid conv and pool still has a pixel to work on."""
    size = 1
    for _, kernel, pool in reversed(_BLOCKS):
        size = size * max(pool, 1) + kernel - 1
    return size


def build_weather_cnn(num_classes: int, image_size: int = 256) -> tf.keras.Model:
    """Conv-BN-tanh-AvgPool x4 -> Dropout -> Dense 84 tanh -> Dense logits (108,517 params at 256/11)."""
    if image_size < min_image_size():
        raise ValueError(f"--image-size {image_size} is too small for the weather CNN: "
                         f"its conv/pool stack needs at least {min_image_size()} pixels")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for filters, kernel, pool in _BLOCKS:
        x = tf.keras.layers.Conv2D(filters, kernel)(x)
        # PyTorch BatchNorm2d defaults: eps 1e-5, running-average momentum 0.1 (Keras: 1 - 0.1).
        x = tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
        x = tf.keras.layers.Activation("tanh")(x)
        if pool:
            x = tf.keras.layers.AveragePooling2D(pool)(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dropout(0.32)(x)
    x = tf.keras.layers.Dense(84, activation="tanh")(x)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="weather_cnn")
