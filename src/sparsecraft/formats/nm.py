"""Packed N:M: per row and per group of M consecutive inputs, N values and their uint8 offsets.

``vals`` float32 (out, in/M*N) and ``idx`` uint8 (same shape, each in [0, M)). Groups holding
fewer than N nonzeros store explicit zeros. For 2:4 this is 0.625x the dense bytes. The kernel
fetches x for 16 values with one register permute (AVX-512 ``vpermt2ps`` over 32 inputs) instead of
a gather, which is what lets 2:4 beat dense at batch 1 (half the weight bytes, same x traffic).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import SparsecraftError
from .base import FORMATS, PackedWeight, as_weight, expect, int_param


@FORMATS.register("nm")
class PackedNM(PackedWeight):
    """Packed N:M storage (params N, M): at most N nonzeros in each group of M along in_features.

    The storage format registered as ``'nm'``; the pruning pattern that produces such weights is
    :class:`sparsecraft.patterns.NM`. Build with :meth:`pack` or :meth:`from_tensors`; the
    constructor takes the layout as is, unchecked.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in), ``in`` a multiple of M.
    N, M : int
        Values kept per group, group size (1 <= N <= M <= 255).
    vals : torch.Tensor
        float32 (out, in / M * N): the N values of each group (explicit zeros where fewer).
    idx : torch.Tensor
        uint8, same shape: each value's offset in its group, in [0, M).
    """

    format = "nm"

    def __init__(self, shape: tuple[int, int], N: int, M: int, vals: torch.Tensor, idx: torch.Tensor) -> None:
        super().__init__(shape)
        self.N, self.M, self.vals, self.idx = int(N), int(M), vals, idx

    @staticmethod
    def _check(N: int, M: int, in_features: int) -> None:
        int_param({"M": M}, "M", 1, 255)
        int_param({"N": N}, "N", 1, M)
        if in_features % M:
            raise SparsecraftError(f"in_features={in_features} is not a multiple of M={M}; N:M needs whole groups")

    @classmethod
    def pack(cls, weight: torch.Tensor, N: int = 2, M: int = 4, **unused: Any) -> "PackedNM":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format 'nm': {', '.join(unused)}")
        w = as_weight(weight)
        out, inp = w.shape
        cls._check(N, M, inp)
        groups = w.view(out, inp // M, M)
        nz = (groups != 0).sum(-1)
        if bool((nz > N).any()):
            raise SparsecraftError(
                f"weight is not {N}:{M} sparse ({int(nz.max())} nonzeros in some group of {M}); "
                f"prune it to {N}:{M} first"
            )
        order = torch.argsort((groups == 0).to(torch.int8), dim=-1, stable=True)[..., :N]
        idx = torch.sort(order, dim=-1).values
        vals = torch.gather(groups, -1, idx)
        return cls((out, inp), N, M, vals.reshape(out, -1).contiguous(), idx.reshape(out, -1).to(torch.uint8))

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "PackedNM":
        out, inp = int(shape[0]), int(shape[1])
        M = int_param(params, "M", 1, 255)
        N = int_param(params, "N", 1, M)
        cls._check(N, M, inp)
        vals = expect(tensors, "vals", torch.float32, (out, inp // M * N))
        idx = expect(tensors, "idx", torch.uint8, (out, inp // M * N))
        if idx.numel() and int(idx.max()) >= M:
            raise SparsecraftError(f"packed N:M offset out of range (>= M={M}); the file is corrupt")
        return cls((out, inp), N, M, vals, idx)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"vals": self.vals, "idx": self.idx}

    def params(self) -> dict[str, Any]:
        return {"N": self.N, "M": self.M}

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        groups = torch.zeros(out, inp // self.M, self.M)
        groups.scatter_(-1, self.idx.view(out, -1, self.N).to(torch.int64), self.vals.view(out, -1, self.N))
        return groups.view(out, inp)

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        out, L = self.vals.shape
        rows = torch.arange(out).view(-1, 1).expand(out, L)
        cols = (torch.arange(L) // self.N * self.M).view(1, -1) + self.idx.to(torch.int64)
        return rows.reshape(-1), cols.reshape(-1)

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.nm_linear(x, self.vals, self.idx, bias, self.N, self.M, residual, act)
