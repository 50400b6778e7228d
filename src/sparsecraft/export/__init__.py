"""Sparse models out to, and in from, the tools users already run.

``save_compressed`` / ``load_compressed``: the compressed-tensors sparse formats (llm-compressor,
vLLM). See ``docs/ecosystem.md``.
"""
from __future__ import annotations

from .compressed_tensors import CT_FORMATS, load_compressed, read_compressed, save_compressed

__all__ = ["CT_FORMATS", "load_compressed", "read_compressed", "save_compressed"]
