"""hvdweather-bench layers: stages from the CNN's geometry, the subprocess environment for --onednn, a
real (tiny) measurement in both frameworks, and the table built from JSON lines."""
from __future__ import annotations

import pytest

from hvdweather.bench.layers import Stage, _child_env, stages
from hvdweather.bench.layers_report import layers_table


def test_stages_follow_the_geometry():
    names = [s.name for s in stages(256)]
    assert names[:3] == ["conv1 4x4 3->6", "BN+tanh 253x253x6", "AvgPool 5 on 253x253x6"]
    assert "conv3 8x8 16->32" in names and names[-1].startswith("whole model")
    by_name = {s.name: s for s in stages(256)}
    assert by_name["conv2 5x5 6->16"].input_hwc == (50, 50, 6)
    assert not by_name["conv1 4x4 3->6"].input_grad and by_name["conv2 5x5 6->16"].input_grad


@pytest.mark.parametrize("option, expected", [("on", "1"), ("off", "0"), ("auto", None)])
def test_onednn_option_sets_the_child_environment(monkeypatch, option, expected):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "x")
    env = _child_env(option)
    assert env.get("TF_ENABLE_ONEDNN_OPTS") == expected
    assert env["OMP_NUM_THREADS"] == "1"
    assert _child_env(None)["TF_ENABLE_ONEDNN_OPTS"] == "x"  # no option: as this environment has it


def test_tensorflow_measures_both_forms():
    from hvdweather.bench.layers import measure_tf

    stage = Stage("BN+tanh 20x20x6", "bn_tanh", (20, 20, 6))
    for form in ("reference", "package"):
        result = measure_tf(stage, form, batch=2, repeats=2)
        assert result["ms"] > 0 and len(result["ms_all"]) == 2


def test_torch_measures_a_conv():
    import torch  # noqa: F401  (make test always installs it: a broken install fails here)

    from hvdweather.bench.layers import measure_torch

    result = measure_torch(Stage("conv2", "conv", (12, 12, 6), filters=16, kernel=5), batch=2, repeats=2)
    assert result["ms"] > 0


def test_table_ratios_come_from_the_rows():
    machine = {"cpu_model": "Test CPU", "cpu_flags": ["avx2"], "batch": 32}
    rows = [{"framework": "tensorflow", "form": "reference", "layer": "conv1", "ms": 30.0, "onednn": False},
            {"framework": "tensorflow", "form": "package", "layer": "conv1", "ms": 20.0, "onednn": False},
            {"framework": "torch", "form": "reference", "layer": "conv1", "ms": 40.0},
            {"framework": "tensorflow", "form": "reference", "layer": "AvgPool 5", "ms": 8.0, "onednn": False}]
    table = layers_table([r | machine for r in rows])
    assert "Test CPU; flags: avx2; TensorFlow oneDNN off" in table
    assert "| conv1 | 30.0 | 20.0 | 1.50x | 40.0 | 2.00x |" in table
    assert "| AvgPool 5 | 8.0 | 8.0 | 1.00x |  |  |" in table


def test_package_form_follows_the_model():
    from hvdweather.bench.layers import _tf_layer
    from hvdweather.models.weather_cnn import BatchNormTanh

    big, small = stages(256)[1], stages(256)[4]  # BN+tanh of blocks 1 and 2
    assert isinstance(_tf_layer(big, "package"), BatchNormTanh)
    assert not isinstance(_tf_layer(small, "package"), BatchNormTanh)
    assert not isinstance(_tf_layer(big, "reference"), BatchNormTanh)
    conv1, conv2 = stages(256)[0], stages(256)[3]
    assert not _tf_layer(conv1, "package").use_bias and _tf_layer(conv2, "package").use_bias
    assert _tf_layer(conv1, "reference").use_bias
