"""hvdweather.pth reads what torch.load reads, in both of PyTorch's formats, and refuses anything else."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hvdweather import pretrained
from hvdweather.pth import PthError, read_state_dict


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=generator)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
            "fc.weight": base.t(),  # a strided view: the reader must honour strides
            "fc.bias": base[2],  # an offset into a shared storage
            "bn.num_batches_tracked": torch.tensor(7), "mask": torch.tensor([True, False]),
            "half": torch.arange(4, dtype=torch.float16)}


def _assert_same(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)
        assert ours[name].dtype == tensor.numpy().dtype, name


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_what_torch_saved(tmp_path, zip_format):
    path = tmp_path / "w.pth"
    torch.save(_tensors(), path, _use_new_zipfile_serialization=zip_format)
    _assert_same(read_state_dict(path), _tensors())


def test_reads_the_packaged_imagenet_file_as_torch_does():
    path = pretrained.packaged_lite0()
    _assert_same(read_state_dict(path), torch.load(path, map_location="cpu", weights_only=True))


def test_truncated_and_foreign_files_are_refused(tmp_path):
    whole = pretrained.packaged_lite0().read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PthError, match="truncated"):
        read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    with pytest.raises(PthError):
        read_state_dict(tmp_path / "text.pth")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as file:
        for part in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(part, file)
        pickle.dump({"w": Exploit()}, file)
    with pytest.raises(PthError, match="builtins.print, which a plain state dict does not"):
        read_state_dict(path)
