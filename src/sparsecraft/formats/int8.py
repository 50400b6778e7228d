"""Weight-only int8 storage with one fp32 scale per group of G consecutive stored values.

After GQSA ("Group Quantization and Sparsity for Accelerating Large Language Model Inference",
Zeng et al. 2024): quantisation and sparsity are combined, the zeros dropped by a sparse format and
the kept values quantised in small groups. Here the kept values of a csr16 layout (``csr16_int8``) or
of an R x 1 block-CSR layout (``block_int8``), or every value of a dense row-major layout
(``dense_int8``, so int8 works at 0% sparsity too), are stored as symmetric int8 ``q = round(w / s)``
in [-127, 127] with ``s = max|w| / 127`` over each group of G consecutive values of the stored order;
``w_hat = s * q`` differs from ``w`` by at most ``s / 2``. Bytes per stored value: 1 + 4 / G, plus
the 2-byte column of each nonzero (csr16) or block (R x 1). :func:`pack_int8` picks the smallest.

Why groups of the stored order (which may run from the end of one row into the next) and G a power
of two >= 16: every aligned run of 16 stored values then has a single scale, found by a shift, so the
kernel dequantises 16 values with one int8 -> int32 -> fp32 convert and one multiply and runs the
fp32 loop unchanged, with no per-row group pointer. Activations stay fp32 (weight-only): the AVX-512
path dequantises, and VNNI (int8 x int8 dot products) is not used.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from ..errors import SparsecraftError
from .base import FORMATS, PackedWeight, as_weight, expect, int_param
from .blocks import MAX_BLOCK_COLS, BlockCSR, fills_row_blocks

DEFAULT_GROUP = 64
MAX_GROUP = 4096


def check_group(G: Any) -> int:
    """Validate a group size.

    Parameters
    ----------
    G : Any
        Values per scale.

    Returns
    -------
    int
        ``G``; a one-line SparsecraftError unless it is an int power of two in [16, 4096].
    """
    G = int_param({"G": G}, "G", 16, MAX_GROUP)
    if G & (G - 1):
        raise SparsecraftError(f"group size G must be a power of two (16, 32, 64, ...; the kernel finds a value's "
                               f"scale by a shift), got {G}")
    return G


def quantize(values: torch.Tensor, G: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantisation of a value sequence in groups of G.

    Parameters
    ----------
    values : torch.Tensor
        float32 (n,), in stored order.
    G : int
        Values per scale (a power of two >= 16).

    Returns
    -------
    q : torch.Tensor
        int8 (ceil(n / G) * G,): ``round(values / scale)`` in [-127, 127], zero-padded.
    scales : torch.Tensor
        float32 (ceil(n / G),): max |value| of each group / 127 (0 for an all-zero group).
    """
    n = values.numel()
    groups = -(-n // G)
    padded = torch.zeros(groups * G, dtype=torch.float32)
    padded[:n] = values.reshape(-1)
    grouped = padded.view(groups, G)
    scales = grouped.abs().amax(1) / 127.0
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(grouped / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(-1), scales


def dequantize(q: torch.Tensor, scales: torch.Tensor, n: int, G: int) -> torch.Tensor:
    """The values int8 ``q`` with ``scales`` stand for, as the kernel computes them (``scale * q`` in fp32).

    Parameters
    ----------
    q : torch.Tensor
        int8 (ceil(n / G) * G,).
    scales : torch.Tensor
        float32 (ceil(n / G),).
    n : int
        Number of real values (the rest is padding).
    G : int
        Values per scale.

    Returns
    -------
    torch.Tensor
        float32 (n,).
    """
    return (q.view(-1, G).to(torch.float32) * scales[:, None]).reshape(-1)[:n]


def _expect_quantized(tensors: dict[str, torch.Tensor], n: int, G: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = -(-n // G)
    q = expect(tensors, "q", torch.int8, (groups * G,))
    scales = expect(tensors, "scales", torch.float32, (groups,))
    if not bool(torch.isfinite(scales).all()) or bool((scales < 0).any()):
        raise SparsecraftError("packed int8 scales must be finite and >= 0; the file is corrupt")
    return q, scales


class _Int8Weight(PackedWeight):
    """What both int8 layouts share: ``q`` int8 and ``scales`` float32 over the stored order, group size G."""

    q: torch.Tensor
    scales: torch.Tensor
    G: int

    def values(self) -> torch.Tensor:
        """The dequantised stored values, float32 (stored_values,), in stored order."""
        return dequantize(self.q, self.scales, self.stored_values, self.G)

    def params(self) -> dict[str, Any]:
        return {"G": self.G}


@FORMATS.register("block_int8")
class Int8Block(_Int8Weight):
    """R x 1 block-CSR (uint16 block columns) with int8 values and one fp32 scale per G stored values
    (params R, G). csr16_int8 is the R = 1 case.

    Lossy: ``to_dense()`` is the dequantised weight, within ``scale / 2`` of the packed one at every
    stored position and exactly zero elsewhere. Bytes per stored block: R (1 + 4 / G) + 2, plus 4 per
    block row. R is a power of two (1..16) so a block never spans two groups.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in), in <= 65536.
    R : int
        Outputs per block: 1, 2, 4, 8 or 16 (4 and 8 have vector kernels).
    G : int
        Stored values per scale (a power of two >= 16).
    rowptr : torch.Tensor
        int32 (ceil(out / R) + 1): each block row's first block.
    cols : torch.Tensor
        int16 (nblocks,): uint16 bits of each block's input index.
    q : torch.Tensor
        int8 (ceil(nblocks R / G) * G,), zero-padded: block k's values at [k R, k R + R).
    scales : torch.Tensor
        float32 (ceil(nblocks R / G),).
    """

    format = "block_int8"

    def __init__(self, shape: tuple[int, int], R: int, G: int, rowptr: torch.Tensor, cols: torch.Tensor,
                 q: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__(shape)
        self.R, self.G, self.rowptr, self.cols, self.q, self.scales = int(R), int(G), rowptr, cols, q, scales

    @property
    def stored_values(self) -> int:
        return int(self.cols.numel()) * self.R

    @staticmethod
    def _check_R(R: Any) -> int:
        R = int_param({"R": R}, "R", 1, 16)
        if R & (R - 1):
            raise SparsecraftError(f"block_int8 needs R a power of two (1, 2, 4, 8, 16), got {R}")
        return R

    @classmethod
    def pack(cls, weight: torch.Tensor, R: int = 4, G: int = DEFAULT_GROUP, **unused: Any) -> "Int8Block":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format {cls.format!r}: {', '.join(unused)}")
        return cls._pack(weight, cls._check_R(R), check_group(G))

    @classmethod
    def _pack(cls, weight: torch.Tensor, R: int, G: int) -> "Int8Block":
        blocks = BlockCSR.pack(as_weight(weight), R=R, C=1)
        q, scales = quantize(blocks.vals.reshape(-1), G)
        return cls(blocks.shape, R, G, blocks.rowptr, blocks.cols, q, scales)

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "Int8Block":
        return cls._from_tensors(shape, cls._check_R(params.get("R")), check_group(params.get("G")), tensors)

    @classmethod
    def _from_tensors(cls, shape: tuple[int, int], R: int, G: int, tensors: dict[str, torch.Tensor]) -> "Int8Block":
        if "cols" not in tensors:
            raise SparsecraftError("packed weight is missing tensor 'cols'; the file is corrupt or of another format")
        nblocks = int(tensors["cols"].numel())
        q, scales = _expect_quantized(tensors, nblocks * R, G)
        layout = BlockCSR.from_tensors(shape, {"R": R, "C": 1},  # checks rowptr and cols
                                       {**tensors, "vals": torch.zeros(nblocks, 1, R)})
        return cls(layout.shape, R, G, layout.rowptr, layout.cols, q, scales)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rowptr": self.rowptr, "cols": self.cols, "q": self.q, "scales": self.scales}

    def params(self) -> dict[str, Any]:
        return {"R": self.R, "G": self.G}

    def _layout(self) -> BlockCSR:
        return BlockCSR(self.shape, self.R, 1, self.rowptr, self.cols, self.values().view(-1, 1, self.R))

    def to_dense(self) -> torch.Tensor:
        return self._layout().to_dense()

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layout().positions()

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.q8_linear(x, self.rowptr, self.cols, self.q, self.scales, bias, self.shape[0],
                                               self.G, residual, act, self.R)


@FORMATS.register("csr16_int8")
class Int8CSR(Int8Block):
    """csr16 (uint16 column indices) with int8 values and one fp32 scale per G stored values (param G).

    :class:`Int8Block` with R = 1. Bytes per nonzero: 1 + 2 + 4 / G, plus 4 per row.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in), in <= 65536.
    R : int
        1.
    G, rowptr, cols, q, scales
        As :class:`Int8Block` (rowptr has out + 1 entries, one col and one value per nonzero).
    """

    format = "csr16_int8"

    @classmethod
    def pack(cls, weight: torch.Tensor, G: int = DEFAULT_GROUP, **unused: Any) -> "Int8CSR":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format 'csr16_int8': {', '.join(unused)}")
        return cls._pack(weight, 1, check_group(G))  # type: ignore[return-value]

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "Int8CSR":
        return cls._from_tensors(shape, 1, check_group(params.get("G")), tensors)  # type: ignore[return-value]

    def params(self) -> dict[str, Any]:
        return {"G": self.G}


@FORMATS.register("dense_int8")
class Int8Dense(_Int8Weight):
    """Every weight as int8, row-major, with one fp32 scale per G consecutive values (param G).

    The int8 layout for layers with too few zeros for csr16 (0% sparsity) or too wide for its
    16-bit index. Lossy as :class:`Int8CSR`. Bytes per weight: 1 + 4 / G.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in).
    G : int
        Values per scale (a power of two >= 16).
    q : torch.Tensor
        int8 (ceil(out * in / G) * G,), zero-padded.
    scales : torch.Tensor
        float32 (ceil(out * in / G),).
    """

    format = "dense_int8"

    def __init__(self, shape: tuple[int, int], G: int, q: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__(shape)
        self.G, self.q, self.scales = int(G), q, scales

    @property
    def stored_values(self) -> int:
        return self.shape[0] * self.shape[1]

    @classmethod
    def pack(cls, weight: torch.Tensor, G: int = DEFAULT_GROUP, **unused: Any) -> "Int8Dense":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format 'dense_int8': {', '.join(unused)}")
        G = check_group(G)
        w = as_weight(weight)
        q, scales = quantize(w.reshape(-1), G)
        return cls((w.shape[0], w.shape[1]), G, q, scales)

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "Int8Dense":
        G = check_group(params.get("G"))
        out, inp = int(shape[0]), int(shape[1])
        q, scales = _expect_quantized(tensors, out * inp, G)
        return cls((out, inp), G, q, scales)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"q": self.q, "scales": self.scales}

    def to_dense(self) -> torch.Tensor:
        return self.values().view(self.shape).clone()

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        out, inp = self.shape
        return (torch.arange(out).repeat_interleave(inp), torch.arange(inp).repeat(out))

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.q8_linear(x, None, None, self.q, self.scales, bias, self.shape[0], self.G,
                                               residual, act)


def int8_nbytes(shape: tuple[int, int], nnz: int, G: int, blocks: Optional[dict[int, int]] = None) -> dict[str, int]:
    """Bytes of each int8 layout for a weight.

    Parameters
    ----------
    shape : tuple[int, int]
        (out_features, in_features).
    nnz : int
        Its nonzeros.
    G : int
        Values per scale.
    blocks : dict[int, int], optional
        R -> stored R x 1 blocks, for the block heights whose blocks the nonzeros fill.

    Returns
    -------
    dict[str, int]
        ``{"csr16_int8": ..., "dense_int8": ..., "block_int8 R=4": ...}``: values (padded to G),
        scales, and for the sparse layouts the column indices and row pointers.
    """
    out, inp = shape
    sizes = {"csr16_int8": 4 * (out + 1) + 2 * nnz + -(-nnz // G) * (G + 4),
             "dense_int8": -(-out * inp // G) * (G + 4)}
    for R, n in (blocks or {}).items():
        sizes[f"block_int8 R={R}"] = 4 * (-(-out // R) + 1) + 2 * n + -(-n * R // G) * (G + 4)
    return sizes


def pack_int8(weight: torch.Tensor, sparse: bool, G: int = DEFAULT_GROUP) -> PackedWeight:
    """The smallest int8 layout for a weight: dense_int8, or when ``sparse`` (and the row fits the 16-bit
    index) csr16_int8 or, where the nonzeros fill whole R x 1 blocks (R = 8 or 4), block_int8, if fewer bytes.

    csr16_int8 needs fewer bytes than dense_int8 above ~65% zeros (3 + 4/G bytes per nonzero against
    1 + 4/G per weight); 4 x 1 blocks above ~35% zeros (1.5 + 4/G per nonzero).

    Parameters
    ----------
    weight : torch.Tensor
        Floating (out_features, in_features).
    sparse : bool
        Whether storing only the nonzeros may be chosen.
    G : int
        Values per scale.

    Returns
    -------
    PackedWeight
        An :class:`Int8CSR`, :class:`Int8Block` or :class:`Int8Dense`.
    """
    w = as_weight(weight)
    out, inp = w.shape
    nnz = int((w != 0).sum())
    if not sparse or inp > MAX_BLOCK_COLS:
        return Int8Dense.pack(w, G=G)
    blocks = {R: nnz // R for R in (8, 4) if fills_row_blocks(w, R)}
    sizes = int8_nbytes((out, inp), nnz, G, blocks)
    best = min(sizes, key=sizes.__getitem__)
    if best.startswith("block_int8"):
        return Int8Block.pack(w, R=int(best.split("=")[1]), G=G)
    return FORMATS.get(best).pack(w, G=G)
