"""The spark executor (hvdweather.eda.spark): prepare's TFRecord shards and the EDA's results on PySpark in
local mode are identical to the multiprocessing executor's at the same worker count; Spark stays quiet and
its start is bounded; the core install (no PySpark) still imports and says what to install.

    make install-spark && .venv/bin/pytest -m spark tests/test_spark.py
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from hvdweather.eda.executors import make_executor
from hvdweather.eda.spark import SparkExecutor, local_threads
from hvdweather.errors import ConfigError

SPARK_NOISE = re.compile(r"\b(INFO|WARN|WARNING)\b|Setting default log level")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from hvdweather.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("spark") / "data"
    make_synthetic_dataset(root, images_per_class=6, seed=4)
    return root


def _run(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    done = run_cli(*args, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _without_run(path: Path) -> dict:
    """A JSON output without its `run` block (executor name and timings differ by design)."""
    record = json.loads(path.read_text())
    record.pop("run")
    return record


def _assert_same_files(a: Path, b: Path, json_name: str) -> None:
    """Same file names; every file byte-identical except `json_name`, equal without its run block."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name == json_name:
            assert _without_run(a / name) == _without_run(b / name)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.spark
@pytest.mark.timeout(240)
def test_prepare_on_spark_writes_the_same_shards(data: Path, tmp_path: Path) -> None:
    spark, pool = tmp_path / "spark", tmp_path / "pool"
    done = _run("hvdweather-prepare", str(data), "--out", str(spark), "--executor", "spark", "--processes", "2",
                "--images-per-shard", "16")
    _run("hvdweather-prepare", str(data), "--out", str(pool), "--executor", "multiprocessing", "--processes", "2",
         "--images-per-shard", "16")
    shards = sorted(spark.glob("*.tfrecord"))
    assert len(shards) == 6 and all(s.stat().st_size > 0 for s in shards)  # 66 images / 16, rounded up to 2x
    _assert_same_files(spark, pool, "prepared.json")
    run = json.loads((spark / "prepared.json").read_text())["run"]
    assert (run["executor"], run["workers"]) == ("spark", 2)
    assert not SPARK_NOISE.search(done.stderr), done.stderr[-3000:]


@pytest.mark.spark
@pytest.mark.timeout(240)
def test_eda_on_spark_gives_the_same_results(data: Path, tmp_path: Path) -> None:
    spark, pool = tmp_path / "spark", tmp_path / "pool"
    done = _run("hvdweather-eda", str(data), "--out", str(spark), "--executor", "spark", "--spark-master",
                "local[2]", "--no-plots")
    _run("hvdweather-eda", str(data), "--out", str(pool), "--executor", "multiprocessing", "--processes", "2",
         "--no-plots")
    _assert_same_files(spark, pool, "summary.json")
    with np.load(spark / "histograms.npz") as a, np.load(pool / "histograms.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    summary = json.loads((spark / "summary.json").read_text())
    assert summary["all"]["images"] == 66 and (summary["run"]["executor"], summary["run"]["workers"]) == ("spark", 2)
    assert not SPARK_NOISE.search(done.stderr), done.stderr[-3000:]


@pytest.mark.spark
@pytest.mark.timeout(120)
def test_a_master_without_executors_fails_in_bounded_time(tmp_path: Path) -> None:
    # Nothing listens on this loopback port: the driver retries in the background while the probe task waits.
    code = ("import sys\nfrom hvdweather.eda.spark import start_context\nfrom hvdweather.errors import ConfigError\n"
            "try:\n    start_context('spark://127.0.0.1:9', timeout_s=5)\nexcept ConfigError as exc:\n"
            "    sys.exit(str(exc))\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert done.returncode == 1 and "no Spark executor ran a first task within 5 s" in done.stderr, done.stderr[-3000:]
    assert time.monotonic() - start < 60  # Spark alone waits a minute before giving up on a master


def test_local_threads_parse() -> None:
    assert [local_threads(m) for m in ("local", "local[3]", "local[2,4]", "spark://h:7077", "yarn")] == [
        1, 3, 2, None, None]
    assert local_threads("local[*]") >= 1


def test_core_install_without_pyspark_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError, as without the extra
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[spark\]'"):
        make_executor("spark", 2)


def test_spark_options_are_checked_before_spark_starts() -> None:
    with pytest.raises(ConfigError, match="--spark-master is for --executor spark"):
        make_executor("multiprocessing", 2, "local[2]")
    with pytest.raises(ConfigError, match=r"--processes 3 does not match --spark-master local\[2\]"):
        SparkExecutor(3, "local[2]")
