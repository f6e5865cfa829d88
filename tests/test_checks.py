"""The training command's TensorFlow-free checks (issue 25): a wrong --data, --out, batch, --top-k or
--stats is refused in one line, exit 2, before TensorFlow loads; the batch bound never refuses a batch
that the split after the scan would take."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from hvdweather.checks import train_images_at_most
from hvdweather.data.discovery import Catalog
from hvdweather.data.split import stratified_split

# Runs the command in a fresh interpreter, as the console script does, and reports whether TensorFlow
# was imported on the way to the error.
_PROBE = """
import sys
from hvdweather.cli import run_command, train_command
code = run_command(train_command, "hvdweather-train", sys.argv[1:])
print(code, "tensorflow" in sys.modules)
"""


def _refused(*args: str) -> str:
    result = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hvdweather-train: error: "), result.stderr
    return lines[0]


@pytest.mark.timeout(300)
def test_input_errors_come_before_tensorflow_loads(tiny_data, tmp_path):
    """Before the fix hvdweather-train imported train.py (and TensorFlow, 6-9 s) before its first check;
    proven to fail so (the probe printed True) against the code before the fix."""
    out = str(tmp_path / "run")
    assert "--data /nonexistent" in _refused("--data", "/nonexistent", "--out", out)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    assert "already holds a run" in _refused("--data", str(tiny_data), "--out", str(tmp_path / "taken"))
    line = _refused("--data", str(tiny_data), "--out", out, "--batch-size", "100")
    assert "--batch-size 100" in line and "at most 18 image(s)" in line and "lower --batch-size" in line
    assert not (tmp_path / "run" / "split.csv").exists()
    line = _refused("--data", str(tiny_data), "--out", out, "--top-k", "4")
    assert "--top-k 4" in line and "has 3 classes; pass 1 to 3" in line


@pytest.mark.timeout(300)
def test_stats_of_another_data_set_is_refused(tiny_data, tmp_path):
    """--stats from an EDA of other classes was used without a word (issue 25). Proven to fail against
    the code before the fix: the run trained (exit 0)."""
    eda = run_cli("hvdweather-eda", str(tiny_data), "--out", str(tmp_path / "eda"), "--no-plots", "--no-duplicates",
                  timeout=120)
    assert eda.returncode == 0, eda.stderr
    other = tmp_path / "other"
    for name in ("fogsmog", "rainbow"):
        shutil.copytree(tiny_data / name, other / name)
    stats = str(tmp_path / "eda" / "summary.json")
    line = _refused("--data", str(other), "--out", str(tmp_path / "run"), "--normalize", "dataset", "--stats", stats,
                    "--batch-size", "4", "--epochs", "1", "--verbose", "0")
    assert f"--stats {stats} describes another data set" in line and "3: fogsmog, lightning, rainbow" in line
    assert json.loads((tmp_path / "eda" / "summary.json").read_text())["class_names"] == [
        "fogsmog", "lightning", "rainbow"]


def test_the_batch_bound_is_never_below_what_the_split_gives():
    """A batch refused before the scan would be refused after it, whatever files the scan drops. Rounding
    makes a class of 9 usable files train 7 (val 1, test 1) where 10 train 6 (2, 2): the bound takes the
    max over the usable counts (proven: with only the full count it is 12 here, below the split's 14)."""
    paths = tuple(f"c{i // 10}/{i}.jpg" for i in range(20))
    full = Catalog("d", ("c0", "c1"), paths, tuple(i // 10 for i in range(20)))
    usable = full.without({"c0/0.jpg", "c1/10.jpg"})
    assert stratified_split(usable, 0.15, 0.15, seed=1).size("train") == 14 <= train_images_at_most(full, 0.15, 0.15)
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(1, 40, size=rng.integers(2, 6))
        val, test = rng.choice([0.0, 0.1, 0.15, 0.2, 0.3], size=2)
        labels = np.repeat(np.arange(len(counts)), counts)
        paths = tuple(f"c{label}/{i}.jpg" for i, label in enumerate(labels))
        full = Catalog("d", tuple(f"c{i}" for i in range(len(counts))), paths, tuple(int(x) for x in labels))
        keep = rng.random(len(paths)) < 0.8  # the files the scan finds readable
        usable = full.without({p for p, k in zip(paths, keep) if not k})
        try:
            split = stratified_split(usable, val, test, seed=1)
        except ValueError:  # a class too small after the drop: refused after the scan anyway
            continue
        assert split.size("train") <= train_images_at_most(full, val, test)


def test_fewer_validation_images_than_processes_is_refused_before_training():
    """Every process validates on its share: with 1 validation image for 2 processes, Keras failed on the
    empty share at the end of epoch 1 with a traceback (found with horovodrun -np 2 on 3 validation images
    under 4 ranks). Removing the check makes the first call pass silently."""
    from hvdweather.checks import check_val_shards
    from hvdweather.errors import ConfigError

    with pytest.raises(ConfigError, match="1 validation image.*2 processes.*--val-split"):
        check_val_shards(1, 2)
    for n_val, processes in ((0, 2), (2, 2), (5, 4), (1, 1)):
        check_val_shards(n_val, processes)  # none, or at least one per process: fine


def test_a_run_directory_being_trained_is_not_trained_into_again(tmp_path):
    """The primary locks --out for its lifetime: a second launch into it (or a --resume while the ranks of a
    job whose launcher was killed go on: tests/test_resume.py) is refused in one line naming the holder,
    and the lock goes with its holder however it ends. Proven to fail without lock_run_dir."""
    from hvdweather.checks import check_run_dir
    from hvdweather.config import TrainConfig
    from hvdweather.errors import ConfigError

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom hvdweather.checks import lock_run_dir\n"
                               f"lock_run_dir({str(out)!r}); print('locked', flush=True); time.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"--out {out} is being trained by pid {holder.pid} on "):
            check_run_dir(TrainConfig(data="unused", out=str(out)))
    finally:
        holder.kill()
        holder.wait()
    check_run_dir(TrainConfig(data="unused", out=str(out)))  # its holder gone, the directory is free
