"""Layer-wise pruning methods: magnitude, Wanda and SparseGPT, each unstructured or N:M.

Every method takes one weight ``W`` of shape ``(out, in)`` (rows are outputs; N:M groups run along
``in``), the calibration statistics of that layer's inputs (:class:`LayerStats`), a target sparsity
and a pattern, and returns the pruned weight (exact zeros) with its keep-mask.

* **magnitude**: drop the smallest ``|W|`` of the layer (per layer, not global).
* **Wanda** (Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language
  Models", ICLR 2024, arXiv:2306.11695): score ``|W_ij| * ||X_j||_2`` and compare scores within
  each output row (unstructured) or within each N:M group; no weight update.
* **SparseGPT** (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
  One-Shot", ICML 2023, arXiv:2301.00774): minimise ``||X W^T - X W'^T||^2`` column by column with
  Optimal-Brain-Surgeon updates of the not-yet-processed weights, using the upper Cholesky factor
  of the dampened inverse Hessian ``(2 X^T X / n + lambda I)^-1``; the mask is chosen per block of
  columns (adaptive mask selection, scores ``w^2 / [H^-1]_jj^2``) and the updates of later blocks
  are applied lazily, once per block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..calibration import LayerStats, wanda_scores
from ..errors import SparsecraftError
from ..options import Option
from ..patterns import NM, Pattern, Unstructured
from ..registry import Registry


@dataclass
class PruneResult:
    """``weight``: pruned weight ``(out, in)`` with exact zeros where ``mask`` is False."""

    weight: torch.Tensor
    mask: torch.Tensor


LayerFn = Callable[..., PruneResult]


@dataclass(frozen=True)
class Method:
    """A registered post-training method.

    Parameters
    ----------
    name : str
    prune_layer : callable ``(weight, stats, sparsity, pattern, **layer_options) -> PruneResult``
    needs_stats : bool
        Needs calibration statistics of the layer inputs.
    owl : bool
        Outlier-weighted layer sparsity (OWL) chooses a sparsity per block.
    options : tuple of Option
        Every option the method takes (the CLI builds its flags from these); those whose names
        :attr:`layer_options` lists go to ``prune_layer``, the OWL ones to the pipeline.
    """

    name: str
    prune_layer: LayerFn
    needs_stats: bool
    owl: bool = False
    options: tuple[Option, ...] = ()

    @property
    def layer_options(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options if o.name not in OWL_OPTION_NAMES)


METHODS: Registry[Method] = Registry("post-training method")


def check_pattern(pattern: Pattern) -> Pattern:
    """Post-training methods support unstructured and N:M patterns only."""
    if not isinstance(pattern, (Unstructured, NM)):
        raise SparsecraftError(
            f"post-training pruning supports pattern 'unstructured' or N:M (e.g. 2:4, 4:8), got {pattern}"
        )
    return pattern


def _finish(weight: torch.Tensor, keep: torch.Tensor, dtype: torch.dtype) -> PruneResult:
    return PruneResult((weight * keep).to(dtype), keep)


def magnitude(weight: torch.Tensor, stats: LayerStats | None, sparsity: float, pattern: Pattern) -> PruneResult:
    """Keep the largest ``|W|`` of the layer (unstructured) or of every N:M group."""
    keep = pattern.mask_for_sparsity(weight.abs(), sparsity)
    return _finish(weight.detach(), keep, weight.dtype)


def row_lowest_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask dropping the ``round(sparsity * in)`` lowest scores of every row of ``(out, in)``."""
    k = round(sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, False)
    return keep


def wanda(weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: Pattern) -> PruneResult:
    """Wanda: per-output-row comparison of ``|W| * ||X||`` (unstructured) or per N:M group."""
    scores = wanda_scores(weight, stats)
    keep = pattern.mask(scores) if isinstance(pattern, NM) else row_lowest_mask(scores, sparsity)
    return _finish(weight.detach(), keep, weight.dtype)


