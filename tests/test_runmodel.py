"""predict's, evaluate's and export's checks (hvdweather/evaluate/runmodel.py) come before TensorFlow loads: a wrong
MODEL, RUN_DIR, IMAGES, --top-k or --out is one line, exit 2, in well under a second. Proven to fail
against the code before the move (the probe printed True: the commands imported predict.py, and
TensorFlow with it, 3-9 s, before their first check)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hvdweather.errors import DataError
from hvdweather.evaluate.runmodel import check_run_dir, resolve_model

_PROBE = """
import sys
from hvdweather import cli
code = cli.run_command(getattr(cli, sys.argv[1] + "_command"), "hvdweather-" + sys.argv[1], sys.argv[2:])
print(code, "tensorflow" in sys.modules)
"""


def _refused(command: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", _PROBE, command, *args], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"hvdweather-{command}: error: "), result.stderr
    return lines[0]


@pytest.fixture()
def fake_run(tmp_path) -> Path:
    """What the checks read of a run: config.json's class names and size, a best.keras file (not opened)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"class_names": ["fogsmog", "rainbow", "snow"],
                                                 "config": {"image_size": 64, "per_worker_batch_size": 8}}))
    (run / "best.keras").write_bytes(b"")
    return run


def test_a_run_directory_resolves_to_its_checkpoint_and_facts(fake_run):
    model = resolve_model(fake_run)
    assert (model.checkpoint, model.class_names, model.image_size, model.per_worker_batch_size) == (
        fake_run / "best.keras", ("fogsmog", "rainbow", "snow"), 64, 8)
    assert resolve_model(fake_run / "best.keras") == model
    with pytest.raises(DataError, match="no last.keras in it"):
        check_run_dir(fake_run, "last")
    with pytest.raises(DataError, match="not a directory"):
        check_run_dir(fake_run / "best.keras")
    record = json.loads((fake_run / "config.json").read_text())
    del record["config"]["per_worker_batch_size"]  # a config.json from before the batch was per worker
    (fake_run / "config.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="has no class_names, image_size or per_worker_batch_size"):
        resolve_model(fake_run)


@pytest.mark.timeout(300)
def test_inference_errors_come_before_tensorflow_loads(fake_run, tmp_path):
    assert "RUN_DIR /nonexistent: not found" in _refused("evaluate", "/nonexistent")
    assert "not a directory" in _refused("evaluate", str(fake_run / "best.keras"))
    assert "no last.keras in it" in _refused("export", str(fake_run), "--out", str(tmp_path / "e"), "--checkpoint",
                                             "last")
    assert "MODEL /nonexistent: not found" in _refused("predict", "/nonexistent", str(tmp_path))
    assert "IMAGES /nonexistent: not found" in _refused("predict", str(fake_run), "/nonexistent")
    assert "--top-k 4: the model knows 3 classes; pass 1 to 3" in _refused("predict", str(fake_run), str(tmp_path),
                                                                           "--top-k", "4")
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    assert "--out" in _refused("predict", str(fake_run), str(image), "--out", str(tmp_path), "--top-k", "1")
