"""Sparse Bayesian learning: Tipping's SBL and the Kronecker-structured variant.

Model: ``y = Phi x + e`` with ``e ~ N(0, sigma2 I)`` and a Gaussian prior ``x_i ~ N(0, gamma_i)`` whose
variances ``gamma`` are learned by type-II maximum likelihood with EM (Tipping, JMLR 2001; Wipf &
Rao, IEEE TSP 2004). Most ``gamma_i`` go to zero, which makes the posterior mean sparse.

:class:`KroneckerSBL` handles ``Phi = A kron B`` with a Kronecker-supported ``x`` (He, Bai, Luo et
al., "Bayesian Algorithms for Kronecker-structured Sparse Vector Recovery With Application to
IRS-MIMO Channel Estimation"): ``gamma = gamma_A kron gamma_B``, so the evidence covariance is
``sigma2 I + (A Gamma_A A^T) kron (B Gamma_B B^T)``, inverted through two small eigendecompositions;
``A kron B`` is never formed (unless ``algebra="dense"``, a reference for small problems). The
M-step is the alternating-minimization (AM) update or the rank-1 SVD approximation of the paper.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, as_vector, check_fitted, check_int, check_positive


def sbl_posterior(Phi: np.ndarray, y: np.ndarray, gamma: np.ndarray, sigma2: float
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian posterior of ``x`` in ``y = Phi x + e`` for prior variances ``gamma``.

    Only columns with ``gamma > 0`` take part (pruned ones have zero mean and variance). The
    (n, n) evidence covariance ``sigma2 I + Phi Gamma Phi^T`` is used when there are more active
    columns than rows, the (a, a) posterior precision otherwise.

    Parameters
    ----------
    Phi : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    gamma : ndarray of shape (d,)
        Prior variances (>= 0).
    sigma2 : float
        Noise variance (> 0).

    Returns
    -------
    mean : ndarray of shape (d,)
    variances : ndarray of shape (d,)
        Diagonal of the posterior covariance.
    residual : float
        ``||y - Phi mean||^2``.
    """
    active = np.flatnonzero(gamma > 0)
    mu, var = np.zeros(Phi.shape[1]), np.zeros(Phi.shape[1])
    if active.size:
        P, g = Phi[:, active], gamma[active]
        if active.size > Phi.shape[0]:
            Sy = sigma2 * np.eye(Phi.shape[0]) + (P * g) @ P.T
            sol = np.linalg.solve(Sy, np.column_stack([y, P]))
            mu[active] = g * (P.T @ sol[:, 0])
            var[active] = g - g**2 * np.einsum("ij,ij->j", P, sol[:, 1:])
        else:
            prec = P.T @ P / sigma2 + np.diag(1.0 / g)
            Sigma = np.linalg.inv(prec)
            mu[active] = Sigma @ (P.T @ y) / sigma2
            var[active] = np.diagonal(Sigma)
    resid = float(((y - Phi @ mu) ** 2).sum())
    return mu, np.maximum(var, 0.0), resid


def _noise_update(resid: float, gamma: np.ndarray, var: np.ndarray, sigma2: float, n: int) -> float:
    dof = np.where(gamma > 0, 1.0 - var / np.where(gamma > 0, gamma, 1.0), 0.0).sum()
    return max((resid + sigma2 * dof) / n, 1e-12)


