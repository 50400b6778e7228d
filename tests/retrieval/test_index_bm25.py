import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.retrieval import BM25, InvertedIndex, inverse_document_frequency, mrr_at_k, recall_at_k, top_k


def test_bm25_matches_hand_computed_score():
    # vocabulary ids 0..4; three documents of lengths 3, 2, 4 (avgdl = 3)
    docs = [[0, 1, 1], [1, 2], [0, 3, 3, 3]]
    bm = BM25(docs, vocab_size=5, k1=1.5, b=0.75)
    n = 3
    idf0 = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))  # term 0 is in docs 0 and 2
    idf1 = math.log(1 + (n - 2 + 0.5) / (2 + 0.5))  # term 1 is in docs 0 and 1

    def part(idf, tf, dl):
        return idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / 3))

    # query "0 1": doc 0 has tf0=1, tf1=2, |d|=3; doc 1 has tf1=1, |d|=2; doc 2 has tf0=1, |d|=4
    expected = [part(idf0, 1, 3) + part(idf1, 2, 3), part(idf1, 1, 2), part(idf0, 1, 4)]
    np.testing.assert_allclose(bm.scores([0, 1]), expected, rtol=1e-6)
    ids, scores = bm.search([0, 1], k=2)
    assert ids.tolist() == [0, 1] and scores[0] == pytest.approx(expected[0], rel=1e-6)
    # a repeated query token counts twice; a term in no document scores nothing
    np.testing.assert_allclose(bm.scores([1, 1]), 2 * bm.scores([1]), rtol=1e-6)
    assert bm.scores([4]).tolist() == [0.0, 0.0, 0.0]


def test_idf_formula():
    np.testing.assert_allclose(inverse_document_frequency(np.array([0, 1, 10]), 10),
                               np.log1p((10 - np.array([0, 1, 10]) + 0.5) / (np.array([0, 1, 10]) + 0.5)), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), v=st.integers(1, 40), density=st.floats(0.0, 0.5), k=st.integers(1, 12),
       seed=st.integers(0, 10_000))
def test_index_top_k_equals_brute_force(n, v, density, k, seed):
    rng = np.random.default_rng(seed)
    mat = (rng.random((n, v)) < density) * rng.integers(1, 5, (n, v)).astype(np.float32) / 4
    index = InvertedIndex(mat)
    terms = rng.choice(v, size=min(v, 5), replace=False)
    weights = rng.random(len(terms)).astype(np.float32) + 0.1
    q = np.zeros(v, np.float32)
    q[terms] = weights
    brute = mat @ q
    np.testing.assert_allclose(index.scores(terms, weights), brute, rtol=1e-5, atol=1e-6)
    ids, scores = index.search(terms, weights, k)
    assert len(ids) == min(k, n)
    expected = np.sort(brute)[::-1][: min(k, n)]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(brute[ids], scores, rtol=1e-5, atol=1e-6)
    assert index.nnz == int((mat != 0).sum())
    assert index.nbytes == 8 * (v + 1) + 8 * index.nnz


def test_top_k_breaks_ties_by_id_and_metrics():
    ids, vals = top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2)
    assert ids.tolist() == [1, 2] and vals.tolist() == [3.0, 3.0]
    ranked = [[5, 2, 9], [1, 2, 3], [7, 8, 4]]
    assert mrr_at_k(ranked, [2, 1, 0], k=3) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert recall_at_k(ranked, [2, 1, 0], k=1) == pytest.approx(1 / 3)


def test_one_line_errors():
    index = InvertedIndex(np.eye(3, dtype=np.float32))
    for bad, msg in [(0, "k must be a positive integer"), (-2, "k must be a positive integer")]:
        with pytest.raises(SparsecraftError, match=msg):
            index.search([0], [1.0], k=bad)
    with pytest.raises(SparsecraftError, match=r"query term id 7 is outside the index vocabulary \[0, 3\)"):
        index.scores([7], [1.0])
    with pytest.raises(SparsecraftError, match="one weight per term"):
        index.scores([0, 1], [1.0])
    with pytest.raises(SparsecraftError, match="at least one document"):
        InvertedIndex(np.zeros((0, 4)))
    with pytest.raises(SparsecraftError, match="non-negative"):
        InvertedIndex(-np.eye(2))
    with pytest.raises(SparsecraftError, match="empty corpus"):
        BM25([], vocab_size=5)
    with pytest.raises(SparsecraftError, match=r"token id 9 is outside the vocabulary \[0, 5\)"):
        BM25([[1, 9]], vocab_size=5)
    bm = BM25([[1, 2]], vocab_size=5)
    with pytest.raises(SparsecraftError, match=r"token id -1 is outside"):
        bm.search([-1], k=1)
    with pytest.raises(SparsecraftError, match="k must be a positive integer"):
        bm.search([1], k=0)
    with pytest.raises(SparsecraftError, match=r"b must be in \[0, 1\]"):
        BM25([[1]], vocab_size=5, b=2.0)
    with pytest.raises(SparsecraftError, match="one ranking per query"):
        mrr_at_k([[1]], [1, 2])
    with pytest.raises(SparsecraftError) as info:
        index.search([0], [1.0], k=0)
    assert "\n" not in str(info.value)
