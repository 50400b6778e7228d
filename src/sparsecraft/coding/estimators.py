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
        """Fit the sparse coefficients; parameters are checked here.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Design matrix, finite.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets; each target is fitted independently (in one batched solve).

        Returns
        -------
        self
            The fitted estimator (``coef_``, ``intercept_``, ``n_features_in_`` set).
        """
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
        """Predict with the fitted linear model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples with as many features as the training data.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            ``X @ coef_.T + intercept_``, in the shape ``y`` had in ``fit``.
        """
        check_fitted(self)
        A = as_matrix(X, "X")
        if A.shape[1] != self.n_features_in_:
            raise SparsecraftError(f"X has {A.shape[1]} features but the model was fitted on {self.n_features_in_}")
        return A @ self.coef_.T + self.intercept_


class Lasso(_LinearSparseModel):
    """l1-regularized least squares with scikit-learn's objective, solved by ISTA or FISTA.

    Minimizes ``1/(2 n_samples) ||y - X w - b||^2 + alpha ||w||_1`` (Tibshirani 1996). FISTA (Beck &
    Teboulle 2009) uses adaptive restart; both stop on the duality gap <= ``tol * ||y||^2``.

    Parameters
    ----------
    alpha : float, default=1.0
        Weight of the l1 term (> 0), scaled as in ``sklearn.linear_model.Lasso``.
    solver : {"fista", "ista"}, default="fista"
        Accelerated (FISTA) or plain (ISTA) proximal gradient.
    fit_intercept : bool, default=True
        Center ``X`` and ``y`` and fit an unpenalized intercept.
    max_iter : int, default=10000
        Iteration cap.
    tol : float, default=1e-10
        Relative duality-gap tolerance (> 0).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Sparse coefficients.
    intercept_ : float or ndarray of shape (n_targets,)
        ``mean(y) - mean(X) @ coef_`` with ``fit_intercept``, else 0.
    n_features_in_ : int
        Number of features seen by ``fit``.
    n_iter_ : int
        Iterations run.
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
        """scikit-learn's Lasso objective of the fitted model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        objective : float
            ``1/(2 n_samples) ||y - X coef_ - intercept_||^2 + alpha ||coef_||_1``, summed over targets.
        """
        check_fitted(self)
        A = as_matrix(X, "X")
        Y, _ = as_targets(y, A.shape[0], "y")
        R = Y - self.predict(A).reshape(Y.shape)
        return float((R**2).sum() / (2 * A.shape[0]) + self.alpha * np.abs(self.coef_).sum())


class IHT(_LinearSparseModel):
    """k-sparse least squares by normalized iterative hard thresholding (Blumensath & Davies 2010).

    Parameters
    ----------
    n_nonzero_coefs : int
        Non-zeros per target, k in [1, n_features].
    fit_intercept : bool, default=True
        Center ``X`` and ``y`` and fit an unpenalized intercept.
    max_iter : int, default=500
        Iteration cap.
    tol : float, default=1e-12
        Stop when the squared change of the coefficients, or the squared residual, relative to its
        scale (``||w||^2``, ``||y||^2``) falls below it (> 0).
    debias : bool, default=True
        Refit the final support by least squares.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Sparse coefficients.
    intercept_ : float or ndarray of shape (n_targets,)
        ``mean(y) - mean(X) @ coef_`` with ``fit_intercept``, else 0.
    n_features_in_ : int
        Number of features seen by ``fit``.
    n_iter_ : int
        Iterations run.
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

    Parameters
    ----------
    n_nonzero_coefs : int or None, default=None
        Non-zeros per target, k <= min(n_samples, n_features). None with ``tol=None``: 10% of the
        features.
    tol : float or None, default=None
        Stop when the squared residual norm ``||y - X w||^2`` falls to it (>= 0); overrides
        ``n_nonzero_coefs`` when given.
    fit_intercept : bool, default=True
        Center ``X`` and ``y`` and fit an unpenalized intercept.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
        Sparse coefficients.
    intercept_ : float or ndarray of shape (n_targets,)
        ``mean(y) - mean(X) @ coef_`` with ``fit_intercept``, else 0.
    n_features_in_ : int
        Number of features seen by ``fit``.
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
