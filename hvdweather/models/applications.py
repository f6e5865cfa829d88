"""MobileNetV2 and EfficientNet-B0 from tf.keras.applications, as a backbone (no top) plus our own head.

The backbone is one nested layer named 'backbone', so fine-tuning freezes it as one. Keras's ImageNet
weights for these come only by download, so they are not offered (efficientnet_lite0 has them offline;
a local Keras weights file loads with --weights PATH). Inputs arrive in [0, 1] (the pipeline's scale);
each builder rescales them to what the network was trained on (MobileNetV2: [-1, 1]; EfficientNet:
[0, 255], it normalises internally), as ImageNet-trained weights expect.
"""
from __future__ import annotations

import tensorflow as tf


def _backbone(name: str, image_size: int) -> tf.keras.Model:
    make = {"mobilenet_v2": tf.keras.applications.MobileNetV2,
            "efficientnet_b0": tf.keras.applications.EfficientNetB0}[name]
    backbone = make(include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg")
    backbone._name = "backbone"  # one stable name whatever the Keras version calls it
    return backbone


def build_application(name: str, num_classes: int, image_size: int) -> tf.keras.Model:
    """`name`'s backbone with global average pooling and a Dense 'head', logits out."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    # What each network was trained on: MobileNetV2 [-1, 1]; EfficientNet [0, 255] (own normalisation).
    scale, offset = (2.0, -1.0) if name == "mobilenet_v2" else (255.0, 0.0)
    x = tf.keras.layers.Rescaling(scale, offset, name="input_scaling")(inputs)
    x = _backbone(name, image_size)(x)
    logits = tf.keras.layers.Dense(num_classes, name="head")(x)
    return tf.keras.Model(inputs, logits, name=name)


def build_mobilenet_v2(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_application("mobilenet_v2", num_classes, image_size)


def build_efficientnet_b0(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_application("efficientnet_b0", num_classes, image_size)
