"""Sparse Model Soups (Zimmer et al. 2024, "Sparse Model Soups: A Recipe for Improved Pruning via
Model Averaging").

Each prune-retrain cycle prunes the current model by magnitude, retrains ``ingredients`` copies that
share the new mask but differ in seed / data order, and averages them. All copies share one mask,
so their average keeps exactly that sparsity. The average is either the *uniform* soup (mean of
all ingredients) or the *greedy* soup of Wortsman et al. 2022 ("Model soups"): ingredients sorted by
held-out score, each added only if the soup's held-out score does not drop. The next cycle starts
from the soup.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..oneshot import plan_masks
from ..sparsifier import Sparsifier
from .base import SparsityConfig

TrainFn = Callable[[nn.Module, Sparsifier, int], None]
ScoreFn = Callable[[nn.Module], float]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Elementwise (weighted) mean of floating-point entries; integer entries (BatchNorm's
    ``num_batches_tracked``) are taken from the first state."""
    if not states:
        raise SparsecraftError("need at least one model to average")
    w = torch.tensor(weights if weights is not None else [1.0] * len(states), dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum(float(wi) * s[key].double() for wi, s in zip(w, states))
            out[key] = acc.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


@dataclass
class SoupPhase:
    """One prune-retrain cycle: its sparsity, each ingredient's held-out score, the soup's."""

    sparsity: float
    ingredient_scores: list[float]
    soup_score: float
    used: list[int] = field(default_factory=list)


def greedy_soup(models: Sequence[nn.Module], score: ScoreFn) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Wortsman et al.'s greedy soup: returns the soup's state and the ingredient indices used."""
    scores = [score(m) for m in models]
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    used = [order[0]]
    best = scores[order[0]]
    probe = copy.deepcopy(models[0])
    for i in order[1:]:
        trial = average_state_dicts([models[j].state_dict() for j in used + [i]])
        probe.load_state_dict(trial)
        s = score(probe)
        if s >= best:
            used.append(i)
            best = s
    return average_state_dicts([models[j].state_dict() for j in used]), used


def sparse_model_soup(model: nn.Module, config: SparsityConfig, train: TrainFn, score: ScoreFn,
                      sparsities: Sequence[float] | None = None, ingredients: int = 3, soup: str = "uniform",
                      seed: int = 0, on_phase: Callable[[float, list[nn.Module]], None] | None = None
                      ) -> tuple[Sparsifier, list[SoupPhase]]:
    """Run Sparse Model Soups on a (pre-trained) ``model`` in place.

    Args:
        config: pattern, allocation and targets; its ``sparsity`` is the last phase's if
            ``sparsities`` (one per prune-retrain phase, non-decreasing) is not given.
        train: ``train(copy, sparsifier, seed)`` retrains one ingredient in place (build its
            optimizer, ``sparsifier.attach(optimizer)``, train; e.g. with :func:`fit`).
        score: held-out score of a model (higher is better; e.g. validation accuracy).
        ingredients: copies per phase; soup: ``"uniform"`` or ``"greedy"``.
        on_phase: ``on_phase(sparsity, copies)`` sees each phase's retrained ingredients before
            they are averaged (e.g. to evaluate them or build the other kind of soup).

    Returns the Sparsifier holding the final masks on ``model`` and one :class:`SoupPhase` per phase.
    """
    if soup not in ("uniform", "greedy"):
        raise SparsecraftError(f"soup must be 'uniform' or 'greedy', got {soup!r}")
    ingredients = check_positive_int(ingredients, "ingredients")
    phases_s = [check_sparsity(s, "sparsities") for s in (sparsities or [config.sparsity])]
    if any(b < a for a, b in zip(phases_s, phases_s[1:])):
        raise SparsecraftError("sparsities must be non-decreasing (one per prune-retrain phase)")
    targets, _ = config.targets(model)
    pattern = config.get_pattern()
    sp: Sparsifier | None = None
    phases = []
    for p, s in enumerate(phases_s):
        prev = sp.masks if sp is not None else None
        scores = {t.name: t.param.detach().abs().float() for t in targets}
        if prev is not None:
            scores = {n: torch.where(prev[n], v, torch.full_like(v, -1.0)) for n, v in scores.items()}
            sp.finalize()
        masks = plan_masks(s, pattern, scores, config.allocation)
        sp = Sparsifier(model, masks, {n: pattern for n in masks})
        copies = []
        for i in range(ingredients):
            m = copy.deepcopy(model)
            train(m, Sparsifier(m, masks, {n: pattern for n in masks}), seed * 1000 + p * 100 + i)
            copies.append(m)
        if on_phase is not None:
            on_phase(s, copies)
        if soup == "uniform":
            state, used = average_state_dicts([c.state_dict() for c in copies]), list(range(ingredients))
        else:
            state, used = greedy_soup(copies, score)
        model.load_state_dict(state)
        sp.apply()
        phases.append(SoupPhase(s, [score(c) for c in copies], score(model), used))
    return sp, phases
