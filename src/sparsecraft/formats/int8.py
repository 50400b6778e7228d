"""Weight-only int8 storage with one fp32 scale per group of G consecutive stored values.

After GQSA ("Group Quantization and Sparsity for Accelerating Large Language Model Inference",
Zeng et al. 2024): quantisation and sparsity are combined, the zeros dropped by a sparse format and
the kept values quantised in small groups. Here the kept values of a csr16 layout (``csr16_int8``),
or every value of a dense row-major layout (``dense_int8``, so int8 works at 0% sparsity too), are
stored as symmetric int8 ``q = round(w / s)`` in [-127, 127] with ``s = max|w| / 127`` over each
group of G consecutive values of the stored order; ``w_hat = s * q`` differs from ``w`` by at most
``s / 2``. Bytes per stored value: 1 (+ 2 for the csr16 column) + 4 / G.

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
from .blocks import CSR16, MAX_BLOCK_COLS

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


@FORMATS.register("csr16_int8")
class Int8CSR(_Int8Weight):
    """csr16 (uint16 column indices) with int8 values and one fp32 scale per G stored values (param G).

    Lossy: ``to_dense()`` is the dequantised weight, within ``scale / 2`` of the packed one at every
    stored position and exactly zero elsewhere. Bytes per nonzero: 1 + 2 + 4 / G, plus 4 per row.

    Parameters
    ----------
    shape : tuple[int, int]
        (out, in), in <= 65536.
    G : int
        Stored values per scale (a power of two >= 16).
    rowptr : torch.Tensor
        int32 (out + 1).
    cols : torch.Tensor
        int16 (nnz,): uint16 bits of each value's input index.
    q : torch.Tensor
        int8 (ceil(nnz / G) * G,), zero-padded.
    scales : torch.Tensor
        float32 (ceil(nnz / G),).
    """

    format = "csr16_int8"

    def __init__(self, shape: tuple[int, int], G: int, rowptr: torch.Tensor, cols: torch.Tensor, q: torch.Tensor,
                 scales: torch.Tensor) -> None:
        super().__init__(shape)
        self.G, self.rowptr, self.cols, self.q, self.scales = int(G), rowptr, cols, q, scales

    @property
    def stored_values(self) -> int:
        return int(self.cols.numel())

    @classmethod
    def pack(cls, weight: torch.Tensor, G: int = DEFAULT_GROUP, **unused: Any) -> "Int8CSR":
        if unused:
            raise SparsecraftError(f"unknown parameter(s) for format 'csr16_int8': {', '.join(unused)}")
        G = check_group(G)
        csr = CSR16.pack(as_weight(weight))
        q, scales = quantize(csr.vals.reshape(-1), G)
        return cls(csr.shape, G, csr.rowptr, csr.cols, q, scales)

    @classmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "Int8CSR":
        G = check_group(params.get("G"))
        if "cols" not in tensors:
            raise SparsecraftError("packed weight is missing tensor 'cols'; the file is corrupt or of another format")
        nnz = int(tensors["cols"].numel())
        q, scales = _expect_quantized(tensors, nnz, G)
        layout = CSR16.from_tensors(shape, {}, {**tensors, "vals": torch.zeros(nnz, 1, 1)})  # checks rowptr, cols
        return cls(layout.shape, G, layout.rowptr, layout.cols, q, scales)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"rowptr": self.rowptr, "cols": self.cols, "q": self.q, "scales": self.scales}

    def _layout(self) -> CSR16:
        return CSR16(self.shape, 1, 1, self.rowptr, self.cols, self.values().view(-1, 1, 1))

    def to_dense(self) -> torch.Tensor:
        return self._layout().to_dense()

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._layout().positions()

    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        return torch.ops.sparsecraft.q8_linear(x, self.rowptr, self.cols, self.q, self.scales, bias, self.shape[0],
                                               self.G, residual, act)


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


def int8_nbytes(shape: tuple[int, int], nnz: int, G: int) -> dict[str, int]:
    """Bytes of each int8 layout for a weight.

    Parameters
    ----------
    shape : tuple[int, int]
        (out_features, in_features).
    nnz : int
        Its nonzeros.
    G : int
        Values per scale.

    Returns
    -------
    dict[str, int]
        ``{"csr16_int8": ..., "dense_int8": ...}``: values (padded to G), scales, and for csr16 the
        column indices and row pointers.
    """
    out, inp = shape
    return {"csr16_int8": 4 * (out + 1) + 2 * nnz + -(-nnz // G) * (G + 4),
            "dense_int8": -(-out * inp // G) * (G + 4)}


def pack_int8(weight: torch.Tensor, sparse: bool, G: int = DEFAULT_GROUP) -> PackedWeight:
    """The smaller int8 layout for a weight: csr16_int8 when ``sparse``, the row fits the 16-bit index
    and it takes fewer bytes than dense_int8 (below ~65% zeros it does not: 3 + 4/G bytes per nonzero
    against 1 + 4/G per weight), else dense_int8.

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
        An :class:`Int8CSR` or :class:`Int8Dense`.
    """
    sizes = int8_nbytes((weight.shape[0], weight.shape[1]), int((weight != 0).sum()), G)
    use_csr = sparse and weight.shape[-1] <= MAX_BLOCK_COLS and sizes["csr16_int8"] < sizes["dense_int8"]
    return FORMATS.get("csr16_int8" if use_csr else "dense_int8").pack(weight, G=G)
