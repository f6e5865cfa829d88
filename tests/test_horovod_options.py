"""Horovod's own options and the model zoo under horovodrun -np 2: gradient accumulation makes the same
update as one large batch, fp16 compression stays within fp16 tolerance, every model trains identically
on both ranks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, run_cli
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
    """Accumulation: every optimizer's two updates equal one process's to 1e-5, and move every weight
    from its initial value. fp16: run with accumulated's very decomposition (2 ranks x 2 passes), whose
    fp32 run is deterministic, so compression shows as a difference > 0, yet within fp16's ~3 digits of
    the fp32 result. Checked once with compression ignored (wrap_optimizer always Compression.none): the
    difference was exactly 0 and this test failed."""
    everything = ",".join(OPTIMIZERS)
    full = _step(tmp_path / "full.npz", "1", everything, ranks=1)
    accumulated = _step(tmp_path / "acc.npz", "2", everything, ranks=2)  # 2 ranks x 2 passes x batch 2 = 8
    fp16 = _step(tmp_path / "fp16.npz", "2", "sgd", "fp16", ranks=2)
    for name in OPTIMIZERS:  # two updates each: Adam's bias correction counts updates, not passes
        assert full[f"{name}_iterations"] == accumulated[f"{name}_iterations"] == 2, name
        for i in range(4):
            key = f"{name}_{i}"
            assert np.abs(full[key] - full[f"initial_{i}"]).min() > 0, f"{key}: not every weight moved"
            np.testing.assert_allclose(accumulated[key], full[key], atol=1e-5, rtol=0, err_msg=key)
    sgd = [f"sgd_{i}" for i in range(4)]
    compressed = max(float(np.abs(fp16[key] - accumulated[key]).max()) for key in sgd)
    assert compressed > 0, "--fp16-allreduce gave the fp32 result to the bit: nothing was compressed"
    for key in sgd:
        np.testing.assert_allclose(fp16[key], full[key], atol=1e-3, rtol=0)  # fp16's ~3 decimal digits


@pytest.mark.multiprocess
@pytest.mark.timeout(580)
def test_every_model_trains_identically_on_two_ranks_and_reloads(tmp_path):
    out = tmp_path / "zoo.json"
    result = run_cli("horovodrun", "-np", "2", sys.executable, str(SCRIPTS / "zoo_step.py"), str(out), timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report) == set(MODEL_GEOMETRY)
    checks = {"logits", "finite_loss", "trained", "ranks_equal", "reload_equal"}
    assert all(r == dict.fromkeys(checks, True) for r in report.values()), report


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_adasum_combines_the_two_ranks_gradients_by_adasum(tmp_path):
    result = run_cli("horovodrun", "-np", "2", sys.executable, str(SCRIPTS / "adasum_step.py"),
                     str(tmp_path / "adasum.npz"), timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = dict(np.load(tmp_path / "adasum.npz"))
    for i in range(4):
        np.testing.assert_allclose(saved[f"weights_{i}"], saved[f"adasum_{i}"], atol=1e-6, rtol=0)
    # and not what averaging would have made
    assert max(np.abs(saved[f"adasum_{i}"] - saved[f"average_{i}"]).max() for i in range(4)) > 1e-2


@pytest.mark.multiprocess
@pytest.mark.timeout(400)
def test_adasum_and_autotune_train_end_to_end(tiny_data, tmp_path):
    """--adasum trains with the learning rate not scaled by the world size and is refused under Gloo;
    --autotune writes Horovod's log with scored rows. Two runs: Horovod's autotuner scores only plain
    allreduce traffic, so under --adasum it sampled once per epoch (measured: no row in 4 epochs here)."""
    common = ["--data", str(tiny_data), "--epochs", "2", "--batch-size", "2", "--verbose", "2",
              "--model", "resnet18", "--image-size", "32"]
    run, log = tmp_path / "run", tmp_path / "autotune.csv"
    flags = [*common, "--out", str(run), "--adasum"]
    result = run_cli("horovodrun", "-np", "2", str(BIN / "hvdweather-train"), *flags, timeout=380)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    digests = [r["weights_sha256"] for r in json.loads((run / "ranks.json").read_text())]
    assert len(digests) == 2 and digests[0] == digests[1]
    record = json.loads((run / "config.json").read_text())
    plan = record["plan"]
    assert record["config"]["adasum"] and record["world"]["num_workers"] == 2
    assert plan["scaled_lr"] == plan["base_lr"] == 0.01 and plan["warmup_steps"] == 0  # not x workers
    assert "lr 0.01 x 1 = 0.01;" in result.stdout
    assert all(row["lr"] == pytest.approx(0.01) for row in _rows(run))
    # Horovod's autotune knobs: a sample per step and no warm-up samples, so 8 steps log some rows
    quick = {"HOROVOD_AUTOTUNE_WARMUP_SAMPLES": "0", "HOROVOD_AUTOTUNE_STEPS_PER_SAMPLE": "1"}
    tuned = run_cli("horovodrun", "-np", "2", str(BIN / "hvdweather-train"), *common, "--out",
                    str(tmp_path / "tuned"), "--autotune", "--autotune-log", str(log), timeout=380, env=quick)
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    header, *rows = [line.split(",") for line in log.read_text().splitlines()]
    assert header[-1] == "score" and rows and all(len(row) == len(header) for row in rows)
    assert all(float(row[-1]) > 0 for row in rows)
    gloo = run_cli("horovodrun", "--gloo", "-np", "2", str(BIN / "hvdweather-train"), *flags, "--overwrite",
                   timeout=200)
    assert gloo.returncode != 0 and "--adasum needs Horovod's MPI controller" in gloo.stdout + gloo.stderr


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.multiprocess
@pytest.mark.timeout(200)
def test_adasum_on_three_ranks_is_refused_before_any_work(tiny_data, tmp_path):
    """README: --adasum needs a power-of-two number of ranks. Without hvdweather's check, Horovod raises
    NotImplementedError with a traceback only when the first step is traced, after the scan has written
    split.csv: checked once by deleting the check in HorovodBackend (rc 1, a traceback, split.csv written)."""
    run = tmp_path / "run"
    result = run_cli("horovodrun", "-np", "3", str(BIN / "hvdweather-train"), "--data", str(tiny_data),
                     "--out", str(run), "--adasum", "--model", "resnet18", "--image-size", "32",
                     "--batch-size", "2", "--epochs", "1", timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if "error:" in line]
    assert errors and all(line.endswith("hvdweather-train: error: --adasum needs a power-of-two number of ranks "
                                        "(1, 2, 4, 8...), got 3: launch on that many ranks or drop --adasum")
                          for line in errors), output[-3000:]
    assert "Traceback" not in output
    assert not (run / "split.csv").exists() and not (run / "config.json").exists()
