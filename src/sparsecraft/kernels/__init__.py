"""Native sparse x dense kernels for y = x W^T + b on the CPU (AVX-512, AVX2+FMA, portable).

The operators ``torch.ops.sparsecraft.block_linear`` (CSR and R x C block-CSR with 16-bit column
indices) and ``torch.ops.sparsecraft.nm_linear`` (packed N:M) are registered with torch.library,
with fake implementations for torch.compile. Use them through :mod:`sparsecraft.formats`.
"""
from ._native import available, build_dir, build_error, get_isa, native, set_isa, supported_isas

__all__ = ["available", "build_dir", "build_error", "get_isa", "native", "set_isa", "supported_isas"]
