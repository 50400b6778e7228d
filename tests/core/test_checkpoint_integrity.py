"""Issue 20 item 2: checkpoint metadata is covered by a checksum and checked against a schema."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError, read_checkpoint
from sparsecraft.checkpoint import MASK_PREFIX, _digest, header_metadata

SPEC = {"name": "mlp", "kwargs": {}, "data": {"name": "digits", "input_shape": [64], "num_classes": 10,
                                              "task": "classification"}}


def _small(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8))
    path = tmp_path / "small.safetensors"
    sparsecraft.prune(model, sparsity=0.5).save(str(path), model_spec=SPEC, extra={"criterion": "magnitude"})
    return path


def test_every_single_bit_flip_of_the_header_is_refused_as_corrupt(tmp_path):
    path = _small(tmp_path)
    data = path.read_bytes()
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    flipped = tmp_path / "flipped.safetensors"
    for pos in range(header_end):
        raw = bytearray(data)
        raw[pos] ^= 1 << (pos % 8)
        flipped.write_bytes(bytes(raw))
        with pytest.raises(SparsecraftError, match="corrupt") as err:
            read_checkpoint(flipped)
        assert str(flipped) in str(err.value) and "\n" not in str(err.value), pos


def test_metadata_edited_without_its_checksum_is_corrupt(tmp_path):
    path = _small(tmp_path)
    tensors = dict(sparsecraft.io.read_safetensors(path)[0])
    meta = json.loads(sparsecraft.io.read_safetensors(path)[1]["sparsecraft"])
    header = header_metadata(meta)
    meta["model"]["name"] = "mlq"
    header["sparsecraft"] = json.dumps(meta)
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(SparsecraftError, match="metadata checksum mismatch.*corrupt"):
        read_checkpoint(path)


def _with_model(tmp_path, model):
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    tensors = {"fc.weight": weight, MASK_PREFIX + "fc.weight": weight != 0}
    meta = {"format": 2, "sha256": {k: _digest(v) for k, v in tensors.items()},
            "masks": {"fc.weight": {"pattern": "unstructured", "shape": [2, 2], "kept": 2}}, "model": model,
            "extra": {}}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=header_metadata(meta))
    return path


@pytest.mark.parametrize("model", [
    "mlp", ["mlp"], {"kwargs": {}}, {"name": "mlp", "kwargs": "x"},
    {"name": "mlp", "kwargs": {}, "data": {"name": "digits", "input_shape": "64", "num_classes": 10,
                                            "task": "classification"}},
    {"name": "mlp", "kwargs": {}, "data": {"name": "digits", "input_shape": [-1], "num_classes": 10,
                                            "task": "classification"}},
])
def test_model_spec_of_the_wrong_shape_is_corrupt(tmp_path, model):
    with pytest.raises(SparsecraftError, match="model spec.*corrupt"):
        read_checkpoint(_with_model(tmp_path, model))


@pytest.mark.parametrize("kwargs", [{"hidden": "wide"}, {"no_such_argument": 1}])
def test_model_kwargs_that_do_not_build_are_one_line(tmp_path, kwargs):
    ckpt = read_checkpoint(_with_model(tmp_path, {"name": "mlp", "kwargs": kwargs}))
    with pytest.raises(SparsecraftError, match="cannot rebuild its model") as err:
        ckpt.build_model()
    assert str(ckpt.path) in str(err.value)


def test_format_1_checkpoints_still_load(tmp_path) -> None:
    """Checkpoints written before the metadata checksum (format 1) load; their tensors are still verified."""
    from safetensors import safe_open

    from sparsecraft.checkpoint import META_DIGEST_KEY, META_KEY

    model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    path = tmp_path / "new.safetensors"
    sparsecraft.prune(model, 0.5).save(str(path))
    with safe_open(str(path), framework="pt") as f:
        header, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header[META_KEY])
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={META_KEY: json.dumps({**meta, "format": 1})})
    ckpt = sparsecraft.read_checkpoint(old)
    assert torch.equal(ckpt.masks["0.weight"], sparsecraft.read_checkpoint(path).masks["0.weight"])
    tensors["0.bias"] = tensors["0.bias"] + 1
    save_file(tensors, str(old), metadata={META_KEY: json.dumps({**meta, "format": 1})})
    with pytest.raises(sparsecraft.SparsecraftError, match="checksum mismatch for 0.bias"):
        sparsecraft.read_checkpoint(old)
    assert META_DIGEST_KEY in header
