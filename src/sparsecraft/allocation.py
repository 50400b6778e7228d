"""Per-layer allocation: how many groups each layer drops for an overall sparsity.

Every allocator has one signature::

    allocator(layers, sparsity) -> {name: n_prune}

where ``layers`` maps each target name to a :class:`LayerInfo` (its shape, its pattern's group
count and group size, and its group scores). The result is the number of groups to drop per layer.
Fixed-density patterns (N:M) are not allocated: they always keep N of M.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .registry import Registry
from .selection import lowest_counts

ALLOCATORS: Registry[Callable[[dict, float], dict[str, int]]] = Registry("allocation")


@dataclass
class LayerInfo:
    """What an allocator may know about one target layer.

    Attributes
    ----------
    shape : tuple of int
        Shape of the weight.
    group_scores : torch.Tensor of shape (G,)
        Importance of each of the pattern's G groups (higher = keep).
    n_groups : int
        G.
    numel : int
        Weights in the layer.
    group_size : int
        Weights per group, ``numel // n_groups``.
    """

    shape: tuple[int, ...]
    group_scores: torch.Tensor

    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return self.group_scores.numel()

    @property
    def numel(self) -> int:
        """Number of weights."""
        return math.prod(self.shape)

    @property
    def group_size(self) -> int:
        """Weights per group."""
        return self.numel // self.n_groups


@ALLOCATORS.register("uniform")
def uniform(layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """Every layer drops ``round(sparsity * G)`` of its G groups.

    Parameters
    ----------
    layers : dict of str to LayerInfo
        Every target layer by name.
    sparsity : float
        Overall fraction of zeros in [0, 1).

    Returns
    -------
    dict of str to int
        Groups to drop per layer, each in [0, n_groups].
    """
    return {name: round(sparsity * info.n_groups) for name, info in layers.items()}


@ALLOCATORS.register("global")
def global_(layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """One threshold across all layers, budgeted in weights.

    When every group has the same size (unstructured, one block shape) this drops the
    ``round(sparsity * total groups)`` lowest group scores: with unstructured groups and magnitude
    scores exactly the weights that ``torch.nn.utils.prune.global_unstructured(..., L1Unstructured)``
    prunes (wherever ``topk`` has a choice to make among tied scores, the earlier are dropped). The
    scores are neither concatenated nor sorted (:func:`sparsecraft.selection.lowest_counts`), so
    the memory this takes is a few chunks, whatever the model's size.

    When group sizes differ between layers (channels or heads of layers with different fan-in),
    groups are ranked by their mean score per weight, so a long row is not favoured just for being
    long, and the lowest are dropped until the dropped weights are as close as possible to
    ``round(sparsity * total weights)``.

    Parameters
    ----------
    layers : dict of str to LayerInfo
        Every target layer by name.
    sparsity : float
        Overall fraction of zeros in [0, 1).

    Returns
    -------
    dict of str to int
        Groups to drop per layer, each in [0, n_groups].
    """
    names = list(layers)
    if len({layers[n].group_size for n in names}) > 1:
        return _global_by_mean(layers, sparsity)
    scores = [layers[n].group_scores for n in names]
    return dict(zip(names, lowest_counts(scores, round(sparsity * sum(s.numel() for s in scores)))))


def _global_by_mean(layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """:func:`global_` for groups of different sizes: lowest mean score per weight first, to the
    dropped-weight count closest to ``round(sparsity * total weights)``."""
    names = list(layers)
    flat = torch.cat([layers[n].group_scores.reshape(-1).float() / layers[n].group_size for n in names])
    weights = torch.cat([torch.full((layers[n].n_groups,), layers[n].group_size) for n in names])
    order = torch.sort(flat, stable=True).indices
    cum = torch.cumsum(weights[order], 0)
    target = round(sparsity * int(cum[-1]))
    k = int(torch.searchsorted(cum, target, right=True))  # groups whose running total <= target
    if k < cum.numel() and int(cum[k]) - target < target - (int(cum[k - 1]) if k else 0):
        k += 1  # one more group lands closer to the budget
    dropped = torch.zeros(flat.numel(), dtype=torch.bool)
    dropped[order[:k]] = True
    counts, start = {}, 0
    for n in names:
        g = layers[n].n_groups
        counts[n] = int(dropped[start:start + g].sum())
        start += g
    return counts


def _erdos_renyi(layers: dict[str, LayerInfo], sparsity: float, kernel: bool) -> dict[str, int]:
    """Erdos-Renyi(-Kernel) densities (Mocanu et al. 2018; Evci et al. 2020, RigL).

    Density of layer l is ``eps * sum(dims_l) / prod(dims_l)`` where dims are (out, in) for ER and
    (out, in, *kernel) for ERK. ``eps`` is solved so the kept-parameter total is exactly
    ``(1 - sparsity) * total``; layers that would exceed density 1 are made dense and ``eps`` is
    solved again over the rest. Counts are rounded per layer, so the budget holds to within one
    group per layer.
    """
    def raw(info: LayerInfo) -> float:
        dims = info.shape if kernel else info.shape[:2]
        return sum(dims) / math.prod(dims)

    total = sum(i.numel for i in layers.values())
    budget = (1.0 - sparsity) * total
    dense: set[str] = set()
    while True:
        free = [n for n in layers if n not in dense]
        kept_dense = sum(layers[n].numel for n in dense)
        denom = sum(raw(layers[n]) * layers[n].numel for n in free)
        eps = (budget - kept_dense) / denom if denom else 0.0
        over = [n for n in free if eps * raw(layers[n]) > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda n: raw(layers[n])))
    counts = {}
    for n, info in layers.items():
        density = 1.0 if n in dense else max(0.0, eps * raw(info))
        counts[n] = min(info.n_groups, max(0, round((1.0 - density) * info.n_groups)))
    return counts


@ALLOCATORS.register("er")
def er(layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """Erdos-Renyi: density proportional to (out + in) / (out * in).

    Parameters
    ----------
    layers : dict of str to LayerInfo
        Every target layer by name.
    sparsity : float
        Overall fraction of zeros in [0, 1).

    Returns
    -------
    dict of str to int
        Groups to drop per layer, each in [0, n_groups].
    """
    return _erdos_renyi(layers, sparsity, kernel=False)


@ALLOCATORS.register("erk")
def erk(layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """Erdos-Renyi-Kernel: density proportional to (out + in + kh + kw) / (out * in * kh * kw).

    Parameters
    ----------
    layers : dict of str to LayerInfo
        Every target layer by name.
    sparsity : float
        Overall fraction of zeros in [0, 1).

    Returns
    -------
    dict of str to int
        Groups to drop per layer, each in [0, n_groups].
    """
    return _erdos_renyi(layers, sparsity, kernel=True)


def allocate(method: str, layers: dict[str, LayerInfo], sparsity: float) -> dict[str, int]:
    """Run the named allocator.

    Parameters
    ----------
    method : str
        A name in ``ALLOCATORS`` (``uniform``, ``global``, ``er``, ``erk``); an unknown name gives a
        one-line error listing the valid ones.
    layers : dict of str to LayerInfo
    sparsity : float
        Overall fraction of zeros in [0, 1).

    Returns
    -------
    dict of str to int
        Groups to drop per layer.
    """
    return ALLOCATORS.get(method)(layers, sparsity)
