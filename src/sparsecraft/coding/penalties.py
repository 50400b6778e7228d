"""Sparsity penalties and their proximal operators (one registry: ``PENALTIES``).

Every penalty ``R`` is used in problems of the form ``min_x 1/2 ||A x - y||^2 + lam * R(x)``; the
proximal operator of ``step * lam * R`` is what the proximal-gradient solvers call. Arrays are
(n_components, n_signals); ``col_norms`` holds ||a_i|| for each dictionary column (only CEL0 uses it).

- ``l1``: soft thresholding (convex; the Lasso).
- ``l0``: hard thresholding at sqrt(2 lam step) (the prox of lam ||x||_0).
- ``cel0``: the Continuous Exact l0 relaxation of Soubies, Blanc-Feraud & Aubert (SIAM J. Imaging
  Sci. 2015): it has the same global minimizers as the l0 problem and a closed-form prox when
  step * ||a_i||^2 < 1. The "Beyond l1 sparse coding in V1" study compares exactly these three.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import SparsecraftError
from ..registry import Registry


@dataclass(frozen=True)
class Penalty:
    """A separable penalty and its proximal operator.

    Attributes
    ----------
    name : str
    value : callable
        ``value(x, lam, col_norms)``: R(x) per column of x (n_components, n_signals) -> (n_signals,).
    prox : callable
        ``prox(v, lam, step, col_norms)``: the prox of ``step * lam * R`` applied to v, same shape.
    convex : bool
        Convex penalties take the step ``1/L``; non-convex ones ``0.99/L``.
    """

    name: str
    value: Callable[[np.ndarray, float, np.ndarray], np.ndarray]
    prox: Callable[[np.ndarray, float, float, np.ndarray], np.ndarray]
    convex: bool


PENALTIES: Registry[Penalty] = Registry("penalty")


def soft_threshold(v: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Soft thresholding ``sign(v) * max(|v| - threshold, 0)``.

    Parameters
    ----------
    v : ndarray
    threshold : float or ndarray broadcastable to ``v``

    Returns
    -------
    ndarray, the shape of ``v``
    """
    return np.sign(v) * np.maximum(np.abs(v) - threshold, 0.0)


def hard_threshold(v: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Hard thresholding ``v * (|v| > threshold)``.

    Parameters
    ----------
    v : ndarray
    threshold : float or ndarray broadcastable to ``v``

    Returns
    -------
    ndarray, the shape of ``v``
    """
    return np.where(np.abs(v) > threshold, v, 0.0)


def keep_largest(v: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest-magnitude entries of each column; zero the rest.

    Parameters
    ----------
    v : ndarray of shape (n, t)
    k : int
        Entries kept per column (all of them when ``k >= n``).

    Returns
    -------
    ndarray of shape (n, t)
    """
    if k >= v.shape[0]:
        return v.copy()
    idx = np.argpartition(-np.abs(v), k - 1, axis=0)[:k]
    out = np.zeros_like(v)
    np.put_along_axis(out, idx, np.take_along_axis(v, idx, axis=0), axis=0)
    return out


def _cel0_value(x: np.ndarray, lam: float, norms: np.ndarray) -> np.ndarray:
    a = norms[:, None]
    theta = np.sqrt(2.0 * lam) / a
    ax = np.abs(x)
    inside = lam - 0.5 * a**2 * (ax - theta) ** 2
    return np.where(ax <= theta, inside, lam).sum(axis=0) / lam


def _cel0_prox(v: np.ndarray, lam: float, step: float, norms: np.ndarray) -> np.ndarray:
    a = norms[:, None]
    if np.any(step * a**2 >= 1.0):
        raise SparsecraftError("CEL0 prox needs step * ||a_i||^2 < 1; use a step below 1/||A||_2^2")
    shrunk = np.maximum(0.0, (np.abs(v) - np.sqrt(2.0 * lam) * a * step) / (1.0 - step * a**2))
    return np.sign(v) * np.minimum(np.abs(v), shrunk)


PENALTIES.register("l1")(Penalty(
    "l1",
    value=lambda x, lam, norms: np.abs(x).sum(axis=0),
    prox=lambda v, lam, step, norms: soft_threshold(v, lam * step),
    convex=True,
))
PENALTIES.register("l0")(Penalty(
    "l0",
    value=lambda x, lam, norms: (x != 0).sum(axis=0).astype(np.float64),
    prox=lambda v, lam, step, norms: hard_threshold(v, np.sqrt(2.0 * lam * step)),
    convex=False,
))
PENALTIES.register("cel0")(Penalty("cel0", value=_cel0_value, prox=_cel0_prox, convex=False))
