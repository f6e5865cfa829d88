"""Horovod's own options and the model zoo under horovodrun -np 2: gradient accumulation makes the same
update as one large batch, fp16 compression stays within fp16 tolerance, every model trains identically
on both ranks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from hvdweather.geometry import MODEL_GEOMETRY

SCRIPTS = Path(__file__).parent / "scripts"


def _step(out: Path, *args: str, ranks: int) -> dict:
    prefix = ["horovodrun", "-np", str(ranks)] if ranks > 1 else []
    result = run_cli(*prefix, sys.executable, str(SCRIPTS / "accumulated_step.py"), str(out), *args, timeout=150)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(np.load(out))


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_backward_passes_at_half_batch_equal_one_full_batch_and_fp16_is_close(tmp_path):
    everything = ",".join(OPTIMIZERS)
    full = _step(tmp_path / "full.npz", "1", everything, ranks=1)
    accumulated = _step(tmp_path / "acc.npz", "2", everything, ranks=2)  # 2 ranks x 2 passes x batch 2 = 8
    fp16 = _step(tmp_path / "fp16.npz", "1", "sgd", "fp16", ranks=2)
    for name in OPTIMIZERS:  # two updates each: Adam's bias correction counts updates, not passes
        assert full[f"{name}_iterations"] == accumulated[f"{name}_iterations"] == 2, name
        weights = [key for key in full if key.startswith(f"{name}_") and key != f"{name}_iterations"]
        assert len(weights) == 4
        for key in weights:
            assert not np.allclose(full[key], 0)
            np.testing.assert_allclose(accumulated[key], full[key], atol=1e-5, rtol=0, err_msg=key)
    for key in (k for k in fp16 if k != "sgd_iterations"):
        np.testing.assert_allclose(fp16[key], full[key], atol=1e-3, rtol=0)  # fp16's ~3 decimal digits


@pytest.mark.multiprocess
@pytest.mark.timeout(580)
def test_every_model_trains_identically_on_two_ranks_and_reloads(tmp_path):
    out = tmp_path / "zoo.json"
    result = run_cli("horovodrun", "-np", "2", sys.executable, str(SCRIPTS / "zoo_step.py"), str(out), timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) == set(MODEL_GEOMETRY)
    assert all(r == {"ranks_equal": True, "reload_equal": True} for r in report.values()), report
