"""Sparsey: single-trial storage of inputs as sparse distributed codes, retrieval by best match.

Rinkus, "Sparsey: event recognition via deep hierarchical sparse distributed codes", Frontiers in
Computational Neuroscience 2014, and "Superposed episodic and semantic memory via sparse
distributed representation" (2017). One level (a "mac") of ``Q`` competitive modules (CMs) of
``K`` binary cells each; a code is one winning cell per CM. Inputs are binary (here a bucket code
of each feature, :class:`BucketEncoder`), and the weights from input bits to cells are binary.

Code selection algorithm (CSA), for an input with active bits ``A``:

1. ``V_j = |{i in A : w_ij = 1}| / |A|``, the fraction of the input's active bits already wired to
   cell ``j``;
2. ``G = mean over CMs of max_j V_j``, the input's familiarity, in [0, 1];
3. ``eta = 1 + chi * max(0, (G - G_min) / (1 - G_min))`` (``chi``: ``max_gain``);
4. in every CM, ``psi_j = (eta - 1) * sigmoid(slope * (V_j - center)) + 1`` and the winner is
   drawn with probability ``psi_j / sum_k psi_k``;
5. storage (single trial, no iterations): ``w_ij = 1`` for every active bit ``i`` and winner ``j``;
   a cell wired to more than ``max_load`` of the input bits no longer wins new items (our per-cell
   stand-in for Sparsey's critical period, see :class:`SparseyMemory`).

A novel input (``G`` low) gets a near-uniformly random code, so unrelated items get codes that
barely overlap; a familiar one (``G`` near 1) reinstates the cells with the highest ``V``, so an
input close to stored ones gets a code overlapping theirs in proportion to its familiarity. That
similarity-to-overlap mapping is what gives class (semantic) structure for free.

Retrieval is the same computation with the winner of every CM being its highest-``V`` cell: its
cost is ``O(|A| Q K)`` per query, whatever the number of stored items. Class labels, when given,
are associated with the winning cells in the same single trial (a count per cell and class);
:meth:`SparseyMemory.predict` sums those counts over a query's retrieved code.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..coding._params import ParamsMixin
from ..coding._validation import as_matrix, check_fitted, check_int, check_positive, rng
from ..errors import SparsecraftError

_CHUNK = 256  # queries retrieved at once (bounds the (chunk, |A|, Q K) gather)


class BucketEncoder(ParamsMixin):
    """Real features to a binary code with exactly ``width`` active bits per (non-constant) feature.

    Every feature's range is split at its training quantiles into ``levels`` buckets; a value turns
    on ``width`` consecutive buckets around its own (shifted inward at the ends), so neighbouring
    values share bits. The bit count depends only on the feature count, not on the data.

    Parameters
    ----------
    levels : int, default=8
        Buckets per feature, >= 2.
    width : int, default=2
        Active buckets per feature, in [1, levels].

    Attributes
    ----------
    edges_ : np.ndarray of shape (n_features, levels - 1)
        Interior bucket boundaries.
    n_features_in_ : int
    n_bits_ : int
        ``n_features * levels``.
    n_active_ : int
        ``n_features * width``, the active bits of every encoded input.
    """

    def __init__(self, levels: int = 8, width: int = 2) -> None:
        self.levels = levels
        self.width = width

    def fit(self, X: Any) -> "BucketEncoder":
        """Learn the bucket boundaries.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self
        """
        levels = check_int(self.levels, "levels", low=2)
        width = check_int(self.width, "width")
        if width > levels:
            raise SparsecraftError(f"width={width} must not exceed levels={levels}")
        X = as_matrix(X, "X")
        self.n_features_in_ = X.shape[1]
        qs = np.linspace(0, 1, levels + 1)[1:-1]
        self.edges_ = np.quantile(X, qs, axis=0).T
        self.n_bits_ = X.shape[1] * levels
        self.n_active_ = X.shape[1] * width
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Indices of the active bits of each input.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        np.ndarray of shape (n_samples, n_active_), int64
            Sorted bit indices in ``[0, n_bits_)``.
        """
        check_fitted(self, "edges_")
        X = as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise SparsecraftError(f"X has {X.shape[1]} features but the encoder was fitted on "
                                   f"{self.n_features_in_}; pass inputs of the same kind")
        bucket = np.stack([np.searchsorted(self.edges_[f], X[:, f], side="right")
                           for f in range(X.shape[1])], axis=1)
        start = np.clip(bucket - (self.width - 1) // 2, 0, self.levels - self.width)
        base = np.arange(X.shape[1]) * self.levels
        bits = (base + start)[:, :, None] + np.arange(self.width)
        return bits.reshape(len(X), -1).astype(np.int64)


class SparseyMemory(ParamsMixin):
    """A Sparsey mac: every input stored in one trial as one winner per competitive module.

    Parameters
    ----------
    n_modules : int, default=24
        Q, competitive modules (the code has Q active cells).
    module_size : int, default=512
        K, cells per module (>= 2). Capacity grows with K: see ``max_load``.
    levels, width : int, default=16, 1
        Of the :class:`BucketEncoder` fitted on the first data stored.
    familiarity_floor : float, default=0.3
        ``G_min`` in [0, 1): below it codes are chosen uniformly at random.
    max_gain : float, default=500
        ``chi`` (> 0): how deterministic the choice of the best-matching cells is at ``G = 1``.
    slope, center : float, default=15, 0.8
        Of the sigmoid mapping ``V`` to a cell's relative win probability.
    max_load : float, default=0.1
        A cell whose afferent weights are set for this fraction of all input bits stops winning new
        items (it still answers retrieval): a per-cell form of Sparsey's critical period, without
        which cells shared by many items become wired to nearly every bit, match every input
        (``G`` near 1 for everything) and pull all new codes onto themselves. In (0, 1]; once every
        cell of a module is frozen the module chooses among all its cells again (the memory is full).
    random_state : int, numpy Generator or None, default=0

    Attributes
    ----------
    encoder_ : BucketEncoder
    weights_ : np.ndarray of shape (n_bits, Q * K), bool
        Binary input-to-cell weights (cell ``q * K + k`` is cell ``k`` of module ``q``).
    label_counts_ : np.ndarray of shape (Q * K, n_classes), int64
        How often each cell won for each class (only if labels were given).
    classes_ : np.ndarray of shape (n_classes,)
    n_stored_ : int
        Items stored so far.
    """

    def __init__(self, n_modules: int = 24, module_size: int = 512, levels: int = 16, width: int = 1,
                 familiarity_floor: float = 0.3, max_gain: float = 500.0, slope: float = 15.0,
                 center: float = 0.8, max_load: float = 0.1, random_state: Any = 0) -> None:
        self.n_modules = n_modules
        self.module_size = module_size
        self.levels = levels
        self.width = width
        self.familiarity_floor = familiarity_floor
        self.max_gain = max_gain
        self.slope = slope
        self.center = center
        self.max_load = max_load
        self.random_state = random_state

    # ------------------------------------------------------------------ storage
    def fit(self, X: Any, y: Any = None) -> "SparseyMemory":
        """Forget everything, fit the encoder on ``X`` and store every row of ``X`` once, in order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Class labels to associate with the codes (needed by :meth:`predict`).

        Returns
        -------
        self
        """
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """:meth:`fit`, returning the code assigned to each row while it was stored.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional

        Returns
        -------
        np.ndarray of shape (n_samples, Q), int64
            As :meth:`store` returns; :meth:`transform` later retrieves the same codes unless
            later items overwrote them (crosstalk once the memory saturates).
        """
        self._check_params()
        X = as_matrix(X, "X")
        self.encoder_ = BucketEncoder(self.levels, self.width).fit(X)
        q, k = self.n_modules, self.module_size
        self.weights_ = np.zeros((self.encoder_.n_bits_, q * k), dtype=bool)
        self.n_stored_ = 0
        self._rng = rng(self.random_state)
        self._frozen = np.zeros((q, k), dtype=bool)
        self._max_wired = self.max_load * self.encoder_.n_bits_
        for attr in ("classes_", "label_counts_"):
            self.__dict__.pop(attr, None)
        if y is not None:
            self.classes_ = np.unique(_labels(y, X.shape[0]))
            self.label_counts_ = np.zeros((q * k, self.classes_.size), dtype=np.int64)
        return self.store(X, y)

    def partial_fit(self, X: Any, y: Any = None) -> "SparseyMemory":
        """Store more inputs in the fitted memory (a first call fits, as :meth:`fit`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        if not hasattr(self, "weights_"):
            return self.fit(X, y)
        self.store(X, y)
        return self

    def store(self, X: Any, y: Any = None) -> np.ndarray:
        """Store each row of ``X`` in one trial (the CSA with its familiarity-contingent noise).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Labels among those given to :meth:`fit` (required iff labels were given there).

        Returns
        -------
        np.ndarray of shape (n_samples, Q), int64
            The code assigned to each row: the winning cell (0..K-1) of every module.
        """
        check_fitted(self, "weights_")
        bits = self.encoder_.transform(X)
        labels = self._label_index(y, len(bits))
        q, k = self.n_modules, self.module_size
        codes = np.empty((len(bits), q), dtype=np.int64)
        offsets = np.arange(q) * k
        for n, active in enumerate(bits):
            v = self.weights_[active].sum(axis=0).reshape(q, k) / active.size
            g = v.max(axis=1).mean()
            eta = 1.0 + self.max_gain * max(0.0, (g - self.familiarity_floor) / (1.0 - self.familiarity_floor))
            psi = (eta - 1.0) / (1.0 + np.exp(-self.slope * (v - self.center))) + 1.0
            psi = np.where(self._frozen, 0.0, psi)
            psi[psi.sum(axis=1) == 0] = 1.0  # a module whose cells are all frozen chooses among all
            cdf = np.cumsum(psi / psi.sum(axis=1, keepdims=True), axis=1)
            draw = self._rng.random((q, 1))
            codes[n] = np.minimum((cdf < draw).sum(axis=1), k - 1)
            cells = offsets + codes[n]
            self.weights_[np.ix_(active, cells)] = True
            self._frozen.reshape(-1)[cells] = self.weights_[:, cells].sum(axis=0) >= self._max_wired
            if labels is not None:
                self.label_counts_[cells, labels[n]] += 1
        self.n_stored_ += len(bits)
        return codes

    # ---------------------------------------------------------------- retrieval
    def _match(self, X: Any) -> np.ndarray:
        """``V`` of every cell for every row, shape (n_samples, Q, K)."""
        check_fitted(self, "weights_")
        bits = self.encoder_.transform(X)
        cells = self.n_modules * self.module_size
        out = np.empty((len(bits), self.n_modules, self.module_size))
        wires = self.weights_.view(np.uint8)
        for s in range(0, len(bits), _CHUNK):
            chunk = bits[s:s + _CHUNK]
            u = np.zeros((len(chunk), cells), dtype=np.int32)
            for j in range(chunk.shape[1]):  # one row of weights per active bit: O(|A| Q K) per query
                u += wires[chunk[:, j]]
            out[s:s + _CHUNK] = (u / chunk.shape[1]).reshape(len(chunk), self.n_modules, self.module_size)
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Retrieve the best-matching code of each row (the highest-``V`` cell of every module).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        np.ndarray of shape (n_samples, Q), int64
            Winning cell of every module; compare with the codes :meth:`store` returned.
        """
        return self._match(X).argmax(axis=2)

    def familiarity(self, X: Any) -> np.ndarray:
        """``G`` of each row: the mean over modules of the best cell's match, in [0, 1].

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        np.ndarray of shape (n_samples,)
            1 for a stored input (its own code's cells see all its bits), near 0 for a novel one.
        """
        return self._match(X).max(axis=2).mean(axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Class of each row from its retrieved code: the label counts summed over its Q cells.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        np.ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_fitted(self, "label_counts_")
        cells = self.transform(X) + np.arange(self.n_modules) * self.module_size
        votes = self.label_counts_[cells].sum(axis=1)
        return self.classes_[votes.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy of :meth:`predict` on ``(X, y)``."""
        predicted = self.predict(X)
        return float(np.mean(predicted == _labels(y, len(predicted))))

    @property
    def nbytes_(self) -> int:
        """Bytes the memory holds in RAM (bool weights, one byte each, and label counts); constant in
        the number of stored items."""
        check_fitted(self, "weights_")
        counts = self.label_counts_.nbytes if hasattr(self, "label_counts_") else 0
        return self.weights_.nbytes + counts

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        check_int(self.n_modules, "n_modules")
        check_int(self.module_size, "module_size", low=2)
        if not 0.0 <= float(self.familiarity_floor) < 1.0:
            raise SparsecraftError(f"familiarity_floor must be in [0, 1), got {self.familiarity_floor!r}")
        check_positive(self.max_gain, "max_gain")
        check_positive(self.slope, "slope")
        check_positive(self.center, "center", allow_zero=True)
        if not 0.0 < float(self.max_load) <= 1.0:
            raise SparsecraftError(f"max_load must be in (0, 1], got {self.max_load!r}")

    def _label_index(self, y: Any, n: int) -> np.ndarray | None:
        has_labels = hasattr(self, "label_counts_")
        if y is None:
            if has_labels:
                raise SparsecraftError("this memory was fitted with labels; pass y to store more items")
            return None
        if not has_labels:
            raise SparsecraftError("this memory was fitted without labels; refit with y to store labelled items")
        y = _labels(y, n)
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, self.classes_.size - 1)
        if not np.all(self.classes_[index] == y):
            raise SparsecraftError(f"y has labels not seen by fit(); known labels: {self.classes_.tolist()}")
        return index


def _labels(y: Any, n: int) -> np.ndarray:
    """``y`` as a 1-D array of ``n`` labels (any sortable dtype), or a one-line error."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise SparsecraftError(f"y must be 1-D (one label per row), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise SparsecraftError(f"y has {arr.shape[0]} entries but X has {n} rows; pass matching shapes")
    return arr
