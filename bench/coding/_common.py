"""Helpers shared by the coding benchmark sections."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import RESULTS


@dataclass
class Section:
    """One benchmark section: table rows, a markdown block and the plot files it wrote."""

    name: str
    rows: list[dict[str, Any]]
    markdown: str
    plots: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[Any, float]:
    """Result of ``fn()`` and the median wall time of ``repeats`` calls (first call included: warm)."""
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def plot_path(name: str) -> Path:
    """Where the plot ``coding_<name>.png`` goes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / f"coding_{name}.png"


def sparse_problem(n: int, d: int, k: int, t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian A (n, d) with unit-norm columns in expectation, t k-sparse signals X (d, t), Y = A X."""
    A = rng.standard_normal((n, d)) / np.sqrt(n)
    X = np.zeros((d, t))
    for j in range(t):
        X[rng.choice(d, k, replace=False), j] = rng.choice([-1.0, 1.0], k) * (1 + rng.random(k))
    return A, X, A @ X


def nmse(est: np.ndarray, ref: np.ndarray) -> float:
    """||est - ref||^2 / ||ref||^2."""
    return float(((est - ref) ** 2).sum() / max((ref**2).sum(), 1e-300))
