"""The TF 2.15 oneDNN fusion failure, guarded for every model and every path, with oneDNN forced on
(TF_ENABLE_ONEDNN_OPTS=1, what every console script sets by default).

With oneDNN on, TensorFlow's graph optimiser fuses Conv2D + FusedBatchNorm + activation into one oneDNN op
when the conv has no bias; for tanh that op is not implemented, and the failure comes at run time, only in
inference graphs (evaluate, predict, the test report, the SavedModel), never while training:
"Fusion is not implemented: [FusedBatchNorm,Tanh]". The weather CNN avoids it by keeping the conv bias before
Keras's BatchNormalization + tanh (blocks 2-4) and by its own BatchNormTanh layer on block 1
(hvdweather/models/weather_cnn.py); the zoo's models put ReLU/ReLU6/swish after BatchNorm, or LayerNorm (ViT).

Every model goes through hvdweather-train (one step on the tiny set, validation, the test report),
-evaluate, -predict and -export (tests/scripts/onednn_paths.py, two processes side by side); then one fresh
process, which never imports hvdweather, serves every exported SavedModel a JPEG. Proven to fail:
building the weather CNN's blocks 2-4 with `use_bias=False` makes its train command (the test report)
exit 1 with the fusion error in the traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdweather.geometry import MODEL_GEOMETRY

SCRIPT = Path(__file__).parent / "scripts" / "onednn_paths.py"
# Each model at its smallest input: the paths are what is tested, not the model's accuracy.
SIZES = {name: int(geometry["min_image_size"]) for name, geometry in MODEL_GEOMETRY.items()}
ONEDNN_ON = {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

SERVE_ALL = """
import json, sys
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port
image = open(sys.argv[1], "rb").read()
served = {}
for folder in sys.argv[2:]:
    out = tf.saved_model.load(folder).signatures["serving_default"](image_bytes=tf.constant([image]))
    served[folder] = float(tf.reduce_sum(out["probabilities"]))
print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "served": served,
                  "hvdweather_imported": any(m.startswith("hvdweather") for m in sys.modules)}))
"""


def _run_models(names: list[str], data: Path, root: Path, env: dict) -> subprocess.Popen:
    """One process for `names`, one after another (a TensorFlow import and Horovod start for them all)."""
    return subprocess.Popen([sys.executable, str(SCRIPT), str(data), str(root), *(f"{n}={SIZES[n]}" for n in names)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def paths(tiny_data, tmp_path_factory) -> dict[str, dict]:
    """Per model: the commands' exit codes, its process's stderr and config.json; then the fresh process's
    serving of every SavedModel. The models run in two processes side by side (one thread each)."""
    root = tmp_path_factory.mktemp("onednn")
    env = {**os.environ, **ONEDNN_ON}
    names = list(SIZES)
    procs = [_run_models(names[half::2], tiny_data, root, env) for half in (0, 1)]
    results = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=1500)
        for line in (line for line in stdout.splitlines() if line.startswith('{"model"')):
            found = json.loads(line)
            config = root / found["model"] / "run" / "config.json"
            results[found["model"]] = {"codes": found["codes"], "stderr": stderr[-3000:],
                                       "config": json.loads(config.read_text()) if config.exists() else {}}
        for name in names:
            results.setdefault(name, {"codes": {}, "stderr": stderr[-3000:], "config": {}})
    exports = {name: root / name / "export" / "1" for name in names}
    image = next((tiny_data / "rainbow").glob("*.jpg"))
    fresh = subprocess.run([sys.executable, "-c", SERVE_ALL, str(image), *(str(e) for e in exports.values()
                                                                          if e.is_dir())],
                           capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in fresh.stdout.splitlines() if line.startswith("{")]
    served = json.loads(lines[-1]) if lines else {"stderr": fresh.stderr[-3000:]}
    return {"models": results, "exports": exports, "served": served}


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", list(SIZES))
def test_every_path_runs_with_onednn_forced_on(paths, name):
    result = paths["models"][name]
    expected = {"hvdweather-train": 0, "hvdweather-evaluate": 0, "hvdweather-predict": 0, "hvdweather-export": 0}
    assert result["codes"] == expected, result["stderr"]
    assert "Fusion is not implemented" not in result["stderr"]
    assert result["config"]["onednn"] == "on"  # TensorFlow ran its oneDNN kernels, as asked
    assert result["config"]["onednn_request"]["source"] == "environment"
    served = paths["served"]
    assert served.get("onednn") is True and served.get("hvdweather_imported") is False, served
    assert served["served"][str(paths["exports"][name])] == pytest.approx(1.0, abs=1e-4)  # probabilities sum to 1
