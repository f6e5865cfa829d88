"""MobileNetV2 and EfficientNet-B0 from tf.keras.applications, as a backbone (no top) plus our own head.

The backbone is one nested layer named 'backbone', so fine-tuning freezes it as one and --weights
imagenet loads Keras's own ImageNet weights into it. Inputs arrive in [0, 1] (the pipeline's scale);
each builder rescales them to what the network was trained on (MobileNetV2: [-1, 1]; EfficientNet:
[0, 255], it normalises internally), so ImageNet weights see the inputs they expect.
"""
from __future__ import annotations

import tensorflow as tf

from hvdweather.errors import ConfigError


def _backbone(name: str, image_size: int, weights: str | None) -> tf.keras.Model:
    shape = (image_size, image_size, 3)
    make = {"mobilenet_v2": tf.keras.applications.MobileNetV2,
            "efficientnet_b0": tf.keras.applications.EfficientNetB0}[name]
    try:
        backbone = make(include_top=False, weights=weights, input_shape=shape, pooling="avg")
    except Exception as exc:  # urllib/HTTP/socket errors all mean "no download here"
        if weights is None:
            raise
        raise ConfigError(f"--weights imagenet: could not download {name}'s ImageNet weights "
                          f"({exc.__class__.__name__}); on a machine without internet pass --weights PATH "
                          "to a local Keras weights file") from None
    backbone._name = "backbone"  # one stable name whatever the Keras version calls it
    return backbone


def build_application(name: str, num_classes: int, image_size: int, weights: str | None = None) -> tf.keras.Model:
    """`name`'s backbone with global average pooling and a Dense 'head', logits out."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    # What each network was trained on: MobileNetV2 [-1, 1]; EfficientNet [0, 255] (own normalisation).
    scale, offset = (2.0, -1.0) if name == "mobilenet_v2" else (255.0, 0.0)
    x = tf.keras.layers.Rescaling(scale, offset, name="input_scaling")(inputs)
    x = _backbone(name, image_size, weights)(x)
    logits = tf.keras.layers.Dense(num_classes, name="head")(x)
    return tf.keras.Model(inputs, logits, name=name)


def build_mobilenet_v2(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_application("mobilenet_v2", num_classes, image_size)


def build_efficientnet_b0(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_application("efficientnet_b0", num_classes, image_size)
