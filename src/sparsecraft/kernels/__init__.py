"""Native sparse x dense kernels for y = x W^T + b on the CPU (AVX-512, AVX2+FMA, portable).

The bottom layer of the inference stack: no other part of sparsecraft but :mod:`~sparsecraft.errors` is imported.
The linear operators registered with torch.library, each with a fake implementation for torch.compile:

* ``torch.ops.sparsecraft.block_linear`` - CSR and R x C block-CSR with 16-bit column indices
  (formats ``csr16`` and ``block``);
* ``torch.ops.sparsecraft.nm_linear`` - packed N:M (format ``nm``);
* ``torch.ops.sparsecraft.bitmask_linear`` - a 16-bit mask per 16 inputs of a row (format ``bitmask``);
* ``torch.ops.sparsecraft.q8_linear`` - int8 values with one fp32 scale per group of stored values, in
  csr16 or dense order (formats ``csr16_int8`` and ``dense_int8``).

(plus ``sddmm`` and ``conv_cf``, see :mod:`._native`).

Use them through :mod:`sparsecraft.formats` (``pack(weight, fmt).linear(x, bias)``), which
validates the layouts. This package builds and loads them (:func:`native`, :func:`available`,
:func:`build_error`, :func:`build_dir`) and chooses the instruction set (:func:`get_isa`,
:func:`set_isa`, :func:`supported_isas`).
"""
from ._native import available, build_dir, build_error, get_isa, native, set_isa, supported_isas

__all__ = ["available", "build_dir", "build_error", "get_isa", "native", "set_isa", "supported_isas"]
