"""Sparse spectral unmixing with a spectral library: l2,1 row sparsity, an l2,p (0<p<1) option, robust bands.

Each pixel spectrum ``y`` (n_bands,) is a non-negative mix of a few library spectra:
``Y^T ~= E A`` with E (n_bands, n_library) and abundances A (n_library, n_pixels) >= 0. Because the
same few endmembers appear across the scene, the rows of A are jointly sparse (collaborative sparse
unmixing, Iordache, Bioucas-Dias & Plaza 2014):

    min_A  1/2 ||W (Y^T - E A)||_F^2 + lam * sum_i w_i ||A_i,:||_2   s.t. A >= 0,

solved by FISTA with the exact prox (clip at zero, then group soft-thresholding). ``penalty="l2p"``
majorizes ``sum_i ||A_i||_2^p`` by reweighted l2,1 (``w_i = p (||A_i|| + eps)^(p-1)``), and
``robust=True`` replaces the squared loss by the l2,1 norm over bands, ``sum_l ||R_l,:||_2``,
by iterative reweighting (a band's weight is ``1 / ||R_l,:||``), so outlier channels cannot dominate:
the two ideas of "Effective Spectral Unmixing via Robust Representation and Learning-based Sparsity".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, check_fitted, check_int, check_positive, rng
from .solvers import spectral_norm_sq


def _group_prox(V: np.ndarray, thresh: np.ndarray) -> np.ndarray:
    """Prox of ``sum_i thresh_i ||row_i||_2`` + non-negativity: clip, then shrink each row."""
    V = np.maximum(V, 0.0)
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return V * np.maximum(0.0, 1.0 - thresh[:, None] / np.maximum(norms, 1e-300))


def _fista_l21(E: np.ndarray, Yt: np.ndarray, lam: float, weights: np.ndarray, A0: np.ndarray,
               max_iter: int, tol: float) -> np.ndarray:
    L = spectral_norm_sq(E)
    G, EtY = E.T @ E, E.T @ Yt
    A, Z, t = A0.copy(), A0.copy(), 1.0
    for _ in range(max_iter):
        A_new = _group_prox(Z - (G @ Z - EtY) / L, lam * weights / L)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        Z = A_new + (t - 1) / t_new * (A_new - A)
        done = np.linalg.norm(A_new - A) <= tol * max(np.linalg.norm(A_new), 1e-12)
        A, t = A_new, t_new
        if done:
            break
    return A


class SparseUnmixing(ParamsMixin):
    """Estimate non-negative, row-sparse abundances of ``library`` spectra in each pixel.

    Parameters
    ----------
    library : array-like of shape (n_library, n_bands)
        One spectrum per row (scikit-learn orientation).
    lam : float, default=0.1
        Weight of the row-sparsity penalty, in squared reflectance units (> 0).
    penalty : {"l21", "l2p"}, default="l21"
        ``sum_i ||A_i||_2``, or ``sum_i ||A_i||_2^p`` by reweighted l2,1.
    p : float, default=0.5
        Exponent in (0, 1) of ``"l2p"``.
    robust : bool, default=False
        Replace the squared loss by the l2,1 norm over bands (reweighted), so that corrupted bands
        cannot dominate.
    n_reweight : int, default=5
        Reweighting rounds (``"l2p"`` or ``robust``; otherwise one solve).
    max_iter : int, default=500
        FISTA iterations per round.
    tol : float, default=1e-6
        Relative change of the abundances that stops FISTA.

    Attributes
    ----------
    abundances_ : ndarray of shape (n_pixels, n_library)
        Non-negative abundances.
    active_ : ndarray of int
        Library rows in use (row norm above 1% of the largest).
    band_weights_ : ndarray of shape (n_bands,)
        Final band weights (all 1 unless ``robust``).
    """

    def __init__(self, library: Any, lam: float = 0.1, penalty: str = "l21", p: float = 0.5,
                 robust: bool = False, n_reweight: int = 5, max_iter: int = 500, tol: float = 1e-6) -> None:
        self.library = library
        self.lam, self.penalty, self.p, self.robust = lam, penalty, p, robust
        self.n_reweight, self.max_iter, self.tol = n_reweight, max_iter, tol

    def fit(self, Y: Any, y: Any = None) -> "SparseUnmixing":
        """Unmix the pixels.

        Parameters
        ----------
        Y : array-like of shape (n_pixels, n_bands)
            Pixel spectra, one per row.
        y : ignored

        Returns
        -------
        self
        """
        pix = as_matrix(Y, "Y")
        E = as_matrix(self.library, "library").T
        if pix.shape[1] != E.shape[0]:
            raise SparsecraftError(
                f"Y has {pix.shape[1]} bands but library spectra have {E.shape[0]}; pass matching shapes"
            )
        if self.penalty not in ("l21", "l2p"):
            raise SparsecraftError(f"penalty must be 'l21' or 'l2p', got {self.penalty!r}")
        if self.penalty == "l2p" and not 0.0 < self.p < 1.0:
            raise SparsecraftError(f"p must lie in (0, 1) for penalty 'l2p', got {self.p!r}")
        lam = check_positive(self.lam, "lam")
        Yt = pix.T
        m = E.shape[1]
        row_w, band_w = np.ones(m), np.ones(E.shape[0])
        A = np.zeros((m, pix.shape[0]))
        rounds = check_int(self.n_reweight, "n_reweight") if (self.penalty == "l2p" or self.robust) else 1
        for _ in range(rounds):
            s = np.sqrt(band_w)[:, None]
            A = _fista_l21(E * s, Yt * s, lam, row_w, A, check_int(self.max_iter, "max_iter"), self.tol)
            if self.penalty == "l2p":
                norms = np.linalg.norm(A, axis=1)
                eps = 1e-3 * max(norms.max(), 1e-12)
                row_w = self.p * (norms + eps) ** (self.p - 1.0) * eps ** (1.0 - self.p)
            if self.robust:
                band_res = np.linalg.norm(Yt - E @ A, axis=1)
                band_w = 1.0 / np.maximum(band_res, 1e-6 * max(band_res.max(), 1e-12))
                band_w *= len(band_w) / band_w.sum()
        self.abundances_ = A.T
        self.active_ = np.flatnonzero(np.linalg.norm(A, axis=1) > 1e-2 * max(np.linalg.norm(A, axis=1).max(), 1e-300))
        self.band_weights_ = band_w
        return self

    def reconstruct(self) -> np.ndarray:
        """Modelled pixels.

        Returns
        -------
        ndarray of shape (n_pixels, n_bands)
            ``abundances_ @ library``.
        """
        check_fitted(self, "abundances_")
        return self.abundances_ @ as_matrix(self.library, "library")


def synthetic_mixture(n_bands: int = 100, n_library: int = 60, n_active: int = 5, n_pixels: int = 400,
                      snr_db: float = 30.0, n_outlier_bands: int = 0, random_state: Any = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random spectral library, noisy mixed pixels and their true abundances.

    Parameters
    ----------
    n_bands : int, default=100
    n_library : int, default=60
    n_active : int, default=5
        Library members present in the scene, in [1, n_library]; their abundances follow a
        Dirichlet(1) law (non-negative, summing to one per pixel).
    n_pixels : int, default=400
    snr_db : float, default=30.0
        Signal-to-noise ratio of the white noise, in dB.
    n_outlier_bands : int, default=0
        Bands given gross corruption (10x the signal scale).
    random_state : int, numpy Generator or None, default=0

    Returns
    -------
    library : ndarray of shape (n_library, n_bands)
    pixels : ndarray of shape (n_pixels, n_bands)
    abundances : ndarray of shape (n_pixels, n_library)
    """
    gen = rng(random_state)
    if not 1 <= n_active <= n_library:
        raise SparsecraftError(f"n_active={n_active} must lie in [1, n_library={n_library}]")
    grid = np.linspace(0, 1, n_bands)
    centers = gen.random((n_library, 6))
    widths = 0.02 + 0.08 * gen.random((n_library, 6))
    heights = gen.random((n_library, 6))
    lib = 0.05 + (heights[:, :, None] * np.exp(-((grid - centers[:, :, None]) / widths[:, :, None]) ** 2)).sum(axis=1)
    A = np.zeros((n_pixels, n_library))
    active = gen.choice(n_library, n_active, replace=False)
    A[:, active] = gen.dirichlet(np.ones(n_active), size=n_pixels)
    clean = A @ lib
    sigma = np.sqrt((clean**2).mean() / 10 ** (snr_db / 10))
    Y = clean + sigma * gen.standard_normal(clean.shape)
    if n_outlier_bands:
        bad = gen.choice(n_bands, n_outlier_bands, replace=False)
        Y[:, bad] += 10 * np.abs(clean).mean() * gen.standard_normal((n_pixels, n_outlier_bands))
    return lib, Y, A
