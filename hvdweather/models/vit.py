"""ViT-Tiny (Dosovitskiy et al. 2021; DeiT-Tiny's size, Touvron et al. 2021): 16-pixel patches embedded
to 192 dimensions, a class token, learned position embeddings, 12 pre-norm transformer blocks of 3 heads
and a 768-wide MLP, a linear head on the class token. About 5.7M parameters at 224 px.

No dropout: DeiT-Tiny trains without it, and any dropout here would have to be StepSeededDropout to keep
--resume exact.
"""
from __future__ import annotations

import tensorflow as tf

from hvdweather.models.layers import ClassTokenAndPositions

PATCH, DIM, DEPTH, HEADS, MLP = 16, 192, 12, 3, 768


def _block(x: tf.Tensor, index: int) -> tf.Tensor:
    name = f"block{index}"
    y = tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    y = tf.keras.layers.MultiHeadAttention(HEADS, DIM // HEADS, name=f"{name}_attn")(y, y)
    x = tf.keras.layers.Add(name=f"{name}_add1")([x, y])
    y = tf.keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    y = tf.keras.layers.Dense(MLP, activation="gelu", name=f"{name}_mlp1")(y)
    y = tf.keras.layers.Dense(DIM, name=f"{name}_mlp2")(y)
    return tf.keras.layers.Add(name=f"{name}_add2")([x, y])


def build_vit_tiny(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    """ViT-Tiny/16, logits out; the final Dense is named 'head' (fine-tuning)."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    x = tf.keras.layers.Conv2D(DIM, PATCH, PATCH, name="patch_embed")(inputs)
    x = tf.keras.layers.Reshape(((image_size // PATCH) ** 2, DIM), name="patches")(x)
    x = ClassTokenAndPositions(name="tokens")(x)
    for index in range(1, DEPTH + 1):
        x = _block(x, index)
    x = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = x[:, 0]  # the class token; a slicing op, not a Lambda, so checkpoints load without this source
    logits = tf.keras.layers.Dense(num_classes, name="head")(x)
    return tf.keras.Model(inputs, logits, name="vit_tiny")

