"""EfficientNet-Lite0 in Keras, laid out so the ImageNet weights of the PyTorch port load into it.

Lite0 is EfficientNet-B0 made for integer hardware: ReLU6 instead of swish, no squeeze-excite, and a
stem and head that are not scaled. Each layer is named after its PyTorch module (`_blocks.3._bn1` ->
`blocks_3_bn1`), so converting a state dict is one loop over names. PyTorch's port pads like
TensorFlow's "same" (the extra row and column at the bottom and right), so "same" here gives the same
numbers; BatchNorm momentum 0.99 and epsilon 1e-3 are the PyTorch module's 0.01 and 1e-3.

The model takes [0, 1] pixels (the pipeline's scale) and rescales them to Lite's training input,
(uint8 - 127) / 128, so a user feeds it what every other zoo model takes.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from hvdweather.errors import ConfigError
from hvdweather.models.layers import StepSeededDropout

__all__ = ["build_efficientnet_lite0", "load_state_dict"]

# (repeats, kernel, stride, expand ratio, output filters) of Lite0's seven stages; 32 filters enter stage 1.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_BN = {"momentum": 0.99, "epsilon": 1e-3}
_DROP_CONNECT = 0.2  # the largest stochastic-depth rate, reached by the last block
_DROPOUT = 0.2  # before the classifier, as Lite0 was trained


def _conv_bn(x: tf.Tensor, filters: int, kernel: int, stride: int, name: str, bn: str, relu: bool) -> tf.Tensor:
    x = tf.keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
    x = tf.keras.layers.BatchNormalization(**_BN, name=bn)(x)
    return tf.keras.layers.ReLU(6.0)(x) if relu else x


def _block(x: tf.Tensor, index: int, count: int, kernel: int, stride: int, expand: int, filters: int) -> tf.Tensor:
    inputs, name = x, f"blocks_{index}_"
    channels = x.shape[-1] * expand
    if expand != 1:
        x = _conv_bn(x, channels, 1, 1, name + "expand_conv", name + "bn0", relu=True)
    x = tf.keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                        name=name + "depthwise_conv")(x)
    x = tf.keras.layers.BatchNormalization(**_BN, name=name + "bn1")(x)
    x = tf.keras.layers.ReLU(6.0)(x)
    x = _conv_bn(x, filters, 1, 1, name + "project_conv", name + "bn2", relu=False)
    if stride == 1 and inputs.shape[-1] == filters:
        rate = _DROP_CONNECT * index / count
        if rate:  # drops the whole residual branch per image; step-seeded so that a resume is exact
            x = StepSeededDropout(rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = tf.keras.layers.Add(name=name + "add")([x, inputs])
    return x


def _backbone(image_size: int) -> tf.keras.Model:
    """Stem, 16 blocks, head conv and global average pooling: 1280 features per image."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="lite_input")
    x = _conv_bn(inputs, 32, 3, 2, "conv_stem", "bn0", relu=True)
    count, index = sum(stage[0] for stage in _STAGES), 0
    for repeats, kernel, stride, expand, filters in _STAGES:
        for repeat in range(repeats):
            x = _block(x, index, count, kernel, stride if repeat == 0 else 1, expand, filters)
            index += 1
    x = _conv_bn(x, 1280, 1, 1, "conv_head", "bn1", relu=True)
    x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return tf.keras.Model(inputs, x, name="backbone")


def build_efficientnet_lite0(num_classes: int, image_size: int = 224, head_name: str = "head") -> tf.keras.Model:
    """[0, 1] RGB in, logits out; the backbone is one nested model named 'backbone' (as the
    keras.applications models), so fine-tuning freezes it as one. `head_name='fc'` with 1000 classes
    gives the ImageNet classifier whose weights the state dict also holds."""
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    x = tf.keras.layers.Rescaling(255.0 / 128.0, -127.0 / 128.0, name="input_scaling")(inputs)
    x = _backbone(image_size)(x)
    x = StepSeededDropout(_DROPOUT, name="dropout")(x)
    logits = tf.keras.layers.Dense(num_classes, name=head_name)(x)
    return tf.keras.Model(inputs, logits, name="efficientnet_lite0")


def _torch_module(layer_name: str) -> str:
    """`blocks_3_bn1` -> `_blocks.3._bn1`, `conv_stem` -> `_conv_stem`: the PyTorch port's module path."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def _converted(layer: tf.keras.layers.Layer, module: str, state: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """`layer`'s weights from the PyTorch module's tensors, in Keras's layouts."""
    if isinstance(layer, tf.keras.layers.BatchNormalization):
        return [state[f"{module}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]
    weight = state[f"{module}.weight"]
    if isinstance(layer, tf.keras.layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [weight.transpose(2, 3, 0, 1)]
    if isinstance(layer, tf.keras.layers.Conv2D):  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [weight.transpose(2, 3, 1, 0)]
    return [weight.T, state[f"{module}.bias"]]  # Dense: (out, in) -> (in, out)


def load_state_dict(model: tf.keras.Model, state: Mapping[str, np.ndarray], source: str) -> None:
    """Copy a PyTorch EfficientNet-Lite0 state dict into `model`'s backbone (and into its head too when
    that is the 1000-class 'fc'). A missing tensor or a shape that differs is a ConfigError naming `source`."""
    backbone = model.get_layer("backbone")
    kinds = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D, tf.keras.layers.BatchNormalization)
    layers = [layer for layer in backbone.layers if isinstance(layer, kinds)]
    layers += [layer for layer in model.layers if layer.name == "fc"]
    for layer in layers:
        module = _torch_module(layer.name)
        try:
            values = _converted(layer, module, state)
        except KeyError as exc:
            raise ConfigError(f"--weights {source}: no tensor {exc.args[0]}; not an EfficientNet-Lite0 "
                              "state dict") from None
        except ValueError:  # a transpose of a tensor with other dimensions
            values = []
        wanted = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(v.shape) for v in values] != wanted:
            raise ConfigError(f"--weights {source}: {module}'s tensors do not have EfficientNet-Lite0's shapes "
                              f"{wanted}") from None
        layer.set_weights(values)
