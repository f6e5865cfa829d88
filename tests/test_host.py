"""Host facts and run-directory reading: TensorFlow-free, one definition each."""
from __future__ import annotations

import subprocess
import sys

from hvdweather import host, runfiles


def test_host_facts_are_read_without_tensorflow():
    code = ("import sys; from hvdweather import host, runfiles, geometry, config; "
            "host.versions(); host.cpu_flags(); host.load_average(); "
            "assert 'tensorflow' not in sys.modules, 'TF imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_versions_and_cores():
    found = host.versions()
    assert found["python"].count(".") == 2 and "numpy" in found and "tensorflow-cpu" in found
    assert 1 <= host.available_cores()
    assert set(host.cpu_flags()) <= set(host.SPEED_FLAGS)


def test_load_average_is_three_numbers_or_empty(monkeypatch):
    values = host.load_average().split()
    assert len(values) == 3 and all(float(v) >= 0 for v in values)

    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(host.os, "getloadavg", unavailable)
    assert host.load_average() == ""


def test_run_files_are_found_and_cleared_without_touching_others(tmp_path):
    assert runfiles.run_files_in(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n\n{"epoch": 2}\n')
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "curves.png").write_bytes(b"x")
    (tmp_path / "mine.txt").write_text("keep")
    assert runfiles.run_files_in(tmp_path) == ["metrics.jsonl", "report"]
    assert [r["epoch"] for r in runfiles.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    runfiles.clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    assert runfiles.read_json(tmp_path / "config.json") is None
