"""Batched sparse-recovery kernels on ``A`` (n, d) and signals ``Y`` (n, t) -> codes ``X`` (d, t).

These are the numerical cores behind the estimators in :mod:`sparsecraft.coding.estimators`:

- :func:`proximal_gradient`: ISTA (Daubechies, Defrise & De Mol 2004) and FISTA (Beck & Teboulle
  2009) with per-signal adaptive restart (O'Donoghue & Candes 2015) for any registered penalty.
- :func:`iht`: normalized iterative hard thresholding (Blumensath & Davies 2010) with step
  backtracking, k-sparse per signal.
- :func:`omp`: orthogonal matching pursuit (Pati et al. 1993), all signals advanced in lock step
  with batched least-squares solves on the selected Gram blocks.

All functions assume already-validated float64 inputs.
"""
from __future__ import annotations

import warnings

import numpy as np

from .penalties import PENALTIES, keep_largest


def spectral_norm_sq(A: np.ndarray) -> float:
    """``||A||_2^2``, the Lipschitz constant of the gradient of ``1/2 ||A x - y||^2``.

    Parameters
    ----------
    A : ndarray of shape (n, d)

    Returns
    -------
    float
        Exact (SVD) when ``min(n, d) <= 2048``, else 100 power iterations with a 2% safety margin.
    """
    if min(A.shape) <= 2048:
        return float(np.linalg.norm(A, 2) ** 2)
    v = np.random.default_rng(0).standard_normal(A.shape[1])
    for _ in range(100):
        v = A.T @ (A @ v)
        v /= np.linalg.norm(v)
    return float(np.linalg.norm(A @ v) ** 2 * 1.02)


class _Gradient:
    """Computes ``A^T (A X - Y[:, cols])`` through the Gram matrix when that is cheaper."""

    def __init__(self, A: np.ndarray, Y: np.ndarray) -> None:
        n, d = A.shape
        self.A, self.Y = A, Y
        self.use_gram = d <= 2 * n
        if self.use_gram:
            self.G = A.T @ A
            self.AtY = A.T @ Y

    def __call__(self, X: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.use_gram:
            return self.G @ X - self.AtY[:, cols]
        return self.A.T @ (self.A @ X - self.Y[:, cols])


def objective(A: np.ndarray, Y: np.ndarray, X: np.ndarray, lam: float, penalty: str) -> np.ndarray:
    """Per-signal objective ``1/2 ||A x - y||^2 + lam R(x)``.

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
        Signals, one per column.
    X : ndarray of shape (d, t)
        Codes, one per column.
    lam : float
        Penalty weight (squared signal units).
    penalty : str
        A name in ``PENALTIES``.

    Returns
    -------
    ndarray of shape (t,)
    """
    pen = PENALTIES.get(penalty)
    norms = np.linalg.norm(A, axis=0)
    return 0.5 * ((A @ X - Y) ** 2).sum(axis=0) + lam * pen.value(X, lam, norms)


def l1_duality_gap(A: np.ndarray, Y: np.ndarray, X: np.ndarray, lam: float) -> np.ndarray:
    """Per-signal duality gap of ``1/2 ||A x - y||^2 + lam ||x||_1``.

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
    X : ndarray of shape (d, t)
    lam : float

    Returns
    -------
    ndarray of shape (t,)
        Primal minus dual objective at a feasible rescaled residual: >= 0, and 0 at the optimum.
    """
    R = Y - A @ X
    dual_norm = np.abs(A.T @ R).max(axis=0)
    scale = np.minimum(1.0, lam / np.maximum(dual_norm, 1e-300))
    theta = R * scale
    primal = 0.5 * (R**2).sum(axis=0) + lam * np.abs(X).sum(axis=0)
    dual = 0.5 * (Y**2).sum(axis=0) - 0.5 * ((Y - theta) ** 2).sum(axis=0)
    return primal - dual


def proximal_gradient(
    A: np.ndarray,
    Y: np.ndarray,
    lam: float,
    penalty: str = "l1",
    accelerate: bool = True,
    max_iter: int = 5000,
    tol: float = 1e-8,
    X0: np.ndarray | None = None,
    check_every: int = 10,
) -> tuple[np.ndarray, int]:
    """Minimize ``1/2 ||A x - y||^2 + lam R(x)`` for every column of ``Y`` (ISTA or FISTA).

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
        Signals, one per column.
    lam : float
        Penalty weight (squared signal units).
    penalty : str, default="l1"
        A name in ``PENALTIES``; non-convex ones use the step ``0.99 / ||A||_2^2``.
    accelerate : bool, default=True
        FISTA with per-signal adaptive restart; False gives ISTA.
    max_iter : int, default=5000
    tol : float, default=1e-8
        Stop a signal when its l1 duality gap is below ``tol * ||y||^2`` (penalty ``l1``) or when
        the relative change of its code falls below ``tol`` (other penalties).
    X0 : ndarray of shape (d, t), optional
        Warm start (zeros by default).
    check_every : int, default=10
        Iterations between convergence checks.

    Returns
    -------
    X : ndarray of shape (d, t)
        Codes.
    n_iter : int
        Iterations run (for the slowest signal).
    """
    pen = PENALTIES.get(penalty)
    d, t = A.shape[1], Y.shape[1]
    norms = np.linalg.norm(A, axis=0)
    L = spectral_norm_sq(A)
    step = (1.0 if pen.convex else 0.99) / max(L, 1e-300)
    grad = _Gradient(A, Y)
    out = np.zeros((d, t)) if X0 is None else X0.copy()
    cols = np.arange(t)                       # signals still iterating; converged ones are frozen in out
    X = out.copy()
    Z, mom = X.copy(), np.ones(t)
    y_energy = np.maximum((Y**2).sum(axis=0), 1e-300)
    it = 0
    for it in range(1, max_iter + 1):
        X_new = pen.prox(Z - step * grad(Z, cols), lam, step, norms)
        if accelerate:
            mom_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * mom**2))
            # gradient-based adaptive restart: drop momentum where it points uphill
            restart = ((Z - X_new) * (X_new - X)).sum(axis=0) > 0
            beta = np.where(restart, 0.0, (mom - 1.0) / mom_new)
            mom = np.where(restart, 1.0, mom_new)
            Z = X_new + beta * (X_new - X)
        else:
            Z = X_new
        X_prev, X = X, X_new
        if it % check_every == 0 or it == max_iter:
            if penalty == "l1":
                done = l1_duality_gap(A, Y[:, cols], X, lam) <= tol * y_energy[cols]
            else:
                change = np.linalg.norm(X - X_prev, axis=0)
                done = change <= tol * np.maximum(np.linalg.norm(X, axis=0), 1e-12)
            out[:, cols] = X
            if done.all():
                break
            keep = ~done
            cols, X, Z, mom = cols[keep], X[:, keep], Z[:, keep], mom[keep]
    out[:, cols] = X
    return out, it


