"""SaRA (Hu et al. 2024, "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse
Low-Rank Adaptation"): re-use the pretrained weights that matter least.

The smallest ``fraction`` (10-20% in the paper) of each weight matrix by absolute value is found to
contribute little; SaRA trains exactly those entries, as a sparse update ``ΔW`` stored as values at
fixed flat indices (``(nnz,)`` values + ``(nnz,)`` int64 indices: the optimizer state is ``nnz`` long).

* low-rank constraint: ``nuclear * Σ_layers ||ΔW||_*`` (sum of singular values) is added to the loss
  (:meth:`SaRA.regularizer`), against over-fitting;
* progressive re-selection: at ``phases - 1`` evenly spaced points of training the update is folded
  into the weight, the smallest ``fraction`` of the *updated* weight is chosen again and a fresh zero
  update starts there (optimizer state reset), so entries that became useful are kept and other
  small ones are re-used;
* only the sparse updates are stored: :meth:`SaRA.sparse_update` gives, per layer, the indices and the
  total change, which reproduce the fine-tuned weight from the pretrained one.

The dense ``(out, in)`` update is materialised for the forward pass and its gradient for the backward
pass of each layer (transient, one layer at a time); the paper's custom unstructured backward kernel
that avoids even that is not reproduced.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..options import Option
from .base import METHODS, Adapter, linear_targets, plain_linear, replace_module


def smallest_indices(weight: torch.Tensor, fraction: float) -> torch.Tensor:
    """Flat indices of the ``round(fraction * numel)`` entries of ``weight`` smallest in absolute value, sorted.

    Parameters
    ----------
    weight : torch.Tensor of any shape
    fraction : float in (0, 1)

    Returns
    -------
    torch.Tensor of shape (k,), int64
    """
    k = round(fraction * weight.numel())
    if k == 0:
        raise SparsecraftError(f"fraction {fraction} of a {tuple(weight.shape)} weight selects no entry; "
                               "raise the fraction or leave this layer out")
    return torch.topk(weight.detach().abs().reshape(-1), k, largest=False).indices.sort().values


class SparseUpdateLinear(nn.Module):
    """``y = x (W + ΔW)^T + b`` with ``ΔW`` non-zero only at ``index``: ``values`` ``(nnz,)`` train."""

    def __init__(self, base: nn.Linear, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction
        self.register_buffer("weight", base.weight.detach().clone())
        self.register_buffer("bias", None if base.bias is None else base.bias.detach().clone())
        self.register_buffer("index", smallest_indices(self.weight, fraction))
        self.values = nn.Parameter(torch.zeros(len(self.index), dtype=self.weight.dtype))
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []

    def delta(self) -> torch.Tensor:
        """The dense current update ``ΔW`` ``(out, in)`` (differentiable in ``values``)."""
        flat = torch.zeros(self.weight.numel(), dtype=self.values.dtype, device=self.values.device)
        return flat.index_put((self.index,), self.values).view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight + self.delta(), self.bias)

    @torch.no_grad()
    def reselect(self) -> None:
        """Fold the update into the weight and start a new one on the now-smallest entries."""
        self.history.append((self.index.clone(), self.values.detach().clone()))
        self.weight.view(-1).index_add_(0, self.index, self.values.detach())
        self.index.copy_(smallest_indices(self.weight, self.fraction))
        self.values.zero_()

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            return plain_linear(self.weight + self.delta(), self.bias)


@METHODS.register("sara")
class SaRA(Adapter):
    """Train the smallest-magnitude fraction of every selected weight as a sparse update."""

    options = (
        Option("fraction", float, 0.1, "fraction of each weight (smallest |w|) that trains", bounds="(0, 0.5]"),
        Option("nuclear", float, 1e-4, "weight of the nuclear-norm penalty on each update", bounds="[0, inf)"),
        Option("phases", int, 2, "progressive phases: the trainable set is re-chosen phases - 1 times",
               bounds="[1, inf)"),
    )

    def __init__(self, model: nn.Module, layers: Any = None, keep_dense: Any = (), within: Any = None,
                 fraction: float = 0.1, nuclear: float = 1e-4, phases: int = 2) -> None:
        super().__init__(model)
        self.nuclear, self.phases = nuclear, phases
        self.layers: dict[str, SparseUpdateLinear] = {}
        for t in linear_targets(model, layers, keep_dense, within):
            wrapped = SparseUpdateLinear(t.module, fraction)
            replace_module(model, t.module_name, wrapped)
            self.layers[t.module_name] = wrapped

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [m.values for m in self.layers.values()]

    def regularizer(self) -> torch.Tensor | float:
        if self.nuclear == 0:
            return 0.0
        return self.nuclear * sum(torch.linalg.svdvals(m.delta()).sum() for m in self.layers.values())

    def step(self, step: int, total: int) -> None:
        boundaries = {round(total * p / self.phases) for p in range(1, self.phases)}
        if step in boundaries and step < total:
            for m in self.layers.values():
                m.reselect()
                self._reset_state(m.values)

    def sparse_update(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer: sorted flat indices ``(k,)`` of every entry changed and the change ``(k,)`` there."""
        out = {}
        for name, m in self.layers.items():
            idx = torch.cat([i for i, _ in m.history] + [m.index])
            val = torch.cat([v for _, v in m.history] + [m.values.detach()])
            total = torch.zeros(m.weight.numel(), dtype=val.dtype).index_add_(0, idx, val)
            where = torch.unique(idx)
            out[name] = (where, total[where])
        return out

    def _merge(self) -> None:
        for name, m in self.layers.items():
            replace_module(self.model, name, m.merged())
