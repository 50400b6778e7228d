"""Sparse linear regression under local differential privacy (non-interactive).

Every user i holds ``(x_i, y_i)`` and sends the server only a randomized report (the local
randomizer, :func:`ldp_randomize`): clipped sufficient statistics ``x_i y_i`` (d,) and, unless the
server has public unlabeled data for the covariance, ``x_i x_i^T`` (d, d), each through the Gaussian
mechanism with half of the (epsilon, delta) budget. The server averages the reports and fits a
k-sparse estimator to the privatized quadratic loss ``1/2 t^T S t - c^T t`` by iterative hard
thresholding, after projecting ``S`` onto the positive-definite cone.

This follows the non-interactive setting of "Improved Analysis of Sparse Linear Regression in Local
Differential Privacy Model" (error O(d sqrt(k) / (n eps)) and the factor-d gain with public
unlabeled data); the exact estimator of the paper differs (ours is the plain sufficient-statistics
perturbation + IHT). The Gaussian mechanism here is the classical one, valid for epsilon <= 1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, as_vector, check_fitted, check_int, check_k, check_positive, rng
from .penalties import keep_largest


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """Noise standard deviation of the classical Gaussian mechanism (Dwork & Roth, Thm A.1).

    Parameters
    ----------
    sensitivity : float
        l2 sensitivity of the released statistic.
    epsilon : float
        Privacy budget in (0, 1].
    delta : float
        Failure probability in (0, 1).

    Returns
    -------
    float
        ``sensitivity * sqrt(2 log(1.25 / delta)) / epsilon``.
    """
    return sensitivity * np.sqrt(2.0 * np.log(1.25 / delta)) / epsilon


def ldp_randomize(X: np.ndarray, y: np.ndarray, epsilon: float, delta: float, clip_x: float, clip_y: float,
                  with_covariance: bool, gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Each user's randomized report (the local randomizer).

    Coordinates of x are clipped to [-clip_x, clip_x] and y to [-clip_y, clip_y]; the l2
    sensitivities are ``2 sqrt(d) clip_x clip_y`` and ``2 d clip_x^2``. With the covariance, each
    statistic gets half of the (epsilon, delta) budget.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        One user per row.
    y : ndarray of shape (n,)
    epsilon, delta : float
        The privacy budget of each user.
    clip_x, clip_y : float
        Clipping bounds (> 0).
    with_covariance : bool
        Also report ``x x^T``.
    gen : numpy Generator

    Returns
    -------
    xy : ndarray of shape (n, d)
        Privatized ``x y``.
    xx : ndarray of shape (n, d, d) or None
        Privatized, symmetric ``x x^T``, when ``with_covariance``.
    """
    n, d = X.shape
    Xc = np.clip(X, -clip_x, clip_x)
    yc = np.clip(y, -clip_y, clip_y)
    parts = 2 if with_covariance else 1
    eps, dlt = epsilon / parts, delta / parts
    s_xy = gaussian_sigma(2 * np.sqrt(d) * clip_x * clip_y, eps, dlt)
    xy = Xc * yc[:, None] + s_xy * gen.standard_normal((n, d))
    if not with_covariance:
        return xy, None
    s_xx = gaussian_sigma(2 * d * clip_x**2, eps, dlt)
    noise = gen.standard_normal((n, d, d)) * s_xx
    noise = np.triu(noise) + np.swapaxes(np.triu(noise, 1), 1, 2)          # symmetric report
    return xy, Xc[:, :, None] * Xc[:, None, :] + noise


