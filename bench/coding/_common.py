"""Helpers shared by the coding benchmark sections."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench.common import RESULTS, pyplot


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


def save_plot(fig: Any, name: str) -> list[str]:
    """Save ``fig`` as bench/results/coding_<name>.png, close it and return ``[file name]``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path: Path = RESULTS / f"coding_{name}.png"
    fig.savefig(path, dpi=90)
    pyplot().close(fig)
    return [path.name]


Curves = dict[str, list[tuple[float, float]]]
"""Per method, ``(non-zeros, relative error)`` points of a sparsity sweep."""


def nnz_at_error(pts: list[tuple[float, float]], target: float, log_nnz: bool = False) -> float:
    """Non-zeros at relative error ``target``, interpolated linearly (in log non-zeros with ``log_nnz``)
    between the ``(nnz, err)`` points; nan when ``target`` lies outside the swept errors."""
    pts = sorted(pts, key=lambda p: p[1])
    errs, nnzs = np.array([p[1] for p in pts]), np.array([p[0] for p in pts])
    if not errs.min() <= target <= errs.max():
        return float("nan")
    if log_nnz:
        return float(np.exp(np.interp(target, errs, np.log(nnzs))))
    return float(np.interp(target, errs, nnzs))


def plot_curves(curves: Curves, name: str, xlabel: str, log_x: bool = False, title: str | None = None,
                legend_size: float | None = None) -> list[str]:
    """Relative error vs non-zeros, one line per method; saved with :func:`save_plot`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for m, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=m)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative reconstruction error")
    ax.legend(fontsize=legend_size)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_plot(fig, name)


def sparse_problem(n: int, d: int, k: int, t: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian A (n, d) with unit-norm columns in expectation, t k-sparse signals X (d, t), Y = A X."""
    A = rng.standard_normal((n, d)) / np.sqrt(n)
    X = np.zeros((d, t))
    for j in range(t):
        X[rng.choice(d, k, replace=False), j] = rng.choice([-1.0, 1.0], k) * (1 + rng.random(k))
    return A, X, A @ X


def nmse(est: np.ndarray, ref: np.ndarray) -> float:
    """||est - ref||^2 / ||ref||^2."""
    return float(((est - ref) ** 2).sum() / max((ref**2).sum(), 1e-300))
