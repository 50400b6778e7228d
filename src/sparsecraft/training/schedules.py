"""Schedules shared by the updaters (all pure functions of the step)."""
from __future__ import annotations

import math


def cubic_sparsity(step: int, final: float, initial: float = 0.0, start: int = 0, end: int = 1) -> float:
    """Zhu & Gupta (2017) gradual pruning: ``s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))**3``.

    Parameters
    ----------
    step : int
        Optimizer steps done.
    final, initial : float
        Sparsities at ``end`` and up to ``start``.
    start, end : int
        Steps where the schedule begins and reaches ``final``.

    Returns
    -------
    float
        The sparsity after ``step`` steps.
    """
    if step <= start:
        return initial
    if step >= end:
        return final
    frac = (step - start) / (end - start)
    return final + (initial - final) * (1.0 - frac) ** 3


def geometric_sparsities(final: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` prune rounds that remove the same fraction of the remaining
    weights: ``1 - (1 - final) ** (r / rounds)`` for ``r = 1 .. rounds`` (IMP, model soups)."""
    return [1.0 - (1.0 - final) ** (r / rounds) for r in range(1, rounds + 1)]


def cosine_fraction(step: int, alpha: float, end: int) -> float:
    """RigL's update fraction (Evci et al. 2020): ``alpha / 2 * (1 + cos(pi * t / T_end))``.

    Parameters
    ----------
    step : int
    alpha : float
        The fraction at step 0.
    end : int
        ``T_end``: from this step on the fraction is 0.

    Returns
    -------
    float
    """
    if step >= end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * step / end))


def linear_decay(step: int, end: int) -> float:
    """1 at step 0 falling linearly to 0 at ``end`` (and 0 after)."""
    return max(0.0, 1.0 - step / end) if end > 0 else 0.0


def exp_decay(step: int, end: int, rate: float = 5.0) -> float:
    """``exp(-rate * t / end)`` until ``end``, then exactly 0."""
    return math.exp(-rate * step / end) if step < end else 0.0


def is_update_step(step: int, every: int, start: int = 0, end: int | None = None) -> bool:
    """Whether ``step`` is an update step: ``start + k * every`` for ``k >= 1``, before ``end``.

    Parameters
    ----------
    step, every, start : int
    end : int, optional
        No update from this step on.

    Returns
    -------
    bool
    """
    if step <= start or (end is not None and step >= end):
        return False
    return (step - start) % every == 0
