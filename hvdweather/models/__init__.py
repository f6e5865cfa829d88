"""The model zoo: one registry from --model names to pure builders (num_classes, image_size) -> logits,
and `create_model`, the one factory training uses (input normalisation, --weights, fine-tuning).

Geometry (minimum/default image sizes) lives TensorFlow-free in `hvdweather.geometry.MODEL_GEOMETRY`,
so config validation answers before TensorFlow loads; this package imports TensorFlow.

    hvdweather-train --model resnet18 --image-size 64 --data DIR --out RUN
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tensorflow as tf

from hvdweather import pretrained
from hvdweather.errors import ConfigError
from hvdweather.geometry import MODEL_GEOMETRY
from hvdweather.models.applications import build_efficientnet_b0, build_mobilenet_v2
from hvdweather.models.efficientnet_lite import build_efficientnet_lite0, load_state_dict
from hvdweather.models.resnet import build_resnet18, build_resnet34
from hvdweather.models.vit import build_vit_tiny
from hvdweather.models.weather_cnn import build_weather_cnn

__all__ = ["MODELS", "ModelEntry", "apply_precision", "create_model", "load_weights_file", "reorder_weights",
           "set_backbone_trainable"]


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[[int, int], tf.keras.Model]  # pure: (num_classes, image_size) -> logits
    min_image_size: int
    default_image_size: int


_BUILDERS: dict[str, Callable[[int, int], tf.keras.Model]] = {
    "weather_cnn": build_weather_cnn, "resnet18": build_resnet18, "resnet34": build_resnet34,
    "mobilenet_v2": build_mobilenet_v2, "efficientnet_b0": build_efficientnet_b0,
    "efficientnet_lite0": build_efficientnet_lite0, "vit_tiny": build_vit_tiny}
MODELS: dict[str, ModelEntry] = {
    name: ModelEntry(build, int(MODEL_GEOMETRY[name]["min_image_size"]),
                     int(MODEL_GEOMETRY[name]["default_image_size"]))
    for name, build in _BUILDERS.items()}
# The final Dense of each builder: the weather CNN calls it 'logits', the zoo's builders 'head'.
HEAD_NAMES = ("head", "logits")


def _build(name: str, num_classes: int, image_size: int, weights: str) -> tf.keras.Model:
    if name not in MODELS:
        raise ConfigError(f"--model {name!r} is unknown; choose from {', '.join(MODELS)}")
    model = MODELS[name].build(num_classes, image_size)
    if weights == "imagenet" or weights.endswith(".pth"):  # config validation allows both for Lite0 only
        state = pretrained.imagenet_state_dict() if weights == "imagenet" else pretrained.pth_state_dict(weights)
        load_state_dict(model, state, weights)
    return model


# Keras's policy per --precision (config.resolve_precision): mixed_bfloat16 computes in bfloat16 and keeps
# the variables in float32; the optimizer updates float32 weights, so no loss scaling (that is for float16).
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def apply_precision(precision: str) -> None:
    """Make `precision` (float32 or bfloat16) the process's Keras policy: every layer built afterwards
    computes in it. Training calls it once, before building the model; checkpoints keep each layer's
    policy, so predict, evaluate and export load a model as it was trained."""
    tf.keras.mixed_precision.set_global_policy(POLICIES[precision])


def _float32_logits(model: tf.keras.Model) -> tf.keras.Model:
    """Under a mixed policy, the logits (and so softmax and the loss) in float32: bfloat16's 8-bit
    mantissa would round the loss and the probabilities (Keras's mixed-precision guide does the same)."""
    if model.output.dtype == tf.float32:
        return model
    logits = tf.keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return tf.keras.Model(model.inputs, logits, name=model.name)


def create_model(name: str, num_classes: int, image_size: int, weights: str = "none",
                 normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> tf.keras.Model:
    """The --model network, with --weights loaded and, when `normalization` = (mean, std) per channel
    is given, a fixed Normalization layer in front: it is saved with the model, so predict and export
    (which feed [0, 1] pixels) need not know how the run normalised. Built in the process's Keras
    policy (`apply_precision`), with float32 logits."""
    model = _build(name, num_classes, image_size, weights)
    if weights not in ("none", "imagenet") and not weights.endswith(".pth"):
        load_weights_file(model, weights)
    if normalization is None:
        return _float32_logits(model)
    mean, std = normalization
    inputs = tf.keras.Input((image_size, image_size, 3), name="image")
    scaled = tf.keras.layers.Normalization(mean=list(mean), variance=[s * s for s in std],
                                           name="input_normalization")(inputs)
    return _float32_logits(tf.keras.Model(inputs, model(scaled), name=model.name))


def _leaf_layers(model: tf.keras.Model) -> dict[str, tf.keras.layers.Layer]:
    """Every layer by name, descending into nested models (applications' backbone)."""
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, tf.keras.Model):
            found.update({f"{layer.name}/{k}": v for k, v in _leaf_layers(layer).items()})
    return found


def load_weights_file(model: tf.keras.Model, path: str) -> None:
    """--weights PATH: a .weights.h5/.h5 file of this very architecture, or a .keras model whose layers
    are copied by name where the shapes agree (a checkpoint with another head still gives its backbone)."""
    if path.endswith(".keras"):
        source = _leaf_layers(tf.keras.models.load_model(path, compile=False))
        copied = 0
        for name, layer in _leaf_layers(model).items():
            theirs = source.get(name)
            ours_w = layer.get_weights()
            if theirs is None or isinstance(layer, tf.keras.Model) or not ours_w:
                continue
            if [w.shape for w in ours_w] == [w.shape for w in theirs.get_weights()]:
                layer.set_weights(theirs.get_weights())
                copied += 1
        if not copied:
            raise ConfigError(f"--weights {path}: no layer of it matches {model.name}'s by name and shape")
        return
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"--weights {path}: does not fit {model.name} with this --image-size and class count "
                          f"({str(exc).splitlines()[0][:120]}); a .keras checkpoint loads all but a differing head"
                          ) from None


def set_backbone_trainable(model: tf.keras.Model, trainable: bool) -> None:
    """Freeze (False) or unfreeze everything but the head, for --freeze-backbone-epochs. Keras 2 runs a
    BatchNormalization whose `trainable` is False in inference mode, so a frozen backbone's statistics
    stay as loaded; BatchNorm stays frozen after the unfreeze too (Keras's transfer-learning guide):
    statistics of 16 images per worker would wash out the pretrained ones, and on MWD the training
    accuracy fell from 0.90 to 0.71 in the epoch the backbone's BatchNorm began training. Recompile
    after calling: fit's step is traced for one trainable set."""
    for name, layer in _leaf_layers(model).items():
        if isinstance(layer, tf.keras.Model):
            continue  # a nested model's own flag would override its layers'; set them one by one
        batchnorm = isinstance(layer, tf.keras.layers.BatchNormalization)
        layer.trainable = (trainable and not batchnorm) or name.split("/")[-1] in HEAD_NAMES


def reorder_weights(values: list, old_order: list[tf.Variable], new_order: list[tf.Variable]) -> list:
    """`values` listed as `old_order` lists the variables, put in `new_order`'s order: Keras lists
    trainable weights first, so freezing or unfreezing reorders `model.weights`/`get_weights()`."""
    position = {variable.ref(): index for index, variable in enumerate(old_order)}
    return [values[position[variable.ref()]] for variable in new_order]
