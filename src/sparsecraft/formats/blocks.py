"""Block-CSR with 16-bit block-column indices; R = C = 1 is plain CSR ("csr16").

Layout (for W of shape (out, in) and R x C blocks, nbr = ceil(out/R) block rows):
``rowptr`` int32 (nbr + 1), ``cols`` uint16 bits stored as int16 (one per nonzero block: its block
column), ``vals`` float32 (nblocks, C, R) (each block column-major so R outputs are contiguous).
A block is stored when any of its weights is nonzero. Bytes per nonzero for csr16: 4 + 2.

16-bit indices halve index traffic versus int32 CSR, which is what bounds batch-1 speed
(memory bandwidth); blocks of R outputs share one index and one x load ("Fast Sparse ConvNets",
Elsen et al. 2019, use 1xR output blocks the same way).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import SparsecraftError
from .base import FORMATS, PackedWeight, as_weight, expect, int_param

MAX_BLOCK_COLS = 1 << 16


def _to_u16_bits(idx: torch.Tensor) -> torch.Tensor:
    idx = idx.to(torch.int32)
    return torch.where(idx >= 1 << 15, idx - (1 << 16), idx).to(torch.int16)


def _from_u16_bits(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int64) & 0xFFFF



def fills_row_blocks(weight: torch.Tensor, R: int) -> bool:
    """True when the nonzeros of ``weight`` (out, in) fill whole R x 1 blocks (R | out, at least one nonzero),
    i.e. its zeros form the blockRx1 pattern and R x 1 block-CSR stores no padding."""
    out, inp = weight.shape
    nz = weight != 0
    nnz = int(nz.sum())
    return bool(nnz) and out % R == 0 and int(nz.view(out // R, R, inp).any(1).sum()) * R == nnz

@FORMATS.register("block")
class BlockCSR(PackedWeight):
    """R x C block-CSR (params R, C: R rows of W = outputs, C columns = inputs; 4x1 is R=4, C=1).

    Build with :meth:`pack` or :meth:`from_tensors`; the constructor takes the layout as is, unchecked.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in).
    R, C : int
        Block height (outputs) and width (inputs), 1..16.
    rowptr : torch.Tensor
        int32 (ceil(out / R) + 1): offset of each block row's first block.
    cols : torch.Tensor
        int16 (nblocks,): uint16 bits of each block's block-column index.
    vals : torch.Tensor
        float32 (nblocks, C, R): each block's values, column-major.
    """

    format = "block"

    def __init__(self, shape: tuple[int, int], R: int, C: int, rowptr: torch.Tensor, cols: torch.Tensor,
                 vals: torch.Tensor) -> None:
        super().__init__(shape)
        self.R, self.C = int(R), int(C)
        self.rowptr, self.cols, self.vals = rowptr, cols, vals

    @classmethod
    def _check_block(cls, R: int, C: int, in_features: int) -> None:
        int_param({"R": R}, "R", 1, 16)
        int_param({"C": C}, "C", 1, 16)
        if -(-in_features // C) > MAX_BLOCK_COLS:
            raise SparsecraftError(
                f"in_features={in_features} needs more than {MAX_BLOCK_COLS} block columns of width {C}; "
                "use a wider block (C) or keep this layer dense"
            )

    @classmethod
    def pack(cls, weight: torch.Tensor, R: int = 1, C: int = 1, **unused: Any) -> "BlockCSR":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format {cls.format!r}: {', '.join(unused)}")
        w = as_weight(weight)
        out, inp = w.shape
        cls._check_block(R, C, inp)
        nbr, nbc = -(-out // R), -(-inp // C)
        padded = torch.zeros(nbr * R, nbc * C)
        padded[:out, :inp] = w
        blocks = padded.view(nbr, R, nbc, C).permute(0, 2, 3, 1)  # (nbr, nbc, C, R)
        keep = (blocks != 0).flatten(2).any(-1)  # (nbr, nbc)
        br, bc = keep.nonzero(as_tuple=True)
        counts = keep.sum(1)
        rowptr = torch.zeros(nbr + 1, dtype=torch.int32)
        rowptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
        vals = blocks[br, bc].contiguous()  # (nblocks, C, R)
        return cls((out, inp), R, C, rowptr, _to_u16_bits(bc), vals.reshape(-1, C, R))

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "BlockCSR":
        out, inp = int(shape[0]), int(shape[1])
        R, C = int_param(params, "R", 1, 16), int_param(params, "C", 1, 16)
        cls._check_block(R, C, inp)
        nbr, nbc = -(-out // R), -(-inp // C)
        if "cols" not in tensors:
            raise SparsecraftError("packed weight is missing tensor 'cols'; the file is corrupt or of another format")
        nblocks = int(tensors["cols"].numel())
        rowptr = expect(tensors, "rowptr", torch.int32, (nbr + 1,))
        cols = expect(tensors, "cols", torch.int16, (nblocks,))
        vals = expect(tensors, "vals", torch.float32, (nblocks, C, R))
        if rowptr[0] != 0 or rowptr[-1] != nblocks or bool((rowptr[1:] < rowptr[:-1]).any()):
            raise SparsecraftError("packed rowptr is not a valid row pointer (must rise from 0 to the block count)")
        if nblocks and int(_from_u16_bits(cols).max()) >= nbc:
            raise SparsecraftError(f"packed column index out of range (>= {nbc} block columns); the file is corrupt")
        return cls((out, inp), R, C, rowptr, cols, vals)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rowptr": self.rowptr, "cols": self.cols, "vals": self.vals}

    def params(self) -> dict[str, Any]:
        return {"R": self.R, "C": self.C}

    def to_dense(self) -> torch.Tensor:
        out, inp = self.shape
        R, C = self.R, self.C
        nbr, nbc = -(-out // R), -(-inp // C)
        blocks = torch.zeros(nbr, nbc, C, R)
        counts = (self.rowptr[1:] - self.rowptr[:-1]).to(torch.int64)
        br = torch.repeat_interleave(torch.arange(nbr), counts)
        blocks[br, _from_u16_bits(self.cols)] = self.vals
        return blocks.permute(0, 3, 1, 2).reshape(nbr * R, nbc * C)[:out, :inp].contiguous()

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        R, C = self.R, self.C
        counts = (self.rowptr[1:] - self.rowptr[:-1]).to(torch.int64)
        br = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        bc = _from_u16_bits(self.cols)
        r, c = torch.arange(R), torch.arange(C)
        rows = (br.view(-1, 1, 1) * R + r.view(1, 1, R)).expand(-1, C, R)  # vals layout (nblocks, C, R)
        cols = (bc.view(-1, 1, 1) * C + c.view(1, C, 1)).expand(-1, C, R)
        return rows.reshape(-1), cols.reshape(-1)

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.block_linear(x, self.rowptr, self.cols, self.vals, bias, self.shape[0],
                                                  self.R, self.C, residual, act)


@FORMATS.register("csr16")
class CSR16(BlockCSR):
    """Unstructured CSR with uint16 column indices: 6 bytes per nonzero plus 4 per row.

    :class:`BlockCSR` with R = C = 1 and no parameters of its own (same constructor).
    """

    format = "csr16"

    @classmethod
    def pack(cls, weight: torch.Tensor, **params: Any) -> "CSR16":
        if params:
            raise SparsecraftError(f"format 'csr16' takes no parameters, got: {', '.join(params)}")
        return super().pack(weight, R=1, C=1)  # type: ignore[return-value]

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "CSR16":
        return super().from_tensors(shape, {"R": 1, "C": 1}, tensors)  # type: ignore[return-value]

    def params(self) -> dict[str, Any]:
        return {}
