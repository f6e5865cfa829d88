"""ImageNet-style ResNets with basic blocks (He et al. 2016), as torchvision's resnet18/resnet34:
7x7/2 stem, 3x3/2 max pool, four stages of 64-512 filters, global average pool, a linear head.

Same parameter count as torchvision's (11,182,155 trainable for ResNet-18 with 11 classes): bias-free
convolutions before BatchNorm, a 1x1/2 projection where a stage changes shape. BatchNorm uses PyTorch's
defaults (eps 1e-5, running-average momentum 0.1), so a torchvision recipe carries over.
"""
from __future__ import annotations

import tensorflow as tf

STAGE_FILTERS = (64, 128, 256, 512)
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def _bn(x: tf.Tensor, name: str) -> tf.Tensor:
    return tf.keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def _conv(x: tf.Tensor, filters: int, kernel: int, stride: int, name: str) -> tf.Tensor:
    # Explicit zero padding then 'valid': PyTorch's symmetric padding (Keras 'same' pads right/bottom
    # only at stride 2), so the receptive fields match torchvision's.
    if kernel > 1:
        x = tf.keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return tf.keras.layers.Conv2D(filters, kernel, stride, use_bias=False, name=name)(x)


def _basic_block(x: tf.Tensor, filters: int, stride: int, name: str) -> tf.Tensor:
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(_conv(x, filters, 1, stride, f"{name}_down"), f"{name}_down_bn")
    y = tf.keras.layers.ReLU(name=f"{name}_relu1")(_bn(_conv(x, filters, 3, stride, f"{name}_conv1"), f"{name}_bn1"))
    y = _bn(_conv(y, filters, 3, 1, f"{name}_conv2"), f"{name}_bn2")
    return tf.keras.layers.ReLU(name=f"{name}_out")(tf.keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet(depth_name: str, num_classes: int, image_size: int) -> tf.keras.Model:
    """ResNet-18 or -34 (`depth_name`), logits out; the final Dense is named 'head' (fine-tuning)."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    x = tf.keras.layers.ReLU(name="stem_relu")(_bn(_conv(inputs, 64, 7, 2, "stem_conv"), "stem_bn"))
    x = tf.keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = tf.keras.layers.MaxPooling2D(3, 2, name="stem_pool")(x)
    for stage, (filters, blocks) in enumerate(zip(STAGE_FILTERS, BLOCKS[depth_name]), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{block + 1}")
    x = tf.keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = tf.keras.layers.Dense(num_classes, name="head")(x)
    return tf.keras.Model(inputs, logits, name=depth_name)


def build_resnet18(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_resnet("resnet18", num_classes, image_size)


def build_resnet34(num_classes: int, image_size: int = 224) -> tf.keras.Model:
    return build_resnet("resnet34", num_classes, image_size)
