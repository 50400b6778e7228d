"""One-shot pruning: score, allocate, mask, in one call."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .allocation import ALLOCATORS, LayerInfo, allocate
from .criteria import Calib, compute_scores
from .errors import SparsecraftError, check_sparsity
from .patterns import Pattern, get_pattern
from .selection import CHUNK, lowest
from .sparsifier import Sparsifier
from .target import Target, find_targets


def plan_masks(
    sparsity: float,
    pattern: str | Pattern,
    scores: dict[str, torch.Tensor],
    allocation: str = "global",
) -> dict[str, torch.Tensor]:
    """Masks for the parameters named in ``scores``.

    N:M patterns keep N of every M regardless of ``sparsity`` and ``allocation``; other patterns
    drop the groups chosen by the allocator, lowest scores first.

    Parameters
    ----------
    sparsity : float
        Overall fraction of zeros in [0, 1) over the scored parameters.
    pattern : str or Pattern
    scores : dict
        ``{param name: scores}``, each of its parameter's shape (higher = more important).
    allocation : str
        A name in :data:`sparsecraft.allocation.ALLOCATORS`.

    Returns
    -------
    dict
        ``{param name: bool mask}`` of each parameter's shape (True = kept).
    """
    sparsity = check_sparsity(sparsity)
    pat = get_pattern(pattern)
    ALLOCATORS.get(allocation)  # an unknown name is an error even where N:M does not use it
    if pat.fixed_density is not None:
        return {name: _for_layer(name, pat.mask, s) for name, s in scores.items()}
    infos = {name: LayerInfo(tuple(s.shape), _for_layer(name, pat.group_scores, s.detach().float()))
             for name, s in scores.items()}
    counts = allocate(allocation, infos, sparsity)
    return {name: pat.expand(lowest(infos[name].group_scores, counts[name]), scores[name].shape)
            for name in scores}


def _for_layer(name: str, fn: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
    """Call ``fn(scores)``, prefixing any user error with the layer it concerns."""
    try:
        return fn(scores)
    except SparsecraftError as err:
        raise SparsecraftError(f"layer {name}: {err}") from None


def prune(
    model: nn.Module,
    sparsity: float = 0.5,
    pattern: str | Pattern = "unstructured",
    criterion: str = "magnitude",
    allocation: str = "global",
    calib: Calib = None,
    layers: Iterable[str] | None = None,
    keep_dense: Iterable[str] = (),
    loss_fn: Callable | None = None,
) -> Sparsifier:
    """Prune ``model`` in one shot and return the :class:`Sparsifier` holding its masks.

    Parameters
    ----------
    model : nn.Module
        Changed in place: pruned weights become exact zeros.
    sparsity : float
        Overall fraction of zeros in [0, 1) over the targeted weights (ignored by N:M).
    pattern : str or Pattern
        ``"unstructured"``, ``"2:4"`` (any N:M), ``"block4x1"``, ``"channel"``, ``"head64"``.
    criterion : str
        A name in ``sparsecraft.criteria.CRITERIA`` (magnitude, random, snip, taylor, movement,
        wanda, l1_norm, l2_norm, bn_scale).
    allocation : str
        A name in ``sparsecraft.allocation.ALLOCATORS`` (uniform, global, er, erk).
    calib : Tensor, tuple or list, optional
        Calibration batch ``x`` or ``(x, y)`` (or a list) for data-driven criteria.
    layers, keep_dense : iterable of str
        Module names, globs or parent modules to include / leave dense ("first", "last" ok).
    loss_fn : callable, optional
        Loss for gradient criteria (default token cross-entropy).

    Returns
    -------
    Sparsifier
        The masks, attached to ``model``. Weights that an earlier Sparsifier pruned stay pruned:
        the new masks are intersected with the existing ones.

    Raises
    ------
    SparsecraftError
        If a targeted weight is NaN or inf (naming the layer), or an argument is invalid.

    Example::

        sp = sparsecraft.prune(model, sparsity=0.9, allocation="erk")
        sp.attach(optimizer)   # keep the zeros through fine-tuning
    """
    sparsity = check_sparsity(sparsity)
    pat = get_pattern(pattern)
    targets = find_targets(model, layers, keep_dense)
    _check_finite(targets)
    previous = {t.name: Sparsifier.mask(t) for t in targets if hasattr(t.module, f"{t.param_name}_mask")}
    scores = compute_scores(criterion, model, targets, calib=calib, loss_fn=loss_fn)
    for name, old in previous.items():  # already pruned weights go first, whatever their score
        scores[name] = scores[name].float().masked_fill_(~old, float("-inf"))
    masks = plan_masks(sparsity, pat, scores, allocation)
    del scores  # as large as the weights: freed before the Sparsifier copies the masks
    if not masks:
        raise SparsecraftError("nothing to prune")
    masks = {name: _within(pat, m, previous[name]) if name in previous else m for name, m in masks.items()}
    return Sparsifier(model, masks, {name: pat for name in masks})


def _within(pattern: Pattern, mask: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``mask & previous``, then (N:M aside, where fewer than N is fine) only the groups it keeps whole."""
    both = mask & previous
    if pattern.fixed_density is not None:
        return both
    return pattern.expand(pattern.group_scores((~both).float()) == 0, both.shape)


def _check_finite(targets: Iterable[Target]) -> None:
    """One-line error naming the first target whose weights hold NaN or inf (no score ranks them).

    Read in chunks: ``isfinite`` of a whole float weight takes its size twice over."""
    for t in targets:
        bad = sum(int((~torch.isfinite(part)).sum()) for part in t.param.detach().reshape(-1).split(CHUNK))
        if bad:
            raise SparsecraftError(f"layer {t.name} has {bad} non-finite weights (NaN or inf); "
                                   "fix or retrain the model before pruning it")
