"""Every format's kernel equals the dense matmul, on every ISA path, for odd shapes and batches."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsecraft.formats import pack

from .conftest import block_prune, magnitude_prune, nm_prune

SHAPES = st.sampled_from([1, 3, 5, 17, 33, 64, 100])
WIDE = st.sampled_from([1, 3, 17, 48, 96, 1000])
BATCH = st.sampled_from([1, 2, 3, 4, 5, 17, 64, 70])
SPARSITY = st.sampled_from([0.0, 0.5, 0.9, 0.999, 1.0])
BLOCKS = st.sampled_from([(4, 1), (8, 1), (16, 1), (1, 4), (2, 2), (3, 5)])
NMS = st.sampled_from([(2, 4), (1, 4), (4, 8), (1, 2), (3, 6)])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _inputs(batch: int, inp: int, out: int, bias: bool, transposed: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    if transposed:  # a non-contiguous x
        x = torch.randn(inp, batch, generator=g).t()
    else:
        x = torch.randn(batch, inp, generator=g)
    b = torch.randn(out, generator=g) if bias else None
    return x, b


def _check(packed, w: torch.Tensor, x: torch.Tensor, b) -> None:
    y = packed.linear(x, b)
    ref = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    assert y.shape == ref.shape and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), ref, rtol=1e-5,
                               atol=1e-5 * (1 + float(ref.abs().max()) if ref.numel() else 1))


@SETTINGS
@given(out=SHAPES, inp=WIDE, batch=BATCH, sparsity=SPARSITY, bias=st.booleans(), transposed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_csr16_matches_dense(isa, out, inp, batch, sparsity, bias, transposed, seed):
    w = magnitude_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), min(sparsity, 0.9999))
    if sparsity == 1.0:
        w.zero_()
    x, b = _inputs(batch, inp, out, bias, transposed, seed)
    _check(pack(w, "csr16"), w, x, b)


@SETTINGS
@given(out=SHAPES, inp=WIDE, batch=BATCH, sparsity=SPARSITY, bias=st.booleans(), transposed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_bitmask_matches_dense(isa, out, inp, batch, sparsity, bias, transposed, seed):
    w = magnitude_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), min(sparsity, 0.9999))
    if sparsity == 1.0:
        w.zero_()
    x, b = _inputs(batch, inp, out, bias, transposed, seed)
    _check(pack(w, "bitmask"), w, x, b)


@SETTINGS
@given(out=SHAPES, inp=WIDE, batch=BATCH, sparsity=SPARSITY, block=BLOCKS, bias=st.booleans(),
       transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_block_matches_dense(isa, out, inp, batch, sparsity, block, bias, transposed, seed):
    r, c = block
    w = block_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), min(sparsity, 0.9999), r, c)
    x, b = _inputs(batch, inp, out, bias, transposed, seed)
    _check(pack(w, "block", R=r, C=c), w, x, b)


@SETTINGS
@given(out=SHAPES, groups=st.sampled_from([1, 3, 8, 17, 40]), batch=BATCH, nm=NMS, bias=st.booleans(),
       transposed=st.booleans(), zero_rows=st.booleans(), seed=st.integers(0, 2**16))
def test_nm_matches_dense(isa, out, groups, batch, nm, bias, transposed, zero_rows, seed):
    n, m = nm
    inp = groups * m
    w = nm_prune(torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)), n, m)
    if zero_rows:
        w[::2] = 0
    x, b = _inputs(batch, inp, out, bias, transposed, seed)
    _check(pack(w, "nm", N=n, M=m), w, x, b)


@pytest.mark.parametrize("fmt,params", [("csr16", {}), ("bitmask", {}), ("block", {"R": 4, "C": 1}),
                                        ("nm", {"N": 2, "M": 4})])
def test_large_batch_and_wide_rows(isa, fmt, params):
    """Batch 256 (several register chunks) and rows longer than the unrolled loops."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 1024, generator=g)
    w = nm_prune(w, 2, 4) if fmt == "nm" else (block_prune(w, 0.7, 4, 1) if fmt == "block" else magnitude_prune(w, 0.7))
    for batch in (1, 3, 17, 64, 256):
        x = torch.randn(batch, 1024, generator=g)
        _check(pack(w, fmt, **params), w, x, torch.randn(40, generator=g))


def test_empty_batch_and_out_of_range_input(isa):
    w = magnitude_prune(torch.randn(8, 16), 0.5)
    packed = pack(w, "csr16")
    assert packed.linear(torch.zeros(0, 16)).shape == (0, 8)
    from sparsecraft.errors import SparsecraftError

    with pytest.raises(SparsecraftError, match="shape"):
        packed.linear(torch.zeros(2, 15))


def test_custom_op_under_torch_compile():
    from .conftest import require_native

    require_native()
    w = magnitude_prune(torch.randn(24, 32), 0.8)
    packed = pack(w, "csr16")
    packed24 = pack(nm_prune(torch.randn(24, 32), 2, 4), "nm", N=2, M=4)
    b = torch.randn(24)

    def f(x):
        return torch.relu(packed.linear(x, b)) + packed24.linear(x, None)

    x = torch.randn(5, 32)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))
