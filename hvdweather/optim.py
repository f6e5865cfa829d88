"""What a training step minimises and how: the optimizer (--optimizer, --momentum, --weight-decay), the
loss (--label-smoothing), per-class loss weights (--class-weights) and the top-k metric (--top-k).

The LR schedule itself is not here: `hvdweather.train.plan.Plan` holds it, and a callback assigns it.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from hvdweather.config import TrainConfig, effective_top_k


def make_optimizer(cfg: TrainConfig, initial_lr: float) -> tf.keras.optimizers.Optimizer:
    """--optimizer with --weight-decay. Keras applies `weight_decay` decoupled (w -= lr x wd x w, as
    AdamW) for every optimizer, so sgd/adam/rmsprop decay the same way adamw does."""
    decay = cfg.weight_decay or None  # None: no decay op in the graph at all
    if cfg.optimizer == "sgd":
        return tf.keras.optimizers.SGD(initial_lr, momentum=cfg.momentum, weight_decay=decay)
    if cfg.optimizer == "adam":
        return tf.keras.optimizers.Adam(initial_lr, weight_decay=decay)
    if cfg.optimizer == "adamw":
        return tf.keras.optimizers.AdamW(initial_lr, weight_decay=cfg.weight_decay)
    return tf.keras.optimizers.RMSprop(initial_lr, momentum=cfg.momentum if cfg.momentum else 0.0,
                                       weight_decay=decay)


@tf.keras.utils.register_keras_serializable(package="hvdweather")
class SmoothedSparseCrossentropy(tf.keras.losses.Loss):
    """Cross-entropy from logits against integer labels with label smoothing (Szegedy et al. 2016):
    the target is 1 - s + s/K on the true class and s/K elsewhere. Keras's sparse loss has no smoothing,
    and one-hot labels in the pipeline would change what every other consumer of it reads."""

    def __init__(self, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        one_hot = tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)
        return tf.keras.losses.categorical_crossentropy(one_hot, y_pred, from_logits=True,
                                                        label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return super().get_config() | {"label_smoothing": self.label_smoothing}


def make_loss(cfg: TrainConfig) -> tf.keras.losses.Loss:
    if cfg.label_smoothing > 0:
        return SmoothedSparseCrossentropy(cfg.label_smoothing)
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced': n / (K x n_c), so every class adds the same total weight to the loss
    (WEAPD's rime has five times rainbow's images). A class absent from training gets weight 1, where
    sklearn.utils.class_weight.compute_class_weight refuses the call; otherwise the two are bit-identical."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    n = counts.sum()
    return {c: float(n / (num_classes * counts[c])) if counts[c] else 1.0 for c in range(num_classes)}


def top_k(cfg: TrainConfig, num_classes: int) -> int:
    """--top-k, or 3 when it is 0 and there are >= 5 classes (0 = no top-k metric)."""
    return effective_top_k(cfg.top_k, num_classes)


def make_metrics(cfg: TrainConfig, num_classes: int) -> list:
    k = top_k(cfg, num_classes)
    extra = [tf.keras.metrics.SparseTopKCategoricalAccuracy(k, name=f"top{k}_accuracy")] if k > 1 else []
    return ["accuracy", *extra]
