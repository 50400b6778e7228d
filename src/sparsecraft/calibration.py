"""Calibration statistics of layer inputs: the one recorder behind Wanda, SparseGPT and OWL.

For a layer ``y = x W^T`` with calibration inputs stacked as rows ``X`` (shape ``(n_tokens, in)``),
everything the data-driven criteria and the post-training methods need follows from the Gram
matrix ``G = X^T X`` (shape ``(in, in)``) or just its diagonal:

* Wanda's input-feature norms ``||X_j||_2 = sqrt(G_jj)`` (Sun et al., ICLR 2024, arXiv:2306.11695);
* SparseGPT's Hessian of the layer-wise squared error, ``H = 2 G / n`` (Frantar & Alistarh 2023);
* the relative reconstruction error of a pruned weight ``W'``:
  ``||X W^T - X W'^T||_F^2 / ||X W^T||_F^2 = tr(D G D^T) / tr(W G W^T)`` with ``D = W - W'``.

Convolutions count each input channel over batch and positions (diagonal only); an Embedding's
inputs are indices, so its "norm" per row is the square root of how often the row is looked up.
:class:`InputRecorder` hooks a set of layers during forward passes; memory stays bounded because
callers record one block (or diagonals only) at a time.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .errors import SparsecraftError

KINDS = ("linear", "conv", "embedding")


@dataclass
class LayerStats:
    """Running ``X^T X`` (float32) and token count of one layer's inputs.

    Parameters
    ----------
    in_features : int
        Input width: ``in_features`` (Linear), ``in_channels`` (Conv) or ``num_embeddings``.
    diag_only : bool
        Keep only the squared column norms, shape ``(in,)`` (enough for Wanda and OWL; required
        for Conv and Embedding layers). Otherwise the full Gram matrix ``(in, in)``.
    kind : {"linear", "conv", "embedding"}
        How inputs map to rows: token rows, channel values at every position, or indices.
    groups : int
        Conv groups (decides which input channels each filter sees).
    """

    in_features: int
    diag_only: bool = False
    kind: str = "linear"
    groups: int = 1
    count: int = 0
    gram: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SparsecraftError(f"unknown layer kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if not self.diag_only and self.kind != "linear":
            raise SparsecraftError(f"a full Gram matrix needs a Linear layer, not a {self.kind} layer")
        shape = (self.in_features,) if self.diag_only else (self.in_features, self.in_features)
        self.gram = torch.zeros(shape, dtype=torch.float32)

    @classmethod
    def for_module(cls, module: nn.Module, diag_only: bool = False) -> "LayerStats":
        """Empty statistics sized for ``module`` (Linear, Conv1d/2d/3d or Embedding)."""
        if isinstance(module, nn.Linear):
            return cls(module.in_features, diag_only)
        if isinstance(module, nn.modules.conv._ConvNd):
            return cls(module.in_channels, diag_only, "conv", module.groups)
        if isinstance(module, nn.Embedding):
            return cls(module.num_embeddings, diag_only, "embedding")
        raise SparsecraftError(f"cannot record the inputs of a {type(module).__name__} layer")

    def add(self, x: torch.Tensor) -> None:
        """Accumulate one batch of inputs.

        Parameters
        ----------
        x : Tensor
            Linear: ``(..., in)`` (rows are tokens); Conv: ``(B, C, *spatial)``; Embedding: indices.
        """
        x = x.detach()
        if self.kind == "embedding":
            self.gram += torch.bincount(x.reshape(-1), minlength=self.in_features).float()
            self.count += x.numel()
            return
        if self.kind == "linear":
            rows = x.reshape(-1, self.in_features).float()
        else:  # conv: every position of every example is one row of channel values
            rows = x.float().transpose(0, 1).reshape(self.in_features, -1).T
        if self.diag_only:
            self.gram += rows.square().sum(0)
        else:
            self.gram.addmm_(rows.T, rows)
        self.count += rows.shape[0]

    @property
    def sq_norms(self) -> torch.Tensor:
        """``||X_j||_2^2`` for every input feature ``j``, shape ``(in,)``."""
        return self.gram if self.diag_only else torch.diagonal(self.gram)


class InputRecorder:
    """Forward hooks accumulating :class:`LayerStats` of named layers while a model runs.

    Set ``token_mask`` (``(B, T)`` bool, or None) before each forward so that only real tokens of
    ``(B, T, in)`` inputs count (padding excluded). Use as a context manager.

    Parameters
    ----------
    modules : mapping from name to layer
    diag_only : bool
        See :class:`LayerStats`.

    Attributes
    ----------
    stats : dict[str, LayerStats]
        By the names given.
    """

    def __init__(self, modules: Mapping[str, nn.Module], diag_only: bool = False) -> None:
        self.modules = dict(modules)
        self.stats = {n: LayerStats.for_module(m, diag_only) for n, m in self.modules.items()}
        self.token_mask: torch.Tensor | None = None
        self._stack = ExitStack()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x, mask = inputs[0], self.token_mask
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.bool()]
            self.stats[name].add(x)

        return hook

    def __enter__(self) -> "InputRecorder":
        for name, module in self.modules.items():
            self._stack.callback(module.register_forward_pre_hook(self._hook(name)).remove)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def missing(self) -> list[str]:
        """Names of layers that saw no input (not reached by the calibration data)."""
        return [n for n, s in self.stats.items() if s.count == 0]


def wanda_scores(weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` of every weight.

    Parameters
    ----------
    weight : Tensor
        The layer's weight: Linear ``(out, in)``, Embedding ``(num, dim)``, Conv
        ``(out, in / groups, *kernel)``.
    stats : LayerStats of the layer's inputs

    Returns
    -------
    Tensor, float32, of ``weight``'s shape. An Embedding row is scaled by the square root of its
    lookup count; a Conv filter by the norms of the input channels of its group.
    """
    norm = stats.sq_norms.sqrt().float()
    w = weight.detach().to(torch.float32, copy=True).abs_()  # scaled in place: one weight-sized tensor
    if stats.kind == "embedding":
        return w.mul_(norm[:, None])
    if stats.kind == "linear":
        return w.mul_(norm[None, :])
    per_out = norm.reshape(stats.groups, -1).repeat_interleave(w.shape[0] // stats.groups, dim=0)
    return w.mul_(per_out.reshape(*per_out.shape, *([1] * (w.dim() - 2))))


def relative_error(weight: torch.Tensor, pruned: torch.Tensor, gram: torch.Tensor) -> float:
    """Relative output error of a pruned Linear on its calibration inputs.

    Parameters
    ----------
    weight, pruned : Tensor ``(out, in)``
        Original and pruned weights.
    gram : Tensor ``(in, in)``
        ``X^T X`` of the layer's calibration inputs.

    Returns
    -------
    float
        ``||X W^T - X W'^T||^2 / ||X W^T||^2`` (0 when the output is zero).
    """
    w = weight.detach().float()
    d = w - pruned.detach().float()
    g = gram.float()
    num = ((d @ g) * d).sum(dtype=torch.float64)
    den = ((w @ g) * w).sum(dtype=torch.float64)
    return float(num / den) if float(den) > 0 else 0.0
