"""Sparse models out to, and in from, the tools users already run.

``save_compressed`` / ``load_compressed``: the compressed-tensors sparse formats (llm-compressor,
vLLM). ``export_onnx`` / ``max_difference``: ONNX files (dense weights with their zeros) checked in
ONNX Runtime. See ``docs/ecosystem.md``.
"""
from __future__ import annotations

from .compressed_tensors import CT_FORMATS, load_compressed, read_compressed, save_compressed
from .onnx import dense_equivalent, export_onnx, max_difference, run_onnx

__all__ = ["CT_FORMATS", "dense_equivalent", "export_onnx", "load_compressed", "max_difference", "read_compressed",
           "run_onnx", "save_compressed"]
