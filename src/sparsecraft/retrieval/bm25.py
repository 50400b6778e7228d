"""Okapi BM25 over token ids (Robertson et al.), served from the same :class:`InvertedIndex`.

The weight of term ``t`` in document ``d`` is

    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

with ``idf`` from :func:`inverse_document_frequency`, ``|d|`` the document's length in tokens and
``avgdl`` the mean length; a query scores a document by summing these weights over its tokens
(a token repeated in the query counts again), so the weights are precomputed into the index and a
query is a vector of token counts.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SparsecraftError
from .index import InvertedIndex, check_k, inverse_document_frequency


def term_counts(token_ids: Sequence[int], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids of a token sequence and how often each occurs: ``(terms, counts)``, ids sorted."""
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
        raise SparsecraftError(f"token id {bad} is outside the vocabulary [0, {vocab_size}); "
                               "tokenize with the tokenizer the index was built with")
    terms, counts = np.unique(ids, return_counts=True)
    return terms, counts.astype(np.float32)


class BM25:
    """Okapi BM25 retrieval over tokenized documents.

    Parameters
    ----------
    docs : Sequence[Sequence[int]]
        N tokenized documents (token ids in ``[0, vocab_size)``), N >= 1.
    vocab_size : int
        V, the tokenizer's vocabulary size.
    k1 : float, default=1.2
        Term-frequency saturation (>= 0).
    b : float, default=0.75
        Length normalisation in [0, 1].

    Attributes
    ----------
    index : InvertedIndex
        [N, V] BM25 term weights.
    idf : np.ndarray
        [V] float32 IDF of every term over ``docs``.
    doc_freq : np.ndarray
        [V] documents containing each term.
    """

    def __init__(self, docs: Sequence[Sequence[int]], vocab_size: int, k1: float = 1.2, b: float = 0.75) -> None:
        import scipy.sparse as sps

        if k1 < 0:
            raise SparsecraftError(f"k1 must be >= 0, got {k1}")
        if not 0.0 <= b <= 1.0:
            raise SparsecraftError(f"b must be in [0, 1], got {b}")
        if len(docs) == 0:
            raise SparsecraftError("BM25 needs at least one document, got an empty corpus")
        self.k1, self.b, self.vocab_size = float(k1), float(b), int(vocab_size)
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(docs), np.float64)
        for i, doc in enumerate(docs):
            terms, counts = term_counts(doc, vocab_size)
            rows.append(np.full(len(terms), i))
            cols.append(terms)
            tfs.append(counts)
            lengths[i] = counts.sum()
        if lengths.sum() == 0:
            raise SparsecraftError("BM25 needs at least one token in the corpus, every document is empty")
        row, col, tf = np.concatenate(rows), np.concatenate(cols), np.concatenate(tfs).astype(np.float64)
        self.doc_freq = np.bincount(col, minlength=vocab_size)
        self.idf = inverse_document_frequency(self.doc_freq, len(docs))
        norm = self.k1 * (1 - self.b + self.b * lengths / lengths.mean())
        weight = self.idf[col] * tf * (self.k1 + 1) / (tf + norm[row])
        self.index = InvertedIndex(sps.csr_matrix((weight, (row, col)), shape=(len(docs), vocab_size)))

    def scores(self, query: Sequence[int]) -> np.ndarray:
        """[N] BM25 scores of every document for a tokenized query."""
        terms, counts = term_counts(query, self.vocab_size)
        return self.index.scores(terms, counts)

    def search(self, query: Sequence[int], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` documents for a tokenized query: ``(ids, scores)``, best first."""
        check_k(k)
        terms, counts = term_counts(query, self.vocab_size)
        return self.index.search(terms, counts, k)
