"""Calibration statistics of one ``nn.Linear``: the Gram matrix of its inputs.

For a layer ``y = x W^T`` with calibration inputs stacked as rows ``X`` (shape ``(n_tokens, in)``),
everything the layer-wise methods need follows from ``G = X^T X`` (shape ``(in, in)``):

* Wanda's input-feature norms ``||X_j||_2 = sqrt(G_jj)``;
* SparseGPT's Hessian of the layer-wise squared error, ``H = 2 G / n``;
* the relative reconstruction error of a pruned weight ``W'``:
  ``||X W^T - X W'^T||_F^2 / ||X W^T||_F^2 = tr(D G D^T) / tr(W G W^T)`` with ``D = W - W'``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerStats:
    """Running ``X^T X`` (float32, shape ``(in, in)``) and token count of one layer's inputs.

    ``diag_only`` keeps just the squared column norms (shape ``(in,)``), enough for Wanda and OWL.
    """

    in_features: int
    diag_only: bool = False
    count: int = 0
    gram: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.in_features,) if self.diag_only else (self.in_features, self.in_features)
        self.gram = torch.zeros(shape, dtype=torch.float32)

    def add(self, x: torch.Tensor) -> None:
        """Accumulate inputs ``x`` of shape ``(..., in)`` (rows are tokens)."""
        rows = x.detach().reshape(-1, self.in_features).float()
        if self.diag_only:
            self.gram += rows.pow(2).sum(0)
        else:
            self.gram.addmm_(rows.T, rows)
        self.count += rows.shape[0]

    @property
    def sq_norms(self) -> torch.Tensor:
        """``||X_j||_2^2`` for every input feature ``j``, shape ``(in,)``."""
        return self.gram if self.diag_only else torch.diagonal(self.gram)


def relative_error(weight: torch.Tensor, pruned: torch.Tensor, gram: torch.Tensor) -> float:
    """``||X W^T - X W'^T||^2 / ||X W^T||^2`` from the Gram matrix ``X^T X``; weights ``(out, in)``."""
    w = weight.detach().float()
    d = w - pruned.detach().float()
    g = gram.float()
    num = ((d @ g) * d).sum(dtype=torch.float64)
    den = ((w @ g) * w).sum(dtype=torch.float64)
    return float(num / den) if float(den) > 0 else 0.0
