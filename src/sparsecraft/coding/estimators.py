"""scikit-learn-style sparse regression estimators: Lasso (ISTA/FISTA), IHT and OMP.

Shapes follow scikit-learn: ``X`` is (n_samples, n_features), ``y`` is (n_samples,) or
(n_samples, n_targets); ``coef_`` is (n_features,) or (n_targets, n_features).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, as_targets, check_fitted, check_int, check_k, check_positive
from .solvers import iht, least_squares_on_support, omp, proximal_gradient


class _LinearSparseModel(ParamsMixin):
    """Shared fit plumbing: validation, optional centering (intercept), coef_/intercept_, predict."""

    fit_intercept: bool

    def _solve(self, A: np.ndarray, Y: np.ndarray) -> np.ndarray:  # (d, t)
        raise NotImplementedError

    def fit(self, X: Any, y: Any) -> "_LinearSparseModel":
        """Fit on ``X`` (n_samples, n_features) and ``y`` (n_samples,) or (n_samples, n_targets)."""
        A = as_matrix(X, "X")
        Y, was_1d = as_targets(y, A.shape[0], "y")
        if self.fit_intercept:
            x_mean, y_mean = A.mean(axis=0), Y.mean(axis=0)
            A, Y = A - x_mean, Y - y_mean
        else:
            x_mean, y_mean = np.zeros(A.shape[1]), np.zeros(Y.shape[1])
        W = self._solve(A, Y)  # (d, t)
        intercept = y_mean - x_mean @ W
        self.coef_ = W[:, 0] if was_1d else W.T
        self.intercept_ = float(intercept[0]) if was_1d else intercept
        self.n_features_in_ = A.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,) or (n_samples, n_targets)."""
        check_fitted(self)
        A = as_matrix(X, "X")
        if A.shape[1] != self.n_features_in_:
            raise SparsecraftError(f"X has {A.shape[1]} features but the model was fitted on {self.n_features_in_}")
        return A @ self.coef_.T + self.intercept_


class Lasso(_LinearSparseModel):
    """l1-regularized least squares with scikit-learn's objective, solved by ISTA or FISTA.

    Minimizes ``1/(2 n_samples) ||y - X w - b||^2 + alpha ||w||_1`` (Tibshirani 1996). FISTA (Beck &
    Teboulle 2009) uses adaptive restart; both stop on the duality gap <= ``tol * ||y||^2``.
    """

    def __init__(self, alpha: float = 1.0, solver: str = "fista", fit_intercept: bool = True,
                 max_iter: int = 10000, tol: float = 1e-10) -> None:
        self.alpha, self.solver, self.fit_intercept = alpha, solver, fit_intercept
        self.max_iter, self.tol = max_iter, tol

    def _solve(self, A: np.ndarray, Y: np.ndarray) -> np.ndarray:
        if self.solver not in ("ista", "fista"):
            raise SparsecraftError(f"solver must be 'ista' or 'fista', got {self.solver!r}")
        alpha = check_positive(self.alpha, "alpha")
        W, self.n_iter_ = proximal_gradient(
            A, Y, alpha * A.shape[0], "l1", accelerate=self.solver == "fista",
            max_iter=check_int(self.max_iter, "max_iter"), tol=check_positive(self.tol, "tol"),
        )
        return W

    def objective(self, X: Any, y: Any) -> float:
        """scikit-learn's Lasso objective of the fitted model on ``(X, y)`` (summed over targets)."""
        check_fitted(self)
        A = as_matrix(X, "X")
        Y, _ = as_targets(y, A.shape[0], "y")
        R = Y - self.predict(A).reshape(Y.shape)
        return float((R**2).sum() / (2 * A.shape[0]) + self.alpha * np.abs(self.coef_).sum())


class IHT(_LinearSparseModel):
    """k-sparse least squares by normalized iterative hard thresholding (Blumensath & Davies 2010).

    With ``debias=True`` the final support is refit by least squares.
    """

    def __init__(self, n_nonzero_coefs: int, fit_intercept: bool = True, max_iter: int = 500,
                 tol: float = 1e-12, debias: bool = True) -> None:
        self.n_nonzero_coefs, self.fit_intercept = n_nonzero_coefs, fit_intercept
        self.max_iter, self.tol, self.debias = max_iter, tol, debias

    def _solve(self, A: np.ndarray, Y: np.ndarray) -> np.ndarray:
        k = check_k(self.n_nonzero_coefs, A.shape[1], "n_nonzero_coefs")
        W, self.n_iter_ = iht(A, Y, k, max_iter=check_int(self.max_iter, "max_iter"),
                              tol=check_positive(self.tol, "tol"))
        if self.debias:
            W = least_squares_on_support(A, Y, W)
        return W


class OMP(_LinearSparseModel):
    """Orthogonal matching pursuit with the same selection rule as scikit-learn's estimator.

    Give ``n_nonzero_coefs`` (k <= n_features and <= n_samples) or ``tol`` (squared residual norm).
    """

    def __init__(self, n_nonzero_coefs: int | None = None, tol: float | None = None,
                 fit_intercept: bool = True) -> None:
        self.n_nonzero_coefs, self.tol, self.fit_intercept = n_nonzero_coefs, tol, fit_intercept

    def _solve(self, A: np.ndarray, Y: np.ndarray) -> np.ndarray:
        n, d = A.shape
        tol = None if self.tol is None else check_positive(self.tol, "tol", allow_zero=True)
        if self.n_nonzero_coefs is None:
            k = None if tol is not None else max(int(0.1 * d), 1)
        else:
            k = check_k(self.n_nonzero_coefs, d, "n_nonzero_coefs")
        if k is not None and k > n:
            raise SparsecraftError(f"n_nonzero_coefs={k} exceeds n_samples={n}; choose k <= {n}")
        return omp(A, Y, k=k if k is not None else min(n, d), tol=tol)