def least_squares_on_support(A: np.ndarray, Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Refit every column of ``X`` by least squares on its own support (debiasing).

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
    X : ndarray of shape (d, t)
        Codes whose non-zeros define each support.

    Returns
    -------
    ndarray of shape (d, t)
        Least-squares codes with the same supports.
    """
    out = np.zeros_like(X)
    for j in range(X.shape[1]):
        S = np.flatnonzero(X[:, j])
        if S.size:
            out[S, j] = np.linalg.lstsq(A[:, S], Y[:, j], rcond=None)[0]
    return out


def iht(
    A: np.ndarray,
    Y: np.ndarray,
    k: int,
    max_iter: int = 500,
    tol: float = 1e-10,
    shrink: float = 2.0,
    c: float = 0.01,
) -> tuple[np.ndarray, int]:
    """Normalized IHT: ``x <- H_k(x + mu A^T (y - A x))`` with the adaptive step of Blumensath & Davies.

    The step ``mu = ||g_S||^2 / ||A g_S||^2`` uses the gradient restricted to the current support;
    when the support changes and the step exceeds ``(1 - c) ||dx||^2 / ||A dx||^2`` it is divided by
    ``shrink`` until it does not (this guarantees convergence).

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
    k : int
        Non-zeros per signal.
    max_iter : int, default=500
    tol : float, default=1e-10
        Stop when every squared update, or every squared residual, relative to ``||x||^2`` or
        ``||y||^2`` is below it.
    shrink : float, default=2.0
        Step reduction factor of the backtracking.
    c : float, default=0.01
        Safety margin of the step bound.

    Returns
    -------
    X : ndarray of shape (d, t)
        k-sparse codes.
    n_iter : int
        Iterations run.
    """
    d, t = A.shape[1], Y.shape[1]
    X = np.zeros((d, t))
    G = A.T @ Y
    support = keep_largest(G, k) != 0
    y_energy = np.maximum((Y**2).sum(axis=0), 1e-300)
    it = 0
    for it in range(1, max_iter + 1):
        R = Y - A @ X
        G = A.T @ R
        gS = np.where(support, G, 0.0)
        mu = (gS**2).sum(axis=0) / np.maximum(((A @ gS) ** 2).sum(axis=0), 1e-300)
        X_new = keep_largest(X + mu * G, k)
        for _ in range(30):
            new_support = X_new != 0
            changed = np.any(new_support != support, axis=0)
            dX = X_new - X
            limit = (1.0 - c) * (dX**2).sum(axis=0) / np.maximum(((A @ dX) ** 2).sum(axis=0), 1e-300)
            bad = changed & (mu > limit)
            if not bad.any():
                break
            mu = np.where(bad, mu / (shrink * (1.0 - c)), mu)
            X_new[:, bad] = keep_largest(X[:, bad] + mu[bad] * G[:, bad], k)
        support = X_new != 0
        delta = ((X_new - X) ** 2).sum(axis=0)
        X = X_new
        if np.all(delta <= tol * np.maximum((X**2).sum(axis=0), 1e-300)) or np.all(
            ((Y - A @ X) ** 2).sum(axis=0) <= tol * y_energy
        ):
            break
    return X, it


def _dependent(Gss: np.ndarray, best: np.ndarray, y2: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Signals whose newest atom (last of ``Gss``) adds nothing: the residual is orthogonal to every
    remaining atom, or the atom lies in the span of those already selected (as scikit-learn stops).

    Parameters
    ----------
    Gss : ndarray of shape (t, s+1, s+1)
        Gram blocks of the selected atoms, the newest last.
    best : ndarray of shape (t,)
        ``|a_new^T r|`` of each signal.
    y2 : ndarray of shape (t,)
        Squared norm of each signal.
    rows : ndarray of bool, shape (t,)
        The signals to look at (the others are reported False).

    Returns
    -------
    ndarray of bool, shape (t,)
    """
    out = np.zeros(len(best), dtype=bool)
    G, g, gkk = Gss[rows, :-1, :-1], Gss[rows, :-1, -1], Gss[rows, -1, -1]
    projected = (g * np.linalg.solve(G, g[..., None])[..., 0]).sum(axis=1) if G.shape[1] else 0.0
    scale = np.sqrt(np.maximum(gkk, 0.0) * y2[rows])
    out[rows] = (gkk - projected <= _DEPENDENCE_RTOL * gkk) | (best[rows] <= _DEPENDENCE_RTOL * scale)
    return out


_DEPENDENCE_RTOL = 1e-10


def omp(
    A: np.ndarray,
    Y: np.ndarray,
    k: int | None = None,
    tol: float | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """Orthogonal matching pursuit for every column of ``Y``.

    Selects ``argmax_j |a_j^T r|`` (columns are not renormalized, as in scikit-learn) and refits by
    least squares on the selected set. Signals are processed in lock step, ``chunk`` at a time. Like
    scikit-learn, a signal stops early, with a ``RuntimeWarning``, when the next atom is linearly
    dependent on those selected (duplicate or all-zero columns) or its residual is already orthogonal
    to every atom.

    Parameters
    ----------
    A : ndarray of shape (n, d)
    Y : ndarray of shape (n, t)
    k : int, optional
        Atoms per signal (default ``min(n, d)``).
    tol : float, optional
        Stop a signal earlier once its squared residual norm is <= ``tol``.
    chunk : int, default=512
        Signals per batch.

    Returns
    -------
    X : ndarray of shape (d, t)
        Codes with at most ``k`` non-zeros per column.
    """
    n, d = A.shape
    t = Y.shape[1]
    k_max = min(n, d) if k is None else k
    G = A.T @ A
    X = np.zeros((d, t))
    premature = False
    for lo in range(0, t, chunk):
        Yc = Y[:, lo:lo + chunk]
        tc = Yc.shape[1]
        alpha = (A.T @ Yc).T                       # (tc, d)
        y2 = (Yc**2).sum(axis=0)                   # (tc,)
        corr = alpha.copy()
        idx = np.zeros((tc, k_max), dtype=np.int64)
        coef = np.zeros((tc, 0))
        active = np.ones(tc, dtype=bool) if tol is None else y2 > tol
        n_sel = np.zeros(tc, dtype=np.int64)
        rows = np.arange(tc)
        for s in range(k_max):
            if not active.any():
                break
            score = np.abs(corr)
            if s:
                score[rows[:, None], idx[:, :s]] = -1.0
            idx[:, s] = np.argmax(score, axis=1)
            S = idx[:, : s + 1]
            Gss = G[S[:, :, None], S[:, None, :]]  # (tc, s+1, s+1)
            dependent = active & _dependent(Gss, score[rows, idx[:, s]], y2, active)
            premature |= bool(dependent.any())
            active &= ~dependent
            rhs = np.take_along_axis(alpha, S, axis=1)
            coef = np.concatenate([coef, np.zeros((tc, 1))], axis=1)
            coef[active] = np.linalg.solve(Gss[active], rhs[active][..., None])[..., 0]
            n_sel[active] = s + 1
            corr = alpha - np.einsum("tsd,ts->td", G[S], coef)
            if tol is not None:
                res2 = y2 - (rhs * coef).sum(axis=1)
                active &= res2 > tol
        for j in range(tc):
            X[idx[j, : n_sel[j]], lo + j] = coef[j, : n_sel[j]]
    if premature:
        warnings.warn("Orthogonal matching pursuit ended prematurely due to linear dependence in the dictionary. "
                      "The requested precision might not have been met.", RuntimeWarning, stacklevel=3)
    return X
