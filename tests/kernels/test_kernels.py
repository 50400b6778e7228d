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


FORMATS_FOR_EPILOGUE = st.sampled_from([("csr16", {}), ("bitmask", {}), ("block", {"R": 4, "C": 1}),
                                        ("block", {"R": 16, "C": 1}), ("block", {"R": 3, "C": 2}),
                                        ("nm", {"N": 2, "M": 4})])


def _pruned(fmt: str, params: dict, out: int, inp: int, sparsity: float, seed: int) -> torch.Tensor:
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))
    if fmt == "nm":
        return nm_prune(w, params["N"], params["M"])
    if fmt == "block":
        return block_prune(w, sparsity, params["R"], params["C"])
    return magnitude_prune(w, sparsity)


@SETTINGS
@given(fmt=FORMATS_FOR_EPILOGUE, out=st.sampled_from([1, 7, 16, 33, 100]), groups=st.sampled_from([1, 5, 24, 96]),
       rows=st.sampled_from([1, 3, 4, 5, 16, 23, 64, 130]), sparsity=st.sampled_from([0.0, 0.5, 0.9]),
       bias=st.booleans(), residual=st.booleans(), gelu=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_epilogues_match_dense(isa, fmt, out, groups, rows, sparsity, bias, residual, gelu, seed):
    """bias, bias + residual, bias + GELU fused into every kernel equal the dense masked computation."""
    fmt, params = fmt
    inp = groups * 4
    w = _pruned(fmt, params, out, inp, sparsity, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(rows, inp, generator=g) * 2
    b = torch.randn(out, generator=g) if bias else None
    res = torch.randn(rows, out, generator=g) if residual else None
    y = pack(w, fmt, **params).linear(x, b, residual=res, gelu=gelu)
    ref = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    ref = ref if res is None else ref + res.double()
    ref = torch.nn.functional.gelu(ref) if gelu else ref
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * (1 + float(ref.abs().max())))


@pytest.mark.parametrize("rows", [16, 128, 300])
@pytest.mark.parametrize("shape", [(384, 384), (1536, 384), (384, 1536)])
def test_token_panels_of_minilm_layers(isa, shape, rows):
    """MiniLM's layer shapes at 90%, token panels of 16-300 rows, with the FFN epilogues."""
    out, inp = shape
    g = torch.Generator().manual_seed(rows)
    w = magnitude_prune(torch.randn(out, inp, generator=g), 0.9)
    x, b, res = torch.randn(rows, inp, generator=g), torch.randn(out, generator=g), torch.randn(rows, out, generator=g)
    packed = pack(w, "csr16")
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double())
    tol = {"rtol": 1e-5, "atol": 1e-5 * (1 + float(ref.abs().max()))}  # fp32 accumulation of ~150 products
    torch.testing.assert_close(packed.linear(x, b, gelu=True).double(), torch.nn.functional.gelu(ref), **tol)
    torch.testing.assert_close(packed.linear(x, b, residual=res).double(), ref + res.double(), **tol)


def test_epilogue_shape_errors():
    from sparsecraft.errors import SparsecraftError

    packed = pack(magnitude_prune(torch.randn(8, 16), 0.5), "csr16")
    with pytest.raises(SparsecraftError, match="residual"):
        packed.linear(torch.zeros(3, 16), residual=torch.zeros(3, 7))


def test_build_dir_is_where_the_loaded_kernels_are():
    """torch's loader appends to the flag lists it gets; the cache directory's hash must not move."""
    from sparsecraft.kernels import _native

    from .conftest import require_native

    require_native()
    assert any(_native.build_dir().glob("*.so"))
    assert _native.LDFLAGS == ("-fopenmp",)
