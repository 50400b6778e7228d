"""Bitmask format: per row and per group of 16 inputs a uint16 mask of the nonzeros, plus the values.

Layout: ``masks`` uint16 bits stored as int16 (out, ceil(in/16)), ``vals`` float32 (nnz) in row-major
order, ``rowptr`` int32 (out + 1) offsets of each row's values. Bytes: 4 per nonzero + in/8 per row,
smaller than csr16 above ~6% density. The batch-1 kernel decodes 16 inputs per step with one
expanding load (AVX-512 ``vexpandps``; AVX2: a table-driven permute per 8 inputs), so its time does
not grow with the number of nonzeros the way csr16's gathers do: it wins from moderate sparsity up
to about 90%, where csr16 takes over.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import SparsecraftError
from .base import FORMATS, PackedWeight, as_weight, expect

_BITS = 1 << torch.arange(16, dtype=torch.int32)


@FORMATS.register("bitmask")
class Bitmask(PackedWeight):
    """Unstructured, one 16-bit mask per 16 inputs of a row plus the nonzero values.

    Build with :meth:`pack` (no parameters) or :meth:`from_tensors`; the constructor takes the
    layout as is, unchecked.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in).
    rowptr : torch.Tensor
        int32 (out + 1): offset of each row's first value in ``vals``.
    masks : torch.Tensor
        int16 (out, ceil(in / 16)): bit j of mask g marks input 16 g + j as stored.
    vals : torch.Tensor
        float32 (nnz,): the stored values, row by row, in input order.
    """

    format = "bitmask"

    def __init__(self, shape: tuple[int, int], rowptr: torch.Tensor, masks: torch.Tensor, vals: torch.Tensor) -> None:
        super().__init__(shape)
        self.rowptr, self.masks, self.vals = rowptr, masks, vals

    @staticmethod
    def _bits(masks: torch.Tensor) -> torch.Tensor:
        """(out, ng) int16 masks -> (out, ng * 16) bool."""
        m = masks.to(torch.int32) & 0xFFFF
        return ((m.unsqueeze(-1) & _BITS) != 0).flatten(1)

    @classmethod
    def pack(cls, weight: torch.Tensor, **params: Any) -> "Bitmask":
        if params:
            raise SparsecraftError(f"format 'bitmask' takes no parameters, got: {', '.join(params)}")
        w = as_weight(weight)
        out, inp = w.shape
        ng = -(-inp // 16)
        padded = torch.zeros(out, ng * 16)
        padded[:, :inp] = w
        nz = padded != 0
        m = (nz.view(out, ng, 16).to(torch.int32) * _BITS).sum(-1)
        masks = torch.where(m >= 1 << 15, m - (1 << 16), m).to(torch.int16)
        rowptr = torch.zeros(out + 1, dtype=torch.int32)
        rowptr[1:] = torch.cumsum(nz.sum(1), 0).to(torch.int32)
        return cls((out, inp), rowptr, masks.contiguous(), padded[nz].contiguous())

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "Bitmask":
        out, inp = int(shape[0]), int(shape[1])
        ng = -(-inp // 16)
        if "vals" not in tensors:
            raise SparsecraftError("packed weight is missing tensor 'vals'; the file is corrupt or of another format")
        nnz = int(tensors["vals"].numel())
        rowptr = expect(tensors, "rowptr", torch.int32, (out + 1,))
        masks = expect(tensors, "masks", torch.int16, (out, ng))
        vals = expect(tensors, "vals", torch.float32, (nnz,))
        bits = cls._bits(masks)
        counts = bits.sum(1)
        if (rowptr[0] != 0 or bool((rowptr[1:] - rowptr[:-1] != counts).any())) or int(rowptr[-1]) != nnz:
            raise SparsecraftError("packed bitmask row pointers do not match the masks; the file is corrupt")
        if bool(bits[:, inp:].any()):
            raise SparsecraftError("packed bitmask marks inputs beyond in_features; the file is corrupt")
        return cls((out, inp), rowptr, masks, vals)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rowptr": self.rowptr, "masks": self.masks, "vals": self.vals}

    def params(self) -> dict[str, Any]:
        return {}

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        bits = self._bits(self.masks)
        dense = torch.zeros(out, bits.shape[1])
        dense[bits] = self.vals
        return dense[:, :inp].contiguous()

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = self._bits(self.masks).nonzero(as_tuple=True)
        return rows, cols

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.bitmask_linear(x, self.rowptr, self.masks, self.vals, bias, residual, act)
