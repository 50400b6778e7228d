"""Compressed storage for sparse Linear weights.

Formats (registry :data:`FORMATS`, name -> class): ``csr16`` -> :class:`CSR16` (unstructured,
uint16 column indices), ``bitmask`` -> :class:`Bitmask` (unstructured, a 16-bit mask per 16
inputs), ``block`` -> :class:`BlockCSR` (R x C blocks, e.g. 4x1, 1x4, 8x1), ``nm`` ->
:class:`PackedNM` (packed N:M, e.g. 2:4; the storage format, not the pruning pattern
:class:`sparsecraft.patterns.NM`); ``csr16_int8`` -> :class:`Int8CSR`, ``block_int8`` ->
:class:`Int8Block` (R x 1) and ``dense_int8`` -> :class:`Int8Dense` (int8 values, one fp32 scale per
G stored values: lossy, within scale / 2).
Every other format packs exactly (``to_dense()`` returns the weight),
reports its bytes, runs ``x @ W.T + b`` with the native kernels (:mod:`sparsecraft.kernels`), and
saves to / loads from safetensors with validation (:func:`save_packed`, :func:`load_packed`).

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
from .int8 import Int8Block, Int8CSR, Int8Dense, pack_int8
from .io import load_packed, save_packed
from .nm import PackedNM


def pack(weight: torch.Tensor, format: str = "csr16", **params: Any) -> PackedWeight:
    """Compress a weight into one of the :data:`FORMATS`.

    Parameters
    ----------
    weight : torch.Tensor
        Floating (out_features, in_features); its zeros are dropped.
    format : str
        'csr16', 'bitmask', 'block', 'nm', 'csr16_int8', 'block_int8' or 'dense_int8'.
    **params
        R and C (1..16) for 'block'; N and M for 'nm' (default 2:4); G (values per scale, a power of
        two >= 16, default 64) for the int8 formats, and R (default 4) for 'block_int8'; none otherwise.

    Returns
    -------
    PackedWeight
        The packed weight (exact: ``to_dense()`` gives ``weight`` back as float32; int8: within scale / 2).
    """
    return FORMATS.get(format).pack(weight, **params)


__all__ = ["FORMATS", "PackedWeight", "Bitmask", "CSR16", "BlockCSR", "Int8Block", "Int8CSR", "Int8Dense", "PackedNM",
           "pack", "pack_int8", "load_packed", "save_packed"]
