"""Fine-tuning EfficientNet-Lite0 from the packaged ImageNet weights, as users run it: under horovodrun
and under MirroredStrategy, the head first on a frozen backbone, then everything at a lower LR, with
BatchNorm in inference mode throughout (its ImageNet statistics must come out untouched)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import BIN, run_cli
from hvdweather import pretrained

FLAGS = ["--model", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "64", "--epochs", "2",
         "--freeze-backbone-epochs", "1", "--fine-tune-lr-factor", "0.1", "--warmup-epochs", "0",
         "--batch-size", "4", "--optimizer", "adam", "--lr", "0.001", "--verbose", "0"]
LAUNCHES = {"horovodrun": ["horovodrun", "-np", "2", str(BIN / "hvdweather-train")],
            "mirrored": [str(BIN / "hvdweather-train"), "--strategy", "mirrored", "--replicas", "2"]}


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
@pytest.mark.parametrize("launch", list(LAUNCHES))
def test_lite0_fine_tunes_from_imagenet_and_keeps_its_batchnorm_statistics(launch, tiny_data, tmp_path):
    run = tmp_path / "run"
    result = run_cli(*LAUNCHES[launch], "--data", str(tiny_data), "--out", str(run), *FLAGS, timeout=380)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs[1] == pytest.approx(lrs[0] * 0.1)  # the unfreeze at --fine-tune-lr-factor
    model = tf.keras.models.load_model(run / "last.keras", compile=False)
    backbone, state = model.get_layer("backbone"), pretrained.imagenet_state_dict()
    for name, module in (("bn0", "_bn0"), ("blocks_7_bn1", "_blocks.7._bn1"), ("bn1", "_bn1")):
        bn = backbone.get_layer(name)
        np.testing.assert_array_equal(bn.moving_variance.numpy(), state[f"{module}.running_var"], err_msg=name)
        np.testing.assert_array_equal(bn.gamma.numpy(), state[f"{module}.weight"], err_msg=name)
    stem = state["_conv_stem.weight"].transpose(2, 3, 1, 0)
    moved = np.abs(backbone.get_layer("conv_stem").kernel.numpy() - stem).max()
    assert 0 < moved < 0.1, moved  # fine-tuned in epoch 2, gently: still the ImageNet stem
    report = json.loads((run / "report" / "test_metrics.json").read_text())
    assert report["best"]["test_images"] == report["last"]["test_images"] > 0


def test_imagenet_for_a_model_without_local_weights_is_refused_before_any_work(tiny_data, tmp_path):
    result = run_cli(str(BIN / "hvdweather-train"), "--data", str(tiny_data), "--out", str(tmp_path / "run"),
        "--model", "mobilenet_v2", "--weights", "imagenet", timeout=120)
    assert result.returncode == 2
    assert "pip install -e .[pretrained]" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "run").exists()
