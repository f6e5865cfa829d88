"""Pure model builders: the reference PyTorch weather project's CNN in Keras, logits out.

Every speed choice sits in `build_weather_cnn` and `BatchNormTanh`, each with the gain it measured
(`hvdweather-bench layers`, one thread, batch 32, forward + backward; docs/benchmarks.md, "Speed vs
PyTorch DDP"). The function class is the reference's: Conv -> BatchNorm -> tanh -> AvgPool x 4 ->
Dropout -> Dense 84 tanh -> Dense.
"""
from __future__ import annotations

import os

import tensorflow as tf

from hvdweather.geometry import WEATHER_CNN_BLOCKS, WEATHER_CNN_MIN_IMAGE_SIZE
from hvdweather.models.layers import StepSeededDropout


def use_fast_cpu_allocator() -> None:
    """Give TensorFlow's CPU tensors a caching (BFC) allocator unless the environment chose; call before
    the first TensorFlow op (TF reads it when it first allocates, so after `import tensorflow` is fine).

    Without oneDNN (TF_ENABLE_ONEDNN_OPTS=0, and by default on AVX2-only CPUs) TF takes every tensor from
    malloc: block 1's 49 MB activations are mmap'd and page-faulted afresh each step. With BFC the
    BatchNorm+tanh of block 1 ran 1.7x faster (Keras's layer 1.3-1.8x too). With oneDNN on, TF already
    uses its own caching allocator and ignores this.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")


def _rows(x: tf.Tensor) -> tf.Tensor:
    """NHWC as rows of W*C values, reshaped outside XLA (free there; inside XLA the reshape back cost a
    copy, +17 ms on block 1). XLA vectorises along the long rows: with the 6 channels of block 1 as
    the minor dimension its broadcasts ran ~1.3x slower."""
    return tf.reshape(x, [-1, x.shape[-2] * x.shape[-1]])


def _per_column(v: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """A per-channel vector repeated for every pixel of a row of `_rows(x)`."""
    return tf.tile(v, [rows.shape[-1] // v.shape[0]])


def _channel_sums(rows: tf.Tensor, channels: int) -> tf.Tensor:
    """Per-channel sums of `_rows(x)`: down the rows first (vectorised), then over one row's pixels."""
    return tf.reduce_sum(tf.reshape(tf.reduce_sum(rows, 0), [-1, channels]), 0)


