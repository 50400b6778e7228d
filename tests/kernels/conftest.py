"""Shared fixtures: each ISA path the CPU supports; helpers that build pruned weights."""
from __future__ import annotations

import os

import pytest
import torch

from sparsecraft import kernels

ALL_ISAS = ["portable", "avx2", "avx512"]


def require_native() -> None:
    if not kernels.available():
        if os.environ.get("SPARSECRAFT_NO_NATIVE"):
            pytest.skip("native kernels disabled by SPARSECRAFT_NO_NATIVE")
        pytest.fail(f"native kernels failed to build: {kernels.build_error()}")


@pytest.fixture(params=ALL_ISAS)
def isa(request: pytest.FixtureRequest):
    """Run the test once per ISA path; skip paths this CPU lacks; restore the best path after."""
    require_native()
    if request.param not in kernels.supported_isas():
        pytest.skip(f"CPU lacks {request.param}")
    best = kernels.supported_isas()[-1]
    kernels.set_isa(request.param)
    yield request.param
    kernels.set_isa(best)


def magnitude_prune(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ``sparsity`` fraction of smallest-magnitude entries (ties may prune a few more)."""
    k = int(round(w.numel() * sparsity))
    if k <= 0:
        return w.clone()
    if k >= w.numel():
        return torch.zeros_like(w)
    thr = w.abs().flatten().kthvalue(k).values
    return w * (w.abs() > thr)


def nm_prune(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest-magnitude weights in each group of ``m`` along in_features."""
    out, inp = w.shape
    g = w.reshape(out, inp // m, m)
    idx = g.abs().topk(n, dim=-1).indices
    return torch.zeros_like(g).scatter(-1, idx, g.gather(-1, idx)).reshape(out, inp)


def block_prune(w: torch.Tensor, sparsity: float, r: int, c: int) -> torch.Tensor:
    """Zero whole r x c blocks with the smallest L1 norm (edge blocks may be partial)."""
    out, inp = w.shape
    nbr, nbc = -(-out // r), -(-inp // c)
    padded = torch.zeros(nbr * r, nbc * c)
    padded[:out, :inp] = w
    score = padded.view(nbr, r, nbc, c).abs().sum((1, 3))
    keep = magnitude_prune(score, sparsity) != 0
    mask = keep.repeat_interleave(r, 0).repeat_interleave(c, 1)[:out, :inp]
    return w * mask
