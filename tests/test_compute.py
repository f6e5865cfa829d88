"""hvdweather.bench.compute: FLOPs per image against hand counts, the matmul rate, and the scaling tables'
achieved GFLOP/s and share of it."""
from __future__ import annotations

import pytest

from hvdweather.bench.compute import einsum_flops, measure_matmul
from hvdweather.bench.scaling_report import compute_columns, compute_tables
from hvdweather.geometry import WEATHER_CNN_BLOCKS


def _tiny_conv_model(bias: bool):
    import tensorflow as tf

    inputs = tf.keras.Input((10, 10, 3))
    x = tf.keras.layers.Conv2D(4, 3, use_bias=bias)(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(5)(tf.keras.layers.Flatten()(x)))


def test_one_conv_and_one_dense_layer_match_the_hand_count():
    """Conv 3x3, 3 -> 4 channels on 10x10: 8x8x4 outputs of 27 multiply-adds; Dense 256 -> 5; biases one
    add per output. Proven to fail: tracing at batch 2 instead of 1 doubles every count."""
    from hvdweather.bench.compute import forward_flops

    conv, dense = 2 * 8 * 8 * 4 * 3 * 3 * 3, 2 * 8 * 8 * 4 * 5
    assert forward_flops(_tiny_conv_model(bias=False)) == conv + dense + 5
    assert forward_flops(_tiny_conv_model(bias=True)) == conv + 8 * 8 * 4 + dense + 5


def test_weather_cnn_counts_as_its_convs_and_dense_layers():
    """The weather CNN at 256 px, 11 classes: within 3% of the hand count of its convs and dense layers
    (2 x multiply-adds); the rest is biases, BatchNorm, tanh and pooling, which the hand count leaves out."""
    from hvdweather.bench.compute import model_flops

    size, channels, hand = 256, 3, 0
    for filters, kernel, pool in WEATHER_CNN_BLOCKS:
        size -= kernel - 1
        hand += 2 * size * size * filters * kernel * kernel * channels
        size, channels = size // max(pool, 1), filters
    hand += 2 * (channels * size * size * 84 + 84 * 11)
    counted = model_flops("weather_cnn", 256, 11)
    assert counted["forward_flops"] == pytest.approx(hand, rel=0.03)
    assert counted["forward_flops"] >= hand
    assert counted["train_flops_per_image"] == 3 * counted["forward_flops"]


def test_einsum_flops_by_hand():
    """The profiler does not count Einsum (ViT's attention): 2 x the product of every index's size."""
    assert einsum_flops("abc,cd->abd", [[2, 3, 4], [4, 5]]) == 2 * 2 * 3 * 4 * 5
    assert einsum_flops("aecd,abcd->acbe", [[1, 7, 3, 8], [1, 7, 3, 8]]) == 2 * 1 * 7 * 7 * 3 * 8
    assert einsum_flops("...c,cd->...d", [[2, 6, 4], [4, 5]]) == 2 * 2 * 6 * 4 * 5
    assert einsum_flops("abc->acb", [[2, 3, 4]]) == 0


def test_matmul_rate_is_measured_per_thread_count():
    rates = measure_matmul([1, 1])
    assert list(rates) == ["1"] and rates["1"] > 0


MACHINE = {"model_flops": {"model": "weather_cnn", "image_size": 256, "classes": 11, "forward_flops": 64e6,
                           "train_flops_per_image": 192e6, "method": "profiler"},
           "matmul_gflops": {"1": 50.0, "2": 100.0}, "matmul_method": "numpy"}


def test_achieved_gflops_and_share_of_the_matmul_rate_per_row():
    row = {"status": "ok", "images_per_s": 200.0, "total_threads": 2}
    derived = compute_columns(row, MACHINE)
    assert derived["achieved_gflops"] == pytest.approx(38.4)  # 192 MFLOP x 200 images/s
    assert derived["matmul_gflops"] == 100.0 and derived["of_matmul"] == pytest.approx(0.384)
    assert compute_columns({"status": "failed", "total_threads": 1}, MACHINE)["achieved_gflops"] is None
    assert compute_columns(row, {})["of_matmul"] is None  # --no-compute, or an old record


def test_compute_tables_only_when_measured():
    rows = [{"run": "horovod-w2-b32", "strategy": "horovod", "workers": 2, "per_worker_batch_size": 32,
             "threads_per_worker": 1, "status": "ok", **compute_columns({"images_per_s": 200.0, "total_threads": 2},
                                                                        MACHINE)}]
    text = "\n".join(compute_tables(rows, MACHINE))
    assert "0.192 GFLOP per training image" in text and "| horovod x 2 | 38.4 |" in text
    assert "| horovod x 2 | 0.38 |" in text and "100 on 2 thread(s)" in text
    assert compute_tables(rows, {}) == []
