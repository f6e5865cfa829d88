"""hvdweather-prepare's checks before any decoding: a size no model can train on, DATA named as the argument
it is, and a prepared directory given as DATA. (The shards themselves are tested in test_records.py.)"""
from __future__ import annotations

import pytest

from conftest import run_cli
from hvdweather.data import records
from hvdweather.data.prepare import check_image_size
from hvdweather.geometry import WEATHER_CNN_MIN_IMAGE_SIZE


def one_error_line(result, prog: str = "hvdweather-prepare") -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:"), result.stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_a_size_no_model_can_use_is_refused_before_decoding(dirty_data, tmp_path):
    """Under 32 px (the zoo's smallest input) is refused; the old rule refused anything under the weather
    CNN's 253 px, so prepared shards could never feed a 64-px ResNet (issue 23)."""
    result = run_cli("hvdweather-prepare", str(dirty_data), "--out", str(tmp_path / "out"),
                     "--image-size", "31", timeout=50)
    line = one_error_line(result)
    assert "--image-size 31" in line and "no model trains on images under 32 pixels" in line
    assert "hvdweather-train" not in result.stdout  # no train command that training would refuse
    assert not (tmp_path / "out").exists()  # nothing listed, created or decoded
    check_image_size(32)
    check_image_size(WEATHER_CNN_MIN_IMAGE_SIZE - 1)  # a ResNet or MobileNetV2 trains on these


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