class _SBLBase(ParamsMixin):
    noise_var: float | None
    max_iter: int
    tol: float
    prune: float

    def _init_noise(self, y: np.ndarray) -> float:
        if self.noise_var is None:
            return max(0.1 * float(np.var(y)), 1e-12)
        return check_positive(self.noise_var, "noise_var")

    def predict(self, X: Any) -> np.ndarray:
        """Posterior-mean prediction.

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


class SBL(_SBLBase):
    """Tipping's sparse Bayesian learning for ``y = X w + noise`` (no intercept).

    Parameters
    ----------
    noise_var : float or None, default=None
        Noise variance sigma2 (> 0); None learns it, starting from 10% of the variance of ``y``.
    update : {"em", "mackay"}, default="em"
        ``"em"``: ``gamma_i <- mu_i^2 + Sigma_ii``; ``"mackay"``: the faster fixed point
        ``gamma_i <- mu_i^2 / (1 - Sigma_ii / gamma_i)``.
    max_iter : int, default=1000
    tol : float, default=1e-8
        Stop when the largest change of gamma, relative to max(gamma), falls below it.
    prune : float, default=1e-8
        Prior variances below ``prune * max(gamma)`` are set to 0 (their coefficients to 0).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Posterior mean of w.
    gamma_ : ndarray of shape (n_features,)
        Learned prior variances (0 = pruned).
    noise_var_ : float
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(self, noise_var: float | None = None, update: str = "em", max_iter: int = 1000,
                 tol: float = 1e-8, prune: float = 1e-8) -> None:
        self.noise_var, self.update, self.max_iter, self.tol, self.prune = noise_var, update, max_iter, tol, prune

    def fit(self, X: Any, y: Any) -> "SBL":
        """Learn the prior variances (and the noise) by type-II maximum likelihood.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        if self.update not in ("em", "mackay"):
            raise SparsecraftError(f"update must be 'em' or 'mackay', got {self.update!r}")
        Phi = as_matrix(X, "X")
        y = as_vector(y, Phi.shape[0])
        learn_noise = self.noise_var is None
        sigma2 = self._init_noise(y)
        gamma = np.ones(Phi.shape[1])
        it = 0
        for it in range(1, check_int(self.max_iter, "max_iter") + 1):
            mu, var, resid = sbl_posterior(Phi, y, gamma, sigma2)
            if self.update == "em":
                new = mu**2 + var
            else:
                denom = np.where(gamma > 0, 1.0 - var / np.where(gamma > 0, gamma, 1.0), 1.0)
                new = mu**2 / np.maximum(denom, 1e-12)
            new = np.where(new < self.prune * max(new.max(), 1e-300), 0.0, new)
            if learn_noise:
                sigma2 = _noise_update(resid, gamma, var, sigma2, Phi.shape[0])
            change = np.abs(new - gamma).max() / max(gamma.max(), 1e-300)
            gamma = new
            if change < self.tol:
                break
        self.coef_, _, _ = sbl_posterior(Phi, y, gamma, sigma2)
        self.gamma_, self.noise_var_, self.n_iter_ = gamma, sigma2, it
        self.n_features_in_ = Phi.shape[1]
        return self


def _kron_posterior(A: np.ndarray, B: np.ndarray, Y: np.ndarray, g1: np.ndarray, g2: np.ndarray,
                    sigma2: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Posterior mean and variances as (n1, n2) matrices for ``gamma = g1 kron g2``, never forming A kron B."""
    d1, U1 = np.linalg.eigh((A * g1) @ A.T)
    d2, U2 = np.linalg.eigh((B * g2) @ B.T)
    W = 1.0 / (sigma2 + np.outer(np.maximum(d1, 0.0), np.maximum(d2, 0.0)))   # (m1, m2)
    Z = U1 @ ((U1.T @ Y @ U2) * W) @ U2.T                                        # Sigma_y^{-1} y
    G = np.outer(g1, g2)
    M = G * (A.T @ Z @ B)
    P1, P2 = (A.T @ U1) ** 2, (B.T @ U2) ** 2
    var = G - G**2 * (P1 @ W @ P2.T)
    resid = float(((Y - A @ M @ B.T) ** 2).sum())
    return M, np.maximum(var, 0.0), resid


