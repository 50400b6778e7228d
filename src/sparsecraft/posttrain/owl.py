"""OWL: outlier-weighted layer-wise sparsity (Yin et al., "Outlier Weighed Layerwise Sparsity (OWL):
A Missing Secret Sauce for Pruning LLMs to High Sparsity", ICML 2024, arXiv:2310.05175).

Blocks whose Wanda scores ``|W_ij| * ||X_j||`` contain more *outliers* (scores above ``m`` times
the block's mean score) are kept denser. The outlier ratios ``D_b`` are rescaled linearly onto a
band of width ``2 * lam`` and shifted so that the mean density stays ``1 - target``:

    density_b = 2 lam (D_b - min D) / (max D - min D) - mean(...) + (1 - target)

All Linear layers of a block share that block's sparsity.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import SparsecraftError


def outlier_ratio(scores: Sequence[torch.Tensor], m: float = 5.0) -> float:
    """Fraction of all entries of ``scores`` (Wanda scores of one block's layers) above ``m * mean``."""
    flat = torch.cat([s.reshape(-1).float() for s in scores])
    return float((flat > m * flat.mean()).float().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float = 0.08) -> list[float]:
    """Per-block sparsities from outlier ratios (see module docstring); mean equals ``target``.

    ``lam`` is the largest deviation from ``target``; results are clipped to ``[0, 0.99]``.
    """
    if not 0.0 <= lam < 1.0:
        raise SparsecraftError(f"OWL lambda must be in [0, 1), got {lam}")
    d = torch.tensor(list(ratios), dtype=torch.float64)
    spread = float(d.max() - d.min()) if len(d) else 0.0
    scaled = (d - d.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(d)
    density = scaled - scaled.mean() + (1.0 - target)
    return [float(min(max(1.0 - x, 0.0), 0.99)) for x in density]
