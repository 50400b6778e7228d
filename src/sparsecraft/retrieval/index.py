"""An inverted index over sparse document vectors, exact top-k retrieval, IDF, and ranking metrics.

The index stores, for each vocabulary term, the sorted ids of the documents that contain it and the
term's weight in each (CSR by term: ``indptr`` [V + 1] int64, ``doc_ids`` [nnz] int32, ``weights``
[nnz] float32). A query is a sparse vector of (term, weight) pairs; a document's score is the dot
product ``sum_t q_t * w_dt``, accumulated over the query's posting lists only, so the work is the
total length of those lists, not the size of the corpus.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SparsecraftError


def check_k(k: int) -> int:
    """``k`` if it is a positive int, else a one-line error."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise SparsecraftError(f"k must be a positive integer, got {k!r}")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best entries of a score vector, best first, ties broken by the smaller id.

    Parameters
    ----------
    scores : np.ndarray
        [N] scores, one per document.
    k : int
        Results wanted (> 0); fewer come back when ``N < k``.

    Returns
    -------
    ids : np.ndarray
        [min(k, N)] int64 document ids.
    values : np.ndarray
        [min(k, N)] their scores, non-increasing.
    """
    k = min(check_k(k), len(scores))
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, scores.dtype)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    # entries tied with the k-th best may lie outside the partition: take them all, then cut
    cand = np.flatnonzero(scores >= scores[part].min())
    order = np.lexsort((cand, -scores[cand]))[:k]
    ids = cand[order].astype(np.int64)
    return ids, scores[ids]


class InvertedIndex:
    """Term -> (sorted doc ids, weights) posting lists built from a documents x terms matrix.

    Parameters
    ----------
    doc_terms : np.ndarray or scipy.sparse matrix
        [N, V] non-negative document weights (N documents, V vocabulary terms); zeros are not stored.

    Attributes
    ----------
    n_docs, n_terms : int
    indptr : np.ndarray
        [V + 1] int64: the postings of term ``t`` are ``indptr[t]:indptr[t + 1]``.
    doc_ids : np.ndarray
        [nnz] int32 document ids, sorted within each term.
    weights : np.ndarray
        [nnz] float32 weights.
    """

    def __init__(self, doc_terms: "np.ndarray | object") -> None:
        import scipy.sparse as sps

        mat = sps.csc_matrix(doc_terms, dtype=np.float32)
        if mat.ndim != 2 or mat.shape[0] == 0:
            raise SparsecraftError(f"the index needs at least one document, got a matrix of shape {mat.shape}")
        mat.eliminate_zeros()
        mat.sort_indices()
        if mat.nnz and float(mat.data.min()) < 0:
            raise SparsecraftError("document weights must be non-negative; apply relu/log1p before indexing")
        self.n_docs, self.n_terms = (int(s) for s in mat.shape)
        self.indptr = mat.indptr.astype(np.int64)
        self.doc_ids = mat.indices.astype(np.int32)
        self.weights = mat.data.astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of the three posting arrays (what the index costs in memory)."""
        return int(self.indptr.nbytes + self.doc_ids.nbytes + self.weights.nbytes)

    @property
    def nnz(self) -> int:
        """Stored (term, document) weights."""
        return int(len(self.doc_ids))

    def doc_lengths(self) -> np.ndarray:
        """[N] non-zero terms per document."""
        return np.bincount(self.doc_ids, minlength=self.n_docs)

    def scores(self, terms: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
        """[N] float32 dot products of every document with the query ``{terms[i]: weights[i]}``.

        Only the query terms' posting lists are read; repeated terms add up.
        """
        t = np.asarray(terms, dtype=np.int64).reshape(-1)
        w = np.asarray(weights, dtype=np.float32).reshape(-1)
        if len(t) != len(w):
            raise SparsecraftError(f"a query needs one weight per term, got {len(t)} terms and {len(w)} weights")
        if len(t) and (t.min() < 0 or t.max() >= self.n_terms):
            bad = int(t[(t < 0) | (t >= self.n_terms)][0])
            raise SparsecraftError(f"query term id {bad} is outside the index vocabulary [0, {self.n_terms})")
        if len(t) == 0:
            return np.zeros(self.n_docs, np.float32)
        starts, ends = self.indptr[t], self.indptr[t + 1]
        lengths = ends - starts
        # positions of all postings of the query terms, gathered without a Python loop over terms
        offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
        pos = np.arange(int(lengths.sum())) + offsets
        contrib = self.weights[pos] * np.repeat(w, lengths)
        return np.bincount(self.doc_ids[pos], weights=contrib, minlength=self.n_docs).astype(np.float32)

    def search(self, terms: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray,
               k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` documents for one sparse query: ``(ids, scores)``, best first (see :func:`top_k`)."""
        check_k(k)
        return top_k(self.scores(terms, weights), k)


def inverse_document_frequency(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """Okapi BM25 IDF, ``log(1 + (N - df + 0.5) / (df + 0.5))`` (always positive).

    Parameters
    ----------
    doc_freq : np.ndarray
        [V] number of documents containing each term.
    n_docs : int
        N, the corpus size.

    Returns
    -------
    np.ndarray
        [V] float32 IDF; a term in no document gets the largest value, ``log(1 + 2N + 1)``.
    """
    df = np.asarray(doc_freq, dtype=np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)


def mrr_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[int], k: int = 10) -> float:
    """Mean reciprocal rank of each query's one relevant document within its first ``k`` results (0 if absent)."""
    check_k(k)
    if len(ranked) != len(relevant) or not len(ranked):
        raise SparsecraftError(f"need one ranking per query and at least one query, got {len(ranked)} rankings "
                               f"and {len(relevant)} relevant ids")
    total = 0.0
    for ids, rel in zip(ranked, relevant):
        hits = np.flatnonzero(np.asarray(ids)[:k] == rel)
        total += 1.0 / (hits[0] + 1) if len(hits) else 0.0
    return total / len(ranked)


def recall_at_k(ranked: Sequence[Sequence[int]], relevant: Sequence[int], k: int = 10) -> float:
    """Fraction of queries whose one relevant document is among their first ``k`` results."""
    check_k(k)
    if len(ranked) != len(relevant) or not len(ranked):
        raise SparsecraftError(f"need one ranking per query and at least one query, got {len(ranked)} rankings "
                               f"and {len(relevant)} relevant ids")
    return float(np.mean([rel in np.asarray(ids)[:k] for ids, rel in zip(ranked, relevant)]))
