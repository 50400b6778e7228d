"""Monarch matrices (Dao, Chen, Sohoni, Desai, Poli, Grogan, Liu, Rao, Rudra and Ré 2022, "Monarch:
Expressive Structured Matrices for Efficient and Accurate Training").

A Monarch matrix is ``M = P2 R P1 L`` applied to ``x``: a block-diagonal ``L`` with ``b`` blocks of
``q x p`` (``p = d_in / b``), a fixed permutation, and a block-diagonal ``R`` with ``b`` blocks of
``s x q`` (``s = d_out / b``, ``q = min(p, s)``). The permutation reads the ``b q`` intermediate
values ``f = k q + j`` (block ``k``, row ``j`` of ``L``) as a ``q x b`` matrix and transposes it:
value ``f`` becomes input ``f // b`` of block ``f % b`` of ``R`` (for ``d_in = d_out = b^2`` it is
the transpose of the paper's square Monarch). Parameters ``q (d_in + d_out)`` instead of
``d_in d_out``; the product is two batched matmuls (``torch.bmm``).

Output ``(l, s')`` depends on input ``(k, p')`` only through the intermediates ``f`` with
``f // q = k`` and ``f % b = l``, and those parameters belong to no other block pair, so the block
``W[l, k]`` (``s x p``) of ``M`` is a rank-``c_kl`` product with its own factors. The projection of
a dense ``W`` onto Monarch matrices (the paper's analytical optimum, their Algorithm 1) is therefore
the truncated SVD of every block to rank ``c_kl`` (Eckart-Young): exact when ``W`` is Monarch,
the best Frobenius approximation otherwise.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..target import find_targets


def _block_sizes(d_in: int, d_out: int, nblocks: int) -> tuple[int, int, int]:
    """``(p, q, s)``: input, intermediate and output block sizes; one-line error unless ``nblocks`` divides."""
    nblocks = check_positive_int(nblocks, "nblocks")
    if d_in % nblocks or d_out % nblocks:
        raise SparsecraftError(f"nblocks {nblocks} must divide both in_features {d_in} and out_features {d_out}; "
                               "choose a common divisor")
    p, s = d_in // nblocks, d_out // nblocks
    return p, min(p, s), s


def _intermediates(nblocks: int, q: int) -> dict[str, torch.Tensor]:
    """For every intermediate ``f`` in ``[0, b q)``: its ``L`` block ``k`` and row ``j``, its ``R``
    block ``l`` and column ``r``, and its rank index ``i`` within the pair ``(k, l)``."""
    f = torch.arange(nblocks * q)
    j = f % q
    return {"k": f // q, "j": j, "l": f % nblocks, "r": f // nblocks, "i": j // nblocks}


def monarch_multiply(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``x M^T`` for the Monarch matrix with factors ``w1`` (``L``) and ``w2`` (``R``).

    Parameters
    ----------
    x : Tensor, shape ``(..., b p)``
    w1 : Tensor, shape ``(b, q, p)``
        The blocks of ``L``.
    w2 : Tensor, shape ``(b, s, q)``
        The blocks of ``R``.

    Returns
    -------
    Tensor, shape ``(..., b s)``
    """
    b, q, p = w1.shape
    lead = x.shape[:-1]
    h = x.reshape(-1, b, p).transpose(0, 1)                  # (b, M, p)
    h = torch.bmm(h, w1.transpose(1, 2))                     # (b, M, q): L
    h = h.transpose(0, 1).reshape(-1, q, b).permute(2, 0, 1)  # (b, M, q): the permutation
    out = torch.bmm(h, w2.transpose(1, 2))                   # (b, M, s): R
    return out.transpose(0, 1).reshape(*lead, b * w2.shape[1])


