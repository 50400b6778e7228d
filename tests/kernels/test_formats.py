"""Pack/unpack is exact, sizes add up, files round-trip, and damaged files are refused."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft import patterns
from sparsecraft.errors import SparsecraftError
from sparsecraft.formats import FORMATS, PackedNM, load_packed, pack, save_packed

from .conftest import magnitude_prune, nm_prune


@settings(max_examples=60, deadline=None)
@given(out=st.integers(1, 40), inp=st.integers(1, 70), sparsity=st.sampled_from([0.0, 0.3, 0.9, 0.999]),
       block=st.sampled_from([(1, 1), (4, 1), (1, 4), (8, 1), (3, 5), (16, 16)]), zero_row=st.booleans(),
       zero_col=st.booleans(), seed=st.integers(0, 999))
def test_block_pack_roundtrip_exact(out, inp, sparsity, block, zero_row, zero_col, seed):
    w = magnitude_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), sparsity)
    if zero_row:
        w[out // 2] = 0
    if zero_col:
        w[:, inp // 2] = 0
    r, c = block
    packed = pack(w, "csr16") if block == (1, 1) else pack(w, "block", R=r, C=c)
    assert torch.equal(packed.to_dense(), w)
    nbr = -(-out // r)
    nblocks = packed.tensors()["cols"].numel()
    assert packed.nbytes == 4 * (nbr + 1) + 2 * nblocks + 4 * nblocks * r * c
    if block == (1, 1):
        assert nblocks == int((w != 0).sum())


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 30), groups=st.integers(1, 20), nm=st.sampled_from([(2, 4), (1, 4), (4, 8), (3, 6), (1, 1)]),
       seed=st.integers(0, 999))
def test_nm_pack_roundtrip_exact(out, groups, nm, seed):
    n, m = nm
    w = nm_prune(torch.randn(out, groups * m, generator=torch.Generator().manual_seed(seed)), n, m)
    w[0] = 0
    packed = pack(w, "nm", N=n, M=m)
    assert torch.equal(packed.to_dense(), w)
    assert packed.nbytes == out * groups * n * 5


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 30), inp=st.integers(1, 70), sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 999))
def test_bitmask_pack_roundtrip_exact(out, inp, sparsity, seed):
    w = magnitude_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), min(sparsity, 0.999))
    if sparsity == 1.0:
        w.zero_()
    packed = pack(w, "bitmask")
    assert torch.equal(packed.to_dense(), w)
    nnz = int((w != 0).sum())
    assert packed.nbytes == 4 * nnz + 2 * out * -(-inp // 16) + 4 * (out + 1)


def test_bytes_at_90_percent_below_target():
    w = magnitude_prune(torch.randn(512, 512), 0.9)
    assert pack(w, "csr16").nbytes / (4 * w.numel()) <= 0.17


def test_bad_inputs_are_one_line_errors():
    w = torch.randn(8, 12)
    with pytest.raises(SparsecraftError, match="not 2:4 sparse"):
        pack(w, "nm", N=2, M=4)
    with pytest.raises(SparsecraftError, match="multiple of M"):
        pack(nm_prune(torch.randn(8, 12), 1, 4)[:, :10], "nm", N=1, M=4)
    with pytest.raises(SparsecraftError, match="unknown format"):
        pack(w, "coo")
    with pytest.raises(SparsecraftError, match="R must be"):
        pack(w, "block", R=0, C=1)
    with pytest.raises(SparsecraftError, match="2-D"):
        pack(torch.randn(3), "csr16")
    with pytest.raises(SparsecraftError, match="block columns"):
        pack(torch.zeros(1, 70000), "csr16")
    assert set(FORMATS.names()) == {"bitmask", "block", "csr16", "nm", "csr16_int8", "block_int8",
                                    "dense_int8"}


def test_nm_format_and_nm_pattern_have_distinct_names():
    assert FORMATS.get("nm") is PackedNM and PackedNM.__name__ != patterns.NM.__name__
    assert isinstance(pack(nm_prune(torch.randn(4, 8), 2, 4), "nm"), PackedNM)


@pytest.mark.parametrize("fmt,params", [("csr16", {}), ("bitmask", {}), ("block", {"R": 4, "C": 1}),
                                        ("nm", {"N": 2, "M": 4})])
def test_save_load_roundtrip_and_refusals(tmp_path, fmt, params):
    w = nm_prune(torch.randn(20, 32), 2, 4)
    packed = pack(w, fmt, **params)
    path = tmp_path / "w.safetensors"
    save_packed(packed, path)
    back = load_packed(path)
    assert type(back) is type(packed) and back.params() == packed.params()
    assert torch.equal(back.to_dense(), w)
    with pytest.raises(SparsecraftError, match="already exists"):
        save_packed(packed, path)

    # truncated file
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(SparsecraftError, match="not a readable safetensors"):
        load_packed(bad)

    from safetensors.torch import save_file

    def write(tensors, meta, name):
        p = tmp_path / name
        save_file(tensors, str(p), metadata={"sparsecraft_packed": json.dumps(meta)} if meta is not None else None)
        return p

    meta = {"format": fmt, "shape": [20, 32], "params": packed.params(), "version": "1"}
    tensors = dict(packed.tensors())
    # shape in metadata does not match the tensors
    with pytest.raises(SparsecraftError, match="expected|valid row pointer"):
        load_packed(write(tensors, {**meta, "shape": [21, 32]}, "shape.safetensors"))
    # unknown format
    with pytest.raises(SparsecraftError, match="unknown format"):
        load_packed(write(tensors, {**meta, "format": "zip"}, "fmt.safetensors"))
    # not ours
    with pytest.raises(SparsecraftError, match="metadata missing"):
        load_packed(write(tensors, None, "plain.safetensors"))
    # out-of-range index
    if fmt == "bitmask":
        tensors["masks"] = torch.full_like(tensors["masks"], -1)  # all bits set: counts no longer match
        with pytest.raises(SparsecraftError, match="do not match"):
            load_packed(write(tensors, meta, "masks.safetensors"))
    elif fmt == "nm":
        tensors["idx"] = torch.full_like(tensors["idx"], 7)
        with pytest.raises(SparsecraftError, match="out of range"):
            load_packed(write(tensors, meta, "idx.safetensors"))
    else:
        tensors["cols"] = torch.full_like(tensors["cols"], 1000)
        with pytest.raises(SparsecraftError, match="out of range"):
            load_packed(write(tensors, meta, "cols.safetensors"))
    with pytest.raises(SparsecraftError, match="does not exist"):
        load_packed(tmp_path / "missing.safetensors")
