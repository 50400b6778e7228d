"""Sparse coding of signals on a fixed dictionary (one registry of methods: ``ENCODERS``).

Shapes follow scikit-learn's ``SparseCoder``: ``dictionary`` is (n_components, n_features) with one
atom per row, signals ``X`` are (n_samples, n_features), codes are (n_samples, n_components), and
``X ~= codes @ dictionary``.

Methods: ``l1`` (FISTA soft thresholding), ``l0`` (proximal hard thresholding), ``cel0`` (CEL0
relaxation of l0), ``omp`` (k atoms) and ``iht`` (k atoms). The penalized methods minimize
``1/2 ||x - D^T c||^2 + lam R(c)`` per signal; ``lam`` is in units of squared signal amplitude.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import SparsecraftError
from ..registry import Registry
from ._params import ParamsMixin
from ._validation import as_matrix, check_int, check_k, check_positive
from .solvers import iht, omp, proximal_gradient

# Each encoder maps (A (n_features, n_components), Y (n_features, t), lam, k, max_iter) -> C (n_components, t).
Encoder = Callable[[np.ndarray, np.ndarray, float | None, int | None, int], np.ndarray]
ENCODERS: Registry[Encoder] = Registry("sparse coding method")


def _penalized(penalty: str) -> Encoder:
    def encode(A: np.ndarray, Y: np.ndarray, lam: float | None, k: int | None, max_iter: int) -> np.ndarray:
        if lam is None:
            raise SparsecraftError(f"method {penalty!r} needs lam (the penalty weight); pass lam=...")
        return proximal_gradient(A, Y, check_positive(lam, "lam"), penalty, max_iter=max_iter, tol=1e-6)[0]

    return encode


def _k_sparse(fn: Callable[..., Any]) -> Encoder:
    def encode(A: np.ndarray, Y: np.ndarray, lam: float | None, k: int | None, max_iter: int) -> np.ndarray:
        if k is None:
            raise SparsecraftError("this method needs k (atoms per signal); pass k=...")
        k = check_k(k, A.shape[1], "k")
        if k > A.shape[0]:
            raise SparsecraftError(f"k={k} exceeds the signal dimension {A.shape[0]}; choose k <= {A.shape[0]}")
        out = fn(A, Y, k)
        return out[0] if isinstance(out, tuple) else out

    return encode


for _name in ("l1", "l0", "cel0"):
    ENCODERS.register(_name)(_penalized(_name))
ENCODERS.register("omp")(_k_sparse(lambda A, Y, k: omp(A, Y, k=k)))
ENCODERS.register("iht")(_k_sparse(lambda A, Y, k: iht(A, Y, k)))


def sparse_encode(X: Any, dictionary: Any, method: str = "l1", lam: float | None = None,
                  k: int | None = None, max_iter: int = 1000) -> np.ndarray:
    """Sparse codes of signals on a fixed dictionary, ``X ~= codes @ dictionary``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Signals, one per row.
    dictionary : array-like of shape (n_components, n_features)
        Atoms, one per row.
    method : str, default="l1"
        A name in ``ENCODERS``: ``l1``, ``l0``, ``cel0`` (need ``lam``), ``omp``, ``iht`` (need ``k``).
    lam : float, optional
        Penalty weight of the penalized methods, in squared signal units (> 0).
    k : int, optional
        Atoms per signal of ``omp`` and ``iht``, at most n_features and n_components.
    max_iter : int, default=1000
        Iteration cap of the iterative methods.

    Returns
    -------
    codes : ndarray of shape (n_samples, n_components)
    """
    D = as_matrix(dictionary, "dictionary")
    S = as_matrix(X, "X")
    if S.shape[1] != D.shape[1]:
        raise SparsecraftError(
            f"X has {S.shape[1]} features but dictionary atoms have {D.shape[1]}; pass matching shapes"
        )
    encoder = ENCODERS.get(method)
    return encoder(D.T, S.T, lam, k, check_int(max_iter, "max_iter")).T


class SparseEncoder(ParamsMixin):
    """Transformer: sparse codes of signals on a fixed dictionary (:func:`sparse_encode` as an estimator).

    Parameters
    ----------
    dictionary : array-like of shape (n_components, n_features)
        Atoms, one per row.
    method : str, default="l1"
        A name in ``ENCODERS``: ``l1``, ``l0``, ``cel0`` (need ``lam``), ``omp``, ``iht`` (need ``k``).
    lam : float, optional
        Penalty weight of the penalized methods, in squared signal units (> 0).
    k : int, optional
        Atoms per signal of ``omp`` and ``iht``, at most n_features and n_components.
    max_iter : int, default=1000
        Iteration cap of the iterative methods.
    """

    def __init__(self, dictionary: Any, method: str = "l1", lam: float | None = None,
                 k: int | None = None, max_iter: int = 1000) -> None:
        self.dictionary, self.method, self.lam, self.k, self.max_iter = dictionary, method, lam, k, max_iter

    def fit(self, X: Any = None, y: Any = None) -> "SparseEncoder":
        """Check the dictionary and the method; nothing is learned (the dictionary is fixed).

        Parameters
        ----------
        X, y : ignored
            Present for pipeline compatibility.

        Returns
        -------
        self
        """
        as_matrix(self.dictionary, "dictionary")
        ENCODERS.get(self.method)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Sparse codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
        """
        return sparse_encode(X, self.dictionary, self.method, self.lam, self.k, self.max_iter)

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Signals synthesized from codes.

        Parameters
        ----------
        codes : array-like of shape (n_samples, n_components)

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            ``codes @ dictionary``.
        """
        C, D = as_matrix(codes, "codes"), as_matrix(self.dictionary, "dictionary")
        if C.shape[1] != D.shape[0]:
            raise SparsecraftError(f"codes have {C.shape[1]} columns but the dictionary has {D.shape[0]} atoms")
        return C @ D
