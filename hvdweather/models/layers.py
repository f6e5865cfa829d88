"""Keras layers of our own that the model builders share (registered, so checkpoints load after
`import hvdweather.models.weather_cnn`)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="hvdweather")
class StepSeededDropout(tf.keras.layers.Layer):
    """Dropout whose mask is a pure function of (seed, training step), so a resumed run draws the same
    masks as an uninterrupted one.

    Keras's Dropout draws from a stateful kernel whose position is lost when the process ends: after a
    resume its masks differ from the uninterrupted run's. Here the step is a (non-trainable, integer)
    weight of the layer, saved and restored with the others. The seed is drawn once from numpy's RNG
    (seeded by --seed through tf.keras.utils.set_random_seed) and stored in the layer's config.
    `noise_shape` as Keras's Dropout: (None, 1, 1, 1) drops whole images' residual branches (stochastic depth).
    """

    def __init__(self, rate: float, seed: int | None = None, noise_shape: tuple | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = int(np.random.randint(0, 2**31 - 1)) if seed is None else int(seed)

    def build(self, input_shape) -> None:
        # ONLY_FIRST_REPLICA: under MirroredStrategy every replica counts the same step.
        self.step = self.add_weight(name="step", shape=(), dtype=tf.int64, initializer="zeros", trainable=False,
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or self.rate == 0:
            return inputs
        seed = tf.stack([tf.constant(self.seed, tf.int64), self.step.read_value()])
        self.step.assign_add(1)
        noise_shape = None
        if self.noise_shape is not None:  # None entries take the input's size, as in Keras's Dropout
            dims = tf.unstack(tf.shape(inputs))
            noise_shape = tf.stack([d if n is None else n for d, n in zip(dims, self.noise_shape)])
        return tf.nn.experimental.stateless_dropout(inputs, self.rate, seed=seed, noise_shape=noise_shape)

    def get_config(self) -> dict:
        return super().get_config() | {"rate": self.rate, "seed": self.seed, "noise_shape": self.noise_shape}


@tf.keras.utils.register_keras_serializable(package="hvdweather")
class ClassTokenAndPositions(tf.keras.layers.Layer):
    """ViT's learned class token prepended to the patch tokens, plus a learned position embedding for
    every token (initialised as in timm: truncated normal, std 0.02)."""

    def build(self, input_shape) -> None:
        tokens, dim = input_shape[1], input_shape[2]
        def init() -> tf.keras.initializers.Initializer:  # one instance per weight: Keras warns on reuse
            return tf.keras.initializers.TruncatedNormal(stddev=0.02)

        self.class_token = self.add_weight(name="class_token", shape=(1, 1, dim), initializer=init())
        self.positions = self.add_weight(name="positions", shape=(1, tokens + 1, dim), initializer=init())
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(inputs)[0]
        cls = tf.broadcast_to(tf.cast(self.class_token, inputs.dtype), [batch, 1, inputs.shape[-1]])
        return tf.concat([cls, inputs], axis=1) + tf.cast(self.positions, inputs.dtype)