# XLA compiles these four small functions only, on `_rows` views: per-channel statistics, then one
# elementwise pass, for the forward and for the backward of BatchNorm + tanh. Never put AvgPool (or the
# whole model) under jit_compile: XLA spent over 6 minutes constant-folding an AvgPool gradient once,
# and the whole CNN jitted was ~3x slower.
@tf.function(jit_compile=True)
def _moments(rows: tf.Tensor, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
    count = tf.cast(tf.shape(rows)[0] * (rows.shape[-1] // channels), rows.dtype)
    mean = _channel_sums(rows, channels) / count
    centred = rows - _per_column(mean, rows)
    return mean, _channel_sums(centred * centred, channels) / count  # two-pass: no E[x^2]-mean^2 cancellation


@tf.function(jit_compile=True)
def _scale_shift_tanh(rows: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    return tf.tanh(rows * _per_column(scale, rows) + _per_column(shift, rows))


@tf.function(jit_compile=True)
def _grad_sums(rows, y, dy, mean, inv_std):
    """d_beta and d_gamma of tanh(BN(x)): per-channel sums of g and g * x_hat, g = dy * tanh'."""
    g = dy * (1.0 - tf.square(y))
    x_hat = (rows - _per_column(mean, rows)) * _per_column(inv_std, rows)
    return _channel_sums(g, mean.shape[0]), _channel_sums(g * x_hat, mean.shape[0])


@tf.function(jit_compile=True)
def _grad_input(rows, y, dy, mean, inv_std, gamma, d_beta, d_gamma):
    """d_x of tanh(BN(x)) in training mode (batch statistics), in closed form: one elementwise pass."""
    count = tf.cast(tf.size(rows) // mean.shape[0], rows.dtype)
    g = dy * (1.0 - tf.square(y))
    x_hat = (rows - _per_column(mean, rows)) * _per_column(inv_std, rows)
    return _per_column(gamma * inv_std, rows) * (g - _per_column(d_beta / count, rows)
                                                 - x_hat * _per_column(d_gamma / count, rows))


def _bn_tanh_train(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float):
    """tanh(BatchNorm(x)) with batch statistics; returns (output, batch mean, batch variance)."""
    mean, variance = _moments(_rows(x), x.shape[-1])
    inv_std = tf.math.rsqrt(variance + epsilon)

    @tf.custom_gradient
    def bn_tanh(x, gamma, beta):
        scale = gamma * inv_std
        rows, y = _rows(x), _scale_shift_tanh(_rows(x), scale, beta - mean * scale)

        def grad(dy):
            d_beta, d_gamma = _grad_sums(rows, y, _rows(dy), mean, inv_std)
            d_x = _grad_input(rows, y, _rows(dy), mean, inv_std, gamma, d_beta, d_gamma)
            return tf.reshape(d_x, tf.shape(x)), d_gamma, d_beta

        return tf.reshape(y, tf.shape(x)), grad

    return bn_tanh(x, gamma, beta), mean, variance


def _bn_tanh_infer(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, mean: tf.Tensor, variance: tf.Tensor,
                   epsilon: float) -> tf.Tensor:
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    return tf.reshape(_scale_shift_tanh(_rows(x), scale, beta - mean * scale), tf.shape(x))


@tf.keras.utils.register_keras_serializable(package="hvdweather")
class BatchNormTanh(tf.keras.layers.Layer):
    """BatchNormalization then tanh, as one XLA-compiled kernel (channels last).

    Same maths and variables as `BatchNormalization(epsilon, momentum)` + `Activation("tanh")`:
    gamma/beta trainable, moving mean/variance not (so Horovod's BN-statistics averaging sees them).
    """

    def __init__(self, epsilon: float = 1e-5, momentum: float = 0.9, **kwargs):
        # Under mixed_bfloat16 (--precision bfloat16) the statistics stay float32: a bfloat16 sum over
        # 253x253 pixels would keep 8 bits. So Keras casts neither the inputs (autocast) nor the variables
        # (build); `call` casts the input up and the output back to the layer's compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)

    def build(self, input_shape) -> None:
        channels = (int(input_shape[-1]),)
        float32 = {"experimental_autocast": False}  # read as float32 under mixed_bfloat16 too (see __init__)
        self.gamma = self.add_weight(name="gamma", shape=channels, initializer="ones", **float32)
        self.beta = self.add_weight(name="beta", shape=channels, initializer="zeros", **float32)
        # As Keras's BatchNormalization: under MirroredStrategy each replica updates its own copy of the
        # moving statistics, and reads (evaluate, checkpoints) average the replicas.
        moving = {"trainable": False, "synchronization": tf.VariableSynchronization.ON_READ,
                  "aggregation": tf.VariableAggregation.MEAN, **float32}
        self.moving_mean = self.add_weight(name="moving_mean", shape=channels, initializer="zeros", **moving)
        self.moving_variance = self.add_weight(name="moving_variance", shape=channels, initializer="ones",
                                               **moving)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)  # no op in float32 runs
        if not training:  # Keras passes a Python bool from fit/evaluate/predict
            return tf.cast(_bn_tanh_infer(x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                                          self.epsilon), self.compute_dtype)
        outputs, mean, variance = _bn_tanh_train(x, self.gamma, self.beta, self.epsilon)
        count = tf.cast(tf.size(x) // x.shape[-1], variance.dtype)
        unbiased = variance * count / tf.maximum(count - 1.0, 1.0)  # as Keras's and PyTorch's moving variance
        self.moving_mean.assign(self.momentum * self.moving_mean + (1.0 - self.momentum) * mean)
        self.moving_variance.assign(self.momentum * self.moving_variance + (1.0 - self.momentum) * unbiased)
        return tf.cast(outputs, self.compute_dtype)

    def get_config(self) -> dict:
        return super().get_config() | {"epsilon": self.epsilon, "momentum": self.momentum}


# BatchNormTanh (XLA) on a block's activations when they have at least this many pixels per channel:
# block 1 at 256 px (253x253x6) only. There it measured 1.43x faster than Keras's BN + tanh (oneDNN on,
# forward + backward; 1.7x with oneDNN off and `use_fast_cpu_allocator`); on block 2 (46x46x16) it was
# 0.27x: four XLA launches cost more than the work.
_XLA_BN_MIN_PIXELS = 128 * 128


def fuses_bn_tanh(height: int, width: int) -> bool:
    """Whether the block whose conv outputs height x width pixels uses BatchNormTanh (and no conv bias)."""
    return height * width >= _XLA_BN_MIN_PIXELS


def build_weather_cnn(num_classes: int, image_size: int = 256) -> tf.keras.Model:
    """Conv-BN-tanh-AvgPool x4 -> Dropout -> Dense 84 tanh -> Dense logits.

    108,511 trainable parameters at 256 px / 11 classes: the reference's 108,517 less conv1's 6 biases,
    which BatchNorm's mean subtraction cancels (their gradient is zero).
    """
    if image_size < WEATHER_CNN_MIN_IMAGE_SIZE:
        raise ValueError(f"--image-size {image_size} is too small for the weather CNN: "
                         f"its conv/pool stack needs at least {WEATHER_CNN_MIN_IMAGE_SIZE} pixels")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for filters, kernel, pool in WEATHER_CNN_BLOCKS:
        side = x.shape[1] - kernel + 1
        fused = fuses_bn_tanh(side, side)
        # No conv bias before BatchNormTanh: BatchNorm subtracts the batch mean, so a bias would be trained
        # to nothing (conv1 fwd+bwd 1.04-1.29x without). Blocks 2-4 keep theirs: a bias-free Conv2D before
        # Keras's BatchNormalization + tanh is fused by TF 2.15's graph optimiser into one oneDNN op that
        # fails at run time ("Fusion is not implemented: [FusedBatchNorm,Tanh]", evaluate/predict).
        x = tf.keras.layers.Conv2D(filters, kernel, use_bias=not fused)(x)
        # PyTorch BatchNorm2d defaults: eps 1e-5, running-average momentum 0.1 (Keras: 1 - 0.1).
        if fused:
            x = BatchNormTanh(epsilon=1e-5, momentum=0.9)(x)
        else:
            x = tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
            x = tf.keras.layers.Activation("tanh")(x)
        if pool:
            x = tf.keras.layers.AveragePooling2D(pool)(x)
    x = tf.keras.layers.Flatten()(x)
    x = StepSeededDropout(0.32)(x)  # masks a function of (seed, step): exact resume (hvdweather.resume)
    x = tf.keras.layers.Dense(84, activation="tanh")(x)
    logits = tf.keras.layers.Dense(num_classes, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="weather_cnn")
