"""Calibrated, layer-wise post-training pruning of pretrained transformers.

``sp, report = prune_model(model, batches, method, sparsity, pattern)`` prunes the Linears in a
model's transformer blocks, block by block, with ``magnitude``, ``wanda``, ``sparsegpt`` or their
OWL variants (``owl-wanda``, ``owl-sparsegpt``), unstructured or N:M, and returns the masks in a
:class:`sparsecraft.Sparsifier` (save, report, fine-tune and convert it like any other). See
``docs/posttrain.md``.
"""
from __future__ import annotations

from ..calibration import LayerStats, relative_error
from .finetune import DISTILL_LOSSES, distill
from .methods import METHODS, Method, PruneResult, magnitude, sparsegpt, wanda
from .owl import outlier_ratio, owl_sparsities
from .pipeline import (
    BlockCall,
    LayerReport,
    PruneReport,
    block_targets,
    capture_block_inputs,
    find_blocks,
    prune_model,
)

__all__ = [
    "DISTILL_LOSSES",
    "METHODS",
    "BlockCall",
    "LayerReport",
    "LayerStats",
    "Method",
    "PruneReport",
    "PruneResult",
    "block_targets",
    "capture_block_inputs",
    "distill",
    "find_blocks",
    "magnitude",
    "outlier_ratio",
    "owl_sparsities",
    "prune_model",
    "relative_error",
    "sparsegpt",
    "wanda",
]
