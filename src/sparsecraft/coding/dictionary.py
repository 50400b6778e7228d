"""Dictionary learning on signals, and natural-image patches to learn from.

:class:`DictionaryLearning` is the online algorithm of Mairal, Bach, Ponce & Sapiro (JMLR 2010):
for each mini-batch, sparse-code it on the current dictionary with any registered encoder (l1, l0,
CEL0, OMP, IHT), accumulate the sufficient statistics ``A = sum c c^T`` and ``B = sum x c^T`` (with
forgetting), and update each atom by one pass of block coordinate descent, projecting it onto the
unit ball. Shapes follow scikit-learn: ``components_`` is (n_components, n_features).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import SparsecraftError
from ._params import ParamsMixin
from ._validation import as_matrix, check_fitted, check_int, rng
from .encode import ENCODERS, sparse_encode


def image_patches(patch_size: int = 8, n_patches: int = 10000, random_state: Any = 0,
                  images: str = "all") -> np.ndarray:
    """Random grey-level patches from scikit-learn's bundled photos.

    Uses ``sklearn.datasets.load_sample_images`` (china.jpg and flower.jpg ship with scikit-learn,
    nothing is downloaded). Pixels are scaled to [0, 1], each patch has its mean removed (the DC
    component), and the whole set is scaled to unit average energy per pixel.

    Parameters
    ----------
    patch_size : int, default=8
        Side of the square patches in pixels (>= 2).
    n_patches : int, default=10000
    random_state : int, numpy Generator or None, default=0
    images : {"all", "china", "flower"}, default="all"
        Which photos to sample from.

    Returns
    -------
    patches : ndarray of shape (n_patches, patch_size**2)
        Flattened row by row.
    """
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:  # pragma: no cover - depends on the environment
        raise SparsecraftError("image_patches needs scikit-learn; pip install 'sparsecraft[data]'") from None
    size = check_int(patch_size, "patch_size", low=2)
    count = check_int(n_patches, "n_patches")
    photos = load_sample_images().images
    if images not in ("all", "china", "flower"):
        raise SparsecraftError(f"images must be 'all', 'china' or 'flower', got {images!r}")
    if images != "all":
        photos = [photos[0] if images == "china" else photos[1]]
    grey = [img.astype(np.float64).mean(axis=2) / 255.0 for img in photos]
    gen = rng(random_state)
    which = gen.integers(0, len(grey), size=count)
    out = np.empty((count, size * size))
    for i, g in enumerate(grey):
        sel = np.flatnonzero(which == i)
        r = gen.integers(0, g.shape[0] - size + 1, size=sel.size)
        c = gen.integers(0, g.shape[1] - size + 1, size=sel.size)
        win = np.lib.stride_tricks.sliding_window_view(g, (size, size))
        out[sel] = win[r, c].reshape(sel.size, -1)
    out -= out.mean(axis=1, keepdims=True)
    return out / np.sqrt(max(float((out**2).mean()), 1e-300))


class DictionaryLearning(ParamsMixin):
    """Online dictionary learning with a pluggable sparse encoder.

    Parameters
    ----------
    n_components : int
        Number of atoms.
    method : str, default="l1"
        A name in ``ENCODERS``: ``l1``, ``l0``, ``cel0`` (need ``lam``), ``omp``, ``iht`` (need ``k``).
    lam : float, optional
        Penalty weight of the penalized methods, in squared signal units (> 0).
    k : int, optional
        Atoms per signal of ``omp`` and ``iht``, at most n_features and n_components.
    n_epochs : int, default=2
        Passes over the data.
    batch_size : int, default=256
        Signals per mini-batch.
    code_iter : int, default=100
        Encoder iteration cap during learning (``transform`` runs 1000).
    forget : float, default=0.9
        Weight in (0, 1] of the past sufficient statistics at each mini-batch.
    random_state : int, numpy Generator or None, default=None
        Seeds the initial atoms (random signals) and the batch order.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Learned atoms, unit-norm rows.
    n_features_in_ : int
    """

    def __init__(self, n_components: int, method: str = "l1", lam: float | None = None, k: int | None = None,
                 n_epochs: int = 2, batch_size: int = 256, code_iter: int = 100, forget: float = 0.9,
                 random_state: Any = None) -> None:
        self.n_components, self.method, self.lam, self.k = n_components, method, lam, k
        self.n_epochs, self.batch_size, self.code_iter = n_epochs, batch_size, code_iter
        self.forget, self.random_state = forget, random_state

    def fit(self, X: Any, y: Any = None) -> "DictionaryLearning":
        """Learn the dictionary.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training signals, one per row.
        y : ignored

        Returns
        -------
        self
        """
        data = as_matrix(X, "X")
        ENCODERS.get(self.method)
        n_comp = check_int(self.n_components, "n_components")
        batch = check_int(self.batch_size, "batch_size")
        if not 0.0 < self.forget <= 1.0:
            raise SparsecraftError(f"forget must lie in (0, 1], got {self.forget!r}")
        gen = rng(self.random_state)
        D = data[gen.choice(data.shape[0], n_comp, replace=data.shape[0] < n_comp)].copy()
        D += 1e-3 * gen.standard_normal(D.shape)
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        A_stat = np.zeros((n_comp, n_comp))
        B_stat = np.zeros((data.shape[1], n_comp))
        for _ in range(check_int(self.n_epochs, "n_epochs")):
            order = gen.permutation(data.shape[0])
            for lo in range(0, data.shape[0], batch):
                xb = data[order[lo:lo + batch]]
                C = sparse_encode(xb, D, self.method, self.lam, self.k, self.code_iter)  # (b, n_comp)
                A_stat = self.forget * A_stat + C.T @ C / len(xb)
                B_stat = self.forget * B_stat + xb.T @ C / len(xb)
                D = _update_atoms(D, A_stat, B_stat, gen)
        self.components_ = D
        self.n_features_in_ = data.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Codes on the learned dictionary, with the learning encoder run up to 1000 iterations.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components)
        """
        check_fitted(self, "components_")
        return sparse_encode(X, self.components_, self.method, self.lam, self.k, max_iter=1000)

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Signals synthesized from codes.

        Parameters
        ----------
        codes : array-like of shape (n_samples, n_components)

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            ``codes @ components_``.
        """
        check_fitted(self, "components_")
        return as_matrix(codes, "codes") @ self.components_


def _update_atoms(D: np.ndarray, A: np.ndarray, B: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """One pass of block coordinate descent on the atoms (rows of D); unused atoms are re-seeded."""
    Dt = D.T.copy()  # (n_features, n_comp)
    for j in range(Dt.shape[1]):
        if A[j, j] < 1e-12:
            Dt[:, j] = gen.standard_normal(Dt.shape[0])
        else:
            Dt[:, j] += (B[:, j] - Dt @ A[:, j]) / A[j, j]
        Dt[:, j] /= max(np.linalg.norm(Dt[:, j]), 1.0 if A[j, j] >= 1e-12 else 1e-12)
    return Dt.T


def match_dictionaries(estimated: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Match atoms (rows) up to permutation and sign by the Hungarian algorithm on |cosine|.

    Parameters
    ----------
    estimated : array-like of shape (n_estimated, n_features)
    reference : array-like of shape (n_reference, n_features)
        At most as many atoms as ``estimated``.

    Returns
    -------
    perm : ndarray of shape (n_reference,), int64
        ``estimated[perm[i]]`` is matched to ``reference[i]``.
    cosine : ndarray of shape (n_reference,)
        Absolute cosine similarity of each matched pair, in [0, 1].
    """
    from scipy.optimize import linear_sum_assignment

    E, R = as_matrix(estimated, "estimated"), as_matrix(reference, "reference")
    if E.shape[1] != R.shape[1] or E.shape[0] < R.shape[0]:
        raise SparsecraftError(
            f"estimated {E.shape} cannot be matched to reference {R.shape}: "
            "same atom length and at least as many atoms needed"
        )
    En = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-300)
    Rn = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-300)
    sim = np.abs(Rn @ En.T)  # (n_ref, n_est)
    rows, cols = linear_sum_assignment(-sim)
    perm = np.empty(R.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, sim[np.arange(R.shape[0]), perm]