def _rank1_am(S: np.ndarray, g1: np.ndarray, g2: np.ndarray, rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Alternating minimization of sum log(g1_i g2_j) + S_ij / (g1_i g2_j) over g1, g2 >= 0."""
    for _ in range(rounds):
        inv2 = np.where(g2 > 0, 1.0 / np.where(g2 > 0, g2, 1.0), 0.0)
        g1 = (S * inv2).sum(axis=1) / max(np.count_nonzero(g2), 1)
        inv1 = np.where(g1 > 0, 1.0 / np.where(g1 > 0, g1, 1.0), 0.0)
        g2 = (S * inv1[:, None]).sum(axis=0) / max(np.count_nonzero(g1), 1)
    scale = np.sqrt(max(g2.max(), 1e-300) / max(g1.max(), 1e-300))
    return g1 * scale, g2 / scale


def _rank1_svd(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leading singular pair of the non-negative matrix ``S`` as a Kronecker factorization."""
    u, s, vt = np.linalg.svd(S, full_matrices=False)
    g1, g2 = np.abs(u[:, 0]) * np.sqrt(s[0]), np.abs(vt[0]) * np.sqrt(s[0])
    return g1, g2


class KroneckerSBL(_SBLBase):
    """SBL for ``y = (A kron B) x + noise`` with Kronecker-structured prior variances.

    Parameters
    ----------
    noise_var : float or None, default=None
        Noise variance sigma2 (> 0); None learns it, starting from 10% of the variance of ``y``.
    update : {"am", "svd"}, default="am"
        M-step: alternating minimization, or the rank-1 SVD approximation.
    algebra : {"factored", "dense"}, default="factored"
        ``"dense"`` forms ``A kron B`` and reuses the plain-SBL posterior: a reference for checking
        the factored algebra on small problems.
    max_iter : int, default=1000
    tol : float, default=1e-8
        Stop when the largest change of gamma, relative to max(gamma), falls below it.
    prune : float, default=1e-10
        Factor variances below ``prune`` times their maximum are set to 0.

    Attributes
    ----------
    coef_ : ndarray of shape (n1 * n2,)
        Posterior mean of x, in the ordering of ``np.kron(A, B) @ x``.
    gamma_a_ : ndarray of shape (n1,)
    gamma_b_ : ndarray of shape (n2,)
        Learned prior variance factors, ``gamma = kron(gamma_a_, gamma_b_)``.
    noise_var_ : float
    n_iter_ : int
    """

    def __init__(self, noise_var: float | None = None, update: str = "am", algebra: str = "factored",
                 max_iter: int = 1000, tol: float = 1e-8, prune: float = 1e-10) -> None:
        self.noise_var, self.update, self.algebra = noise_var, update, algebra
        self.max_iter, self.tol, self.prune = max_iter, tol, prune

    def posterior(self, A: np.ndarray, B: np.ndarray, Y: np.ndarray, g1: np.ndarray, g2: np.ndarray,
                  sigma2: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Posterior for prior variances ``kron(g1, g2)``.

        Parameters
        ----------
        A : ndarray of shape (m1, n1)
        B : ndarray of shape (m2, n2)
        Y : ndarray of shape (m1, m2)
            Measurements ``y`` reshaped row-major.
        g1 : ndarray of shape (n1,)
        g2 : ndarray of shape (n2,)
        sigma2 : float
            Noise variance.

        Returns
        -------
        mean : ndarray of shape (n1, n2)
        variances : ndarray of shape (n1, n2)
        residual : float
            ``||y - (A kron B) mean||^2``.
        """
        if self.algebra == "dense":
            mu, var, resid = sbl_posterior(np.kron(A, B), Y.ravel(), np.kron(g1, g2), sigma2)
            return mu.reshape(len(g1), len(g2)), var.reshape(len(g1), len(g2)), resid
        return _kron_posterior(A, B, Y, g1, g2, sigma2)

    def fit(self, A: Any, B: Any, y: Any) -> "KroneckerSBL":
        """Learn the prior variance factors (and the noise).

        Parameters
        ----------
        A : array-like of shape (m1, n1)
        B : array-like of shape (m2, n2)
        y : array-like of shape (m1 * m2,)

        Returns
        -------
        self
        """
        if self.update not in ("am", "svd"):
            raise SparsecraftError(f"update must be 'am' or 'svd', got {self.update!r}")
        if self.algebra not in ("factored", "dense"):
            raise SparsecraftError(f"algebra must be 'factored' or 'dense', got {self.algebra!r}")
        A, B = as_matrix(A, "A"), as_matrix(B, "B")
        (m1, n1), (m2, n2) = A.shape, B.shape
        y = as_vector(y, m1 * m2, rows_of="A kron B")
        Y = y.reshape(m1, m2)
        learn_noise = self.noise_var is None
        sigma2 = self._init_noise(y)
        g1, g2 = np.ones(n1), np.ones(n2)
        it = 0
        for it in range(1, check_int(self.max_iter, "max_iter") + 1):
            M, V, resid = self.posterior(A, B, Y, g1, g2, sigma2)
            S = M**2 + V
            n1_, n2_ = (_rank1_am(S, g1, g2) if self.update == "am" else _rank1_svd(S))
            n1_ = np.where(n1_ < self.prune * max(n1_.max(), 1e-300), 0.0, n1_)
            n2_ = np.where(n2_ < self.prune * max(n2_.max(), 1e-300), 0.0, n2_)
            if learn_noise:
                G = np.outer(g1, g2)
                sigma2 = _noise_update(resid, G.ravel(), V.ravel(), sigma2, m1 * m2)
            old, new = np.outer(g1, g2), np.outer(n1_, n2_)
            change = np.abs(new - old).max() / max(old.max(), 1e-300)
            g1, g2 = n1_, n2_
            if change < self.tol:
                break
        M, _, _ = self.posterior(A, B, Y, g1, g2, sigma2)
        self.coef_ = M.ravel()
        self.gamma_a_, self.gamma_b_, self.noise_var_, self.n_iter_ = g1, g2, sigma2, it
        return self

    def predict(self, A: Any, B: Any = None) -> np.ndarray:  # type: ignore[override]
        """``(A kron B) coef_`` computed without forming the Kronecker product.

        Parameters
        ----------
        A : array-like of shape (m1, n1)
        B : array-like of shape (m2, n2)

        Returns
        -------
        y_pred : ndarray of shape (m1 * m2,)
        """
        check_fitted(self)
        A, B = as_matrix(A, "A"), as_matrix(B, "B")
        X = self.coef_.reshape(A.shape[1], B.shape[1])
        return (A @ X @ B.T).ravel()
