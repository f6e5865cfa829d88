"""Read a PyTorch state dict (`.pth`) into NumPy arrays without PyTorch.

Fine-tuning from the packaged ImageNet weights should not need a 200 MB framework we never run. A
`.pth` is a pickle whose tensors point at raw storages: in the legacy format (before PyTorch 1.6, the
format of `efficientnet-lite0-57934424.pth`) the storages follow the pickle in the same file; in the
zip format each is a member `<archive>/data/<key>`. The unpickler admits only the few classes a state
dict holds, so a hostile file cannot run code (unlike a plain `pickle.load`).
"""
from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["PthError", "read_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class PthError(ValueError):
    """The file is not a readable PyTorch state dict (truncated, another format, or unknown contents)."""


class _Storage:
    def __init__(self, dtype: type, numel: int) -> None:
        self.dtype, self.numel, self.data = np.dtype(dtype), numel, None


class _Tensor:
    """A tensor whose storage may not be read yet (legacy files store the bytes after the pickle)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        flat = self.storage.data
        if not self.size:
            return flat[self.offset].copy()
        itemsize = flat.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, [s * itemsize for s in self.stride])
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return name
        raise pickle.UnpicklingError(f"holds {module}.{name}, which a plain state dict does not")

    def persistent_load(self, saved_id):
        # ('storage', storage type, key, location, numel[, view metadata]); the zip format passes numel too
        _, storage_type, key, _location, numel = saved_id[:5]
        if key not in self.storages:
            self.storages[key] = _Storage(_DTYPES[storage_type], int(numel))
        return self.storages[key]


def _read_legacy(file) -> tuple[dict, dict]:
    if pickle.load(file) != _LEGACY_MAGIC:
        raise PthError("not a PyTorch file (wrong magic number)")
    pickle.load(file), pickle.load(file)  # protocol version, system info
    storages: dict = {}
    result = _Unpickler(file, storages).load()
    for key in pickle.load(file):
        storage = storages[key]
        (numel,) = struct.unpack("<q", file.read(8))
        raw = file.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise PthError("truncated: a tensor's bytes end early")
        storage.data = np.frombuffer(raw, storage.dtype)
    return result, storages


def _read_zip(path: Path) -> tuple[dict, dict]:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        if not pickles:
            raise PthError("a zip without data.pkl")
        root = pickles[0][: -len("data.pkl")]
        storages: dict = {}
        with archive.open(pickles[0]) as file:
            result = _Unpickler(file, storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            storage.data = np.frombuffer(raw, storage.dtype)
    return result, storages


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """`{name: array}` of the state dict in `path`, legacy or zip format; PthError when unreadable."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result, _ = _read_zip(path)
        else:
            with path.open("rb") as file:
                result, _ = _read_legacy(file)
    except PthError:
        raise
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, struct.error, zipfile.BadZipFile) as exc:
        raise PthError(str(exc) or exc.__class__.__name__) from None
    if isinstance(result, dict) and "state_dict" in result:  # a training checkpoint around the state dict
        result = result["state_dict"]
    if not isinstance(result, dict) or not all(isinstance(v, _Tensor) for v in result.values()):
        raise PthError("holds something other than a state dict of tensors")
    return {name: tensor.array() for name, tensor in result.items()}