def inverse_hessian_factor(stats: LayerStats, percdamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor ``U`` of ``(H + damp I)^-1`` (``U^T U = H^-1``) and the dead-input mask.

    ``H = 2 X^T X / n``; inputs that never fire (``H_jj == 0``) get ``H_jj = 1`` so ``H`` stays
    invertible, and ``damp = percdamp * mean(diag H)``. Shapes ``(in, in)`` and ``(in,)``.
    """
    if stats.diag_only:
        raise SparsecraftError("SparseGPT needs the full Gram matrix of the layer inputs, not only its diagonal")
    h = 2.0 * stats.gram.double() / max(stats.count, 1)
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += percdamp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    try:
        chol = torch.linalg.cholesky(h)
    except torch.linalg.LinAlgError:
        raise SparsecraftError(
            f"the layer Hessian is not positive definite even with dampening {percdamp}; "
            "use more calibration samples or a larger --percdamp"
        ) from None
    hinv = torch.cholesky_inverse(chol)
    return torch.linalg.cholesky(hinv, upper=True), dead


def sparsegpt(
    weight: torch.Tensor,
    stats: LayerStats,
    sparsity: float,
    pattern: Pattern,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> PruneResult:
    """SparseGPT for one layer; returns updated weights with exact zeros and the keep-mask.

    Columns are processed left to right in blocks of ``blocksize`` (rounded up to a multiple of M
    for N:M). Inside a block each column ``j`` is pruned and its error ``(w_j - q_j) / U_jj`` is
    spread over the remaining columns of the block with row ``j`` of ``U``; the accumulated errors
    update all later blocks in one matrix product (lazy batch update).
    """
    w = weight.detach().clone().float()
    rows, cols = w.shape
    u, dead = inverse_hessian_factor(stats, percdamp)
    u = u.float()
    w[:, dead] = 0.0
    nm = pattern if isinstance(pattern, NM) else None
    if nm is not None:
        blocksize = math.ceil(blocksize / nm.m) * nm.m
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        u1 = u[i1:i2, i1:i2]
        d = torch.diagonal(u1)
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        p1 = torch.zeros_like(w1, dtype=torch.bool)
        if nm is None:
            k = round(sparsity * w1.numel())
            if k > 0:
                score = (w1.pow(2) / d.pow(2)).reshape(-1)
                p1.view(-1)[torch.topk(score, k, largest=False).indices] = True
        for i in range(i2 - i1):
            if nm is not None and i % nm.m == 0:
                score = w1[:, i : i + nm.m].pow(2) / d[i : i + nm.m].pow(2)
                drop = torch.topk(score, nm.m - nm.n, dim=1, largest=False).indices
                p1[:, i : i + nm.m].scatter_(1, drop, True)
            col = w1[:, i]
            q = torch.where(p1[:, i], torch.zeros_like(col), col)
            q1[:, i] = q
            err = (col - q) / d[i]
            w1[:, i:] -= err.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = q1
        pruned[:, i1:i2] = p1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return _finish(w, ~pruned, weight.dtype)


SPARSEGPT_OPTIONS = (
    Option("blocksize", int, 128, "SparseGPT column block size (lazy batch updates)", bounds="[1, inf)"),
    Option("percdamp", float, 0.01, "SparseGPT dampening, fraction of the mean Hessian diagonal",
           bounds="(0, inf)"),
)
OWL_OPTIONS = (
    Option("owl_m", float, 5.0, "OWL outlier threshold, in multiples of the mean Wanda score", bounds="(0, inf)"),
    Option("owl_lambda", float, 0.08, "OWL largest deviation of a block's sparsity from the target",
           bounds="[0, 1)"),
)
OWL_OPTION_NAMES = tuple(o.name for o in OWL_OPTIONS)


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` under its name."""
    return METHODS.register(method.name)(method)


register(Method("magnitude", magnitude, needs_stats=False))
register(Method("wanda", wanda, needs_stats=True))
register(Method("sparsegpt", sparsegpt, needs_stats=True, options=SPARSEGPT_OPTIONS))
register(Method("owl-wanda", wanda, needs_stats=True, owl=True, options=OWL_OPTIONS))
register(Method("owl-sparsegpt", sparsegpt, needs_stats=True, owl=True, options=SPARSEGPT_OPTIONS + OWL_OPTIONS))
