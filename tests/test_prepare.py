"""hvdweather-prepare's checks before any decoding: a size no model can train on, DATA named as the argument
it is, and a prepared directory given as DATA. (The shards themselves are tested in test_records.py.)"""
from __future__ import annotations

import pytest

from conftest import run_cli
from hvdweather.data import records
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE


def one_error_line(result, prog: str = "hvdweather-prepare") -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), result.stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_a_size_the_cnn_cannot_use_is_refused_before_decoding(dirty_data, tmp_path):
    too_small = WEATHER_CNN_MIN_IMAGE_SIZE - 1
    result = run_cli("hvdweather-prepare", str(dirty_data), "--out", str(tmp_path / "out"),
                     "--image-size", str(too_small), timeout=50)
    line = one_error_line(result)
    assert f"--image-size {too_small}" in line and f"at least {WEATHER_CNN_MIN_IMAGE_SIZE}" in line
    assert "hvdweather-train" not in result.stdout  # no train command that training would refuse
    assert not (tmp_path / "out").exists()  # nothing listed, created or decoded


@pytest.mark.timeout(60)
def test_errors_about_the_data_argument_name_DATA(tmp_path):
    result = run_cli("hvdweather-prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "out"), timeout=50)
    line = one_error_line(result)
    assert f"DATA {tmp_path / 'missing'}: directory not found" in line and "--data" not in line


@pytest.mark.timeout(60)
def test_a_prepared_directory_as_data_names_its_source(dirty_data, tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    records.write_metadata(prepared, {"class_names": ["a", "b"], "source": str(dirty_data), "shards": []}, [], [])
    result = run_cli("hvdweather-prepare", str(prepared), "--out", str(tmp_path / "again"), timeout=50)
    line = one_error_line(result)
    assert "written by hvdweather-prepare" in line and line.endswith(str(dirty_data))
