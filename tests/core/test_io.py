"""read_safetensors: round trip, and one-line errors for missing, garbage and truncated files."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sparsecraft.errors import SparsecraftError
from sparsecraft.io import read_safetensors


def _one_line_error(path, match: str) -> str:
    with pytest.raises(SparsecraftError, match=match) as info:
        read_safetensors(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_tensors_sorted_and_metadata(tmp_path):
    tensors = {"z": torch.randn(3, 4), "a": torch.arange(5, dtype=torch.int16), "m": torch.ones(2, dtype=torch.uint8)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"kind": "test", "n": "3"})
    back, meta = read_safetensors(path)
    assert list(back) == ["a", "m", "z"]
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)
    assert meta == {"kind": "test", "n": "3"}


def test_select_loads_only_accepted_tensors(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"a.weight": torch.ones(2, 2), "a.bias": torch.zeros(2)}, str(path), metadata={"k": "v"})
    tensors, _ = read_safetensors(path, select=lambda name: name.endswith("weight"))
    assert list(tensors) == ["a.weight"]
    assert read_safetensors(path, select=lambda name: False) == ({}, {"k": "v"})
    with pytest.raises(KeyError):  # a failing select is the caller's bug, not a damaged file
        read_safetensors(path, select=lambda name: {}[name])


def test_file_without_metadata_gives_empty_dict(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert read_safetensors(str(path))[1] == {}


def test_missing_file_and_directory(tmp_path):
    _one_line_error(tmp_path / "missing.safetensors", "does not exist")
    _one_line_error(tmp_path, "not a file")


_BAD_HEADER = b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'


@pytest.mark.parametrize("content", [b"", b"hello", b"not a safetensors file at all" * 20,
                                     (8).to_bytes(8, "little") + b"{broken}",
                                     len(_BAD_HEADER).to_bytes(8, "little") + _BAD_HEADER + bytes(8)])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    message = _one_line_error(path, "not a readable safetensors file")
    assert "write it again" in message


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "full.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(path), metadata={"k": "v"})
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 12):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        _one_line_error(bad, "truncated")