class LDPSparseRegression(ParamsMixin):
    """k-sparse linear regression from (epsilon, delta)-LDP reports of the users' data.

    Parameters
    ----------
    k : int
        Non-zeros of the estimate, in [1, n_features].
    epsilon : float, default=1.0
        Privacy budget per user, in (0, 1].
    delta : float, default=1e-5
        In (0, 1).
    clip_x, clip_y : float, default=3.0
        Clipping bounds of the features and the response (> 0).
    public_X : array-like of shape (m, n_features), optional
        Unlabeled public data: the server estimates the covariance from it and users spend their
        whole budget on ``x y``.
    n_iter : int, default=200
        IHT iterations.
    chunk : int, default=4096
        Users randomized per batch (bounds the memory of the (chunk, d, d) reports).
    random_state : int, numpy Generator or None, default=None
        Seeds the randomizers.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        k-sparse estimate.
    dense_coef_ : ndarray of shape (n_features,)
        Private least-squares solution without sparsity, for comparison.
    covariance_ : ndarray of shape (n_features, n_features)
        Positive-definite covariance estimate used.
    xy_mean_ : ndarray of shape (n_features,)
        Averaged privatized ``x y``.
    n_features_in_ : int
    """

    def __init__(self, k: int, epsilon: float = 1.0, delta: float = 1e-5, clip_x: float = 3.0,
                 clip_y: float = 3.0, public_X: Any = None, n_iter: int = 200, chunk: int = 4096,
                 random_state: Any = None) -> None:
        self.k, self.epsilon, self.delta, self.clip_x, self.clip_y = k, epsilon, delta, clip_x, clip_y
        self.public_X, self.n_iter, self.chunk, self.random_state = public_X, n_iter, chunk, random_state

    def fit(self, X: Any, y: Any) -> "LDPSparseRegression":
        """Simulate the users' randomizers on the data and fit on the reports only.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One user per row.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        A = as_matrix(X, "X")
        t = as_vector(y, A.shape[0])
        n, d = A.shape
        k = check_k(self.k, d, "k")
        eps = check_positive(self.epsilon, "epsilon")
        if eps > 1.0:
            raise SparsecraftError(f"epsilon={eps} > 1: the Gaussian mechanism used here needs epsilon <= 1")
        delta = check_positive(self.delta, "delta")
        if delta >= 1.0:
            raise SparsecraftError(f"delta must lie in (0, 1), got {delta}")
        cx, cy = check_positive(self.clip_x, "clip_x"), check_positive(self.clip_y, "clip_y")
        gen = rng(self.random_state)
        public = None if self.public_X is None else as_matrix(self.public_X, "public_X")
        if public is not None and public.shape[1] != d:
            raise SparsecraftError(f"public_X has {public.shape[1]} features but X has {d}")
        c, S = np.zeros(d), np.zeros((d, d))
        step = check_int(self.chunk, "chunk")
        for lo in range(0, n, step):
            xy, xx = ldp_randomize(A[lo:lo + step], t[lo:lo + step], eps, delta, cx, cy, public is None, gen)
            c += xy.sum(axis=0)
            if xx is not None:
                S += xx.sum(axis=0)
        c /= n
        if public is not None:
            pc = np.clip(public, -cx, cx)
            S = pc.T @ pc / len(pc)
        else:
            S /= n
        w, V = np.linalg.eigh(S)
        S = (V * np.maximum(w, 1e-3 * max(w.max(), 1e-12))) @ V.T             # positive-definite projection
        self.dense_coef_ = np.linalg.solve(S, c)
        self.coef_ = _iht_quadratic(S, c, k, check_int(self.n_iter, "n_iter"))
        self.covariance_, self.xy_mean_, self.n_features_in_ = S, c, d
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Linear prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            ``X @ coef_``.
        """
        check_fitted(self)
        return as_matrix(X, "X") @ self.coef_


def _iht_quadratic(S: np.ndarray, c: np.ndarray, k: int, n_iter: int) -> np.ndarray:
    """k-sparse minimizer of ``1/2 t^T S t - c^T t`` by IHT, then exact refit on the support."""
    step = 1.0 / np.linalg.eigvalsh(S).max()
    theta = keep_largest(c[:, None], k)[:, 0]
    for _ in range(n_iter):
        new = keep_largest((theta - step * (S @ theta - c))[:, None], k)[:, 0]
        if np.array_equal(new != 0, theta != 0) and np.allclose(new, theta, rtol=1e-10, atol=1e-14):
            break
        theta = new
    supp = np.flatnonzero(theta)
    out = np.zeros_like(theta)
    out[supp] = np.linalg.solve(S[np.ix_(supp, supp)], c[supp])
    return out
