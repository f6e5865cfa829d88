"""The Keras EfficientNet-Lite0 with the packaged ImageNet weights computes what the PyTorch original does."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import tensorflow as tf
import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from sklearn.datasets import load_sample_image

from hvdweather import pretrained
from hvdweather.errors import ConfigError
from hvdweather.models import create_model
from hvdweather.models.efficientnet_lite import build_efficientnet_lite0, load_state_dict

# float32 logits of magnitude up to ~10 after 16 blocks, summed in another order than PyTorch's kernels
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def networks() -> tuple[torch.nn.Module, tf.keras.Model]:
    path = str(pretrained.packaged_lite0())
    torch_net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    torch_net.eval()
    keras_net = build_efficientnet_lite0(1000, 224, head_name="fc")
    load_state_dict(keras_net, pretrained.imagenet_state_dict(), path)
    return torch_net, keras_net


def _logits(networks, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both networks on uint8 NHWC images: PyTorch with Lite's (x - 127) / 128, Keras on [0, 1] pixels."""
    torch_net, keras_net = networks
    with torch.no_grad():
        theirs = torch_net(torch.from_numpy((images.astype(np.float32) - 127) / 128).permute(0, 3, 1, 2)).numpy()
    ours = keras_net(images.astype(np.float32) / 255, training=False).numpy()
    return theirs, ours


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.fromarray(load_sample_image(name)).resize((224, 224), Image.BILINEAR))


def test_imagenet_logits_equal_pytorchs_on_random_images(networks):
    images = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    theirs, ours = _logits(networks, images)
    assert np.abs(theirs).max() > 1  # logits, not zeros: the comparison means something
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)


def test_real_photos_get_the_same_top5_and_the_right_classes(networks):
    theirs, ours = _logits(networks, np.stack([_photo("flower.jpg"), _photo("china.jpg")]))
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)
    top5 = np.argsort(-ours, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-theirs, axis=1)[:, :5])
    assert top5[0, 0] == 985  # daisy
    assert top5[1, 0] in (442, 449, 663, 698)  # bell cote, boathouse, monastery, palace


def _no_network(*args, **kwargs):
    raise AssertionError("a network connection was attempted: ImageNet weights must come from the package")


def test_imagenet_weights_fill_the_backbone_and_leave_a_fresh_head(monkeypatch):
    """With every socket connection failing, so nothing can be downloaded on the way."""
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    model = create_model("efficientnet_lite0", 4, 64, weights="imagenet")
    state = pretrained.imagenet_state_dict()
    stem = model.get_layer("backbone").get_layer("conv_stem").kernel.numpy()
    np.testing.assert_array_equal(stem, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    moving_var = model.get_layer("backbone").get_layer("blocks_15_bn2").moving_variance.numpy()
    np.testing.assert_array_equal(moving_var, state["_blocks.15._bn2.running_var"])
    assert model.get_layer("head").kernel.shape == (1280, 4)
    assert model.output_shape == (None, 4)


def test_a_pth_with_other_shapes_is_one_line(tmp_path):
    state = pretrained.imagenet_state_dict()
    state["_conv_head.weight"] = state["_conv_head.weight"][:640]
    with pytest.raises(ConfigError, match=r"--weights x.pth: _conv_head's tensors do not have .*shapes") as info:
        load_state_dict(build_efficientnet_lite0(4, 32), state, "x.pth")
    assert "\n" not in str(info.value)
    del state["_blocks.3._bn1.bias"]
    with pytest.raises(ConfigError, match=r"no tensor _blocks.3._bn1.bias; not an EfficientNet-Lite0"):
        load_state_dict(build_efficientnet_lite0(4, 32), state, "x.pth")
