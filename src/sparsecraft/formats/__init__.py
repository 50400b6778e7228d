"""Compressed storage for sparse Linear weights.

Formats (registry :data:`FORMATS`): ``csr16`` (unstructured, uint16 column indices), ``bitmask``
(unstructured, a 16-bit mask per 16 inputs), ``block``
(R x C blocks, e.g. 4x1, 1x4, 8x1), ``nm`` (packed N:M, e.g. 2:4). Every format packs exactly
(``to_dense()`` returns the weight), reports its bytes, runs ``x @ W.T + b`` with the native kernels,
and saves to / loads from safetensors with validation.

    >>> from sparsecraft.formats import pack
    >>> packed = pack(weight, "block", R=4, C=1)
    >>> y = packed.linear(x, bias)
"""
from __future__ import annotations

from typing import Any

import torch

from .base import FORMATS, PackedWeight
from .bitmask import Bitmask
from .blocks import CSR16, BlockCSR
from .io import load_packed, save_packed
from .nm import PackedNM


def pack(weight: torch.Tensor, format: str = "csr16", **params: Any) -> PackedWeight:
    """Compress ``weight`` (out, in) into ``format`` with its parameters (R/C for block, N/M for nm)."""
    return FORMATS.get(format).pack(weight, **params)


__all__ = ["FORMATS", "PackedWeight", "Bitmask", "CSR16", "BlockCSR", "PackedNM", "pack", "load_packed", "save_packed"]
