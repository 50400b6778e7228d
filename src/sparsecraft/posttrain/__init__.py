"""Calibrated, layer-wise post-training pruning of pretrained transformers.

``prune_model(model, batches, method, sparsity, pattern)`` prunes every Linear in a model's
transformer blocks, block by block, with ``magnitude``, ``wanda``, ``sparsegpt`` or their OWL
variants (``owl-wanda``, ``owl-sparsegpt``), unstructured or N:M. See ``docs/posttrain.md``.
"""
from __future__ import annotations

from .methods import METHODS, Method, PruneResult, magnitude, sparsegpt, wanda
from .owl import outlier_ratio, owl_sparsities
from .pipeline import BlockCall, LayerReport, PruneReport, capture_block_inputs, find_blocks, prune_model
from .stats import LayerStats, relative_error

__all__ = [
    "METHODS",
    "BlockCall",
    "LayerReport",
    "LayerStats",
    "Method",
    "PruneReport",
    "PruneResult",
    "capture_block_inputs",
    "find_blocks",
    "magnitude",
    "outlier_ratio",
    "owl_sparsities",
    "prune_model",
    "relative_error",
    "sparsegpt",
    "wanda",
]