def monarch_project(weight: torch.Tensor, nblocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Monarch matrix nearest to ``weight`` in Frobenius norm, as its two factors.

    Parameters
    ----------
    weight : Tensor, shape ``(d_out, d_in)``
        A dense weight (``nn.Linear`` layout).
    nblocks : int
        Blocks ``b`` of each factor; must divide ``d_in`` and ``d_out``.

    Returns
    -------
    (Tensor, Tensor)
        ``w1`` of shape ``(b, q, p)`` and ``w2`` of shape ``(b, s, q)``, for
        :func:`monarch_multiply` / :class:`MonarchLinear`; dtype of ``weight``.
    """
    if weight.dim() != 2:
        raise SparsecraftError(f"monarch_project needs a 2-D weight (out, in), got shape {tuple(weight.shape)}")
    d_out, d_in = weight.shape
    p, q, s = _block_sizes(d_in, d_out, nblocks)
    b = nblocks
    blocks = weight.detach().double().reshape(b, s, b, p).permute(0, 2, 1, 3)  # [l, k] -> (s, p)
    u, sv, vh = torch.linalg.svd(blocks, full_matrices=False)                   # rank index up to min(s, p)
    idx = _intermediates(b, q)
    rank = min(s, p)
    valid = idx["i"] < rank
    i = idx["i"].clamp(max=rank - 1)
    root = sv[idx["l"], idx["k"], i].sqrt() * valid                              # (b q,)
    w1 = torch.zeros(b, q, p, dtype=torch.float64)
    w2 = torch.zeros(b, s, q, dtype=torch.float64)
    w1[idx["k"], idx["j"]] = root[:, None] * vh[idx["l"], idx["k"], i]
    w2[idx["l"], :, idx["r"]] = root[:, None] * u[idx["l"], idx["k"], :, i]
    return w1.to(weight.dtype), w2.to(weight.dtype)


class MonarchLinear(nn.Module):
    """A Linear layer whose weight is a Monarch matrix: ``y = x M^T + bias``.

    Parameters
    ----------
    in_features, out_features : int
        Both divisible by ``nblocks``.
    nblocks : int
        Blocks ``b`` of each block-diagonal factor (``sqrt(d)`` gives ``2 d^1.5`` parameters for a
        square ``d x d`` layer).
    bias : bool

    Input ``(..., in_features)``, output ``(..., out_features)``. Parameters ``w1`` ``(b, q, p)`` and
    ``w2`` ``(b, s, q)``, each initialised uniform in ``+-1/sqrt(fan_in)`` as ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, nblocks: int, bias: bool = True) -> None:
        super().__init__()
        p, q, s = _block_sizes(check_positive_int(in_features, "in_features"),
                               check_positive_int(out_features, "out_features"), nblocks)
        self.in_features, self.out_features, self.nblocks = in_features, out_features, nblocks
        self.w1 = nn.Parameter(torch.empty(nblocks, q, p).uniform_(-1 / math.sqrt(p), 1 / math.sqrt(p)))
        self.w2 = nn.Parameter(torch.empty(nblocks, s, q).uniform_(-1 / math.sqrt(q), 1 / math.sqrt(q)))
        bound = 1 / math.sqrt(in_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = monarch_multiply(x, self.w1, self.w2)
        return out + self.bias if self.bias is not None else out

    def to_dense(self) -> torch.Tensor:
        """The Monarch matrix ``M``, shape ``(out_features, in_features)`` (``nn.Linear`` layout)."""
        eye = torch.eye(self.in_features, dtype=self.w1.dtype, device=self.w1.device)
        return monarch_multiply(eye, self.w1, self.w2).T

    @classmethod
    def from_linear(cls, linear: nn.Linear, nblocks: int) -> "MonarchLinear":
        """The projection (:func:`monarch_project`) of ``linear``'s weight, with its bias copied."""
        layer = cls(linear.in_features, linear.out_features, nblocks, bias=linear.bias is not None)
        w1, w2 = monarch_project(linear.weight, nblocks)
        with torch.no_grad():
            layer.w1.copy_(w1)
            layer.w2.copy_(w2)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nblocks={self.nblocks}"


def monarch_params(d_in: int, d_out: int, nblocks: int) -> int:
    """Weights of a ``d_in -> d_out`` Monarch matrix with ``nblocks`` blocks: ``q (d_in + d_out)``."""
    _, q, _ = _block_sizes(d_in, d_out, nblocks)
    return q * (d_in + d_out)


@dataclass
class MonarchReport:
    """What :func:`monarchize` did.

    Attributes
    ----------
    model : nn.Module
        The copy with Monarch layers.
    errors : dict of str to float
        Relative Frobenius projection error ``||W - M||_F / ||W||_F`` of each replaced layer.
    dense_params, monarch_params : int
        Weights of the replaced layers before and after.
    """

    model: nn.Module
    errors: dict[str, float]
    dense_params: int
    monarch_params: int


def monarchize(model: nn.Module, nblocks: int, layers: list[str] | None = None,
               keep_dense: tuple[str, ...] = ("first", "last"), project: bool = True) -> MonarchReport:
    """A copy of ``model`` with its targeted ``nn.Linear`` layers replaced by :class:`MonarchLinear`.

    Parameters
    ----------
    model : nn.Module
        Left unchanged.
    nblocks : int
        Must divide the in and out features of every targeted layer.
    layers, keep_dense
        As :func:`sparsecraft.target.find_targets` over the Linear layers (default: all but the
        first and last, e.g. a transformer's embedding and head).
    project : bool
        ``True``: each Monarch layer starts at the projection of the dense weight (dense-to-Monarch
        fine-tuning); ``False``: fresh random factors (training from scratch).

    Returns
    -------
    MonarchReport
        ``errors`` is empty when ``project`` is ``False``.
    """
    out = copy.deepcopy(model)
    errors: dict[str, float] = {}
    dense = mon = 0
    for t in find_targets(out, layers, keep_dense, types=(nn.Linear,)):
        lin = t.module
        if project:
            new = MonarchLinear.from_linear(lin, nblocks)
            with torch.no_grad():
                errors[t.module_name] = float((lin.weight - new.to_dense()).norm() / lin.weight.norm().clamp_min(1e-30))
        else:
            new = MonarchLinear(lin.in_features, lin.out_features, nblocks, bias=lin.bias is not None)
        dense += lin.weight.numel()
        mon += new.w1.numel() + new.w2.numel()
        parent, _, child = t.module_name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, new)
    return MonarchReport(out, errors, dense, mon)
