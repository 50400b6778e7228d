"""Fast WHT against the Hadamard matrix and sparse WHT recovery."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import hadamard

from sparsecraft.coding import fwht, sparse_wht


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 9), st.integers(1, 3), st.integers(0, 10**6))
def test_fwht_matches_hadamard_matrix_and_inverts(N, batch, seed):
    x = np.random.default_rng(seed).standard_normal((batch, 1 << N))
    X = fwht(x)
    np.testing.assert_allclose(X, x @ hadamard(1 << N).T, atol=1e-9)
    np.testing.assert_allclose(fwht(X) / (1 << N), x, atol=1e-9)


def random_spectrum(N, K, rng):
    X = np.zeros(1 << N)
    X[rng.choice(1 << N, K, replace=False)] = rng.choice([-1, 1], K) * (1 + rng.random(K))
    return X


@pytest.mark.parametrize("N,K", [(8, 1), (10, 6), (14, 25), (18, 40)])
def test_sparse_wht_exact_for_noiseless_k_sparse(N, K):
    rng = np.random.default_rng(N)
    for trial in range(3):
        X = random_spectrum(N, K, rng)
        x = fwht(X) / (1 << N)
        res = sparse_wht(x, K, random_state=trial)
        np.testing.assert_allclose(res.dense(), X, atol=1e-9)
        assert res.indices.size == K


def test_sparse_wht_reads_only_o_k_n_samples_through_a_callable():
    N, K = 20, 30
    rng = np.random.default_rng(0)
    X = random_spectrum(N, K, rng)
    x = fwht(X) / (1 << N)
    seen = []

    def query(idx):
        seen.append(idx.size)
        return x[idx]

    res = sparse_wht(query, K, n=1 << N, random_state=1)
    np.testing.assert_allclose(res.dense(), X, atol=1e-9)
    assert sum(seen) == res.n_samples <= 3 * 32 * 4 * (N + 1)  # C * B * P * (N + 1), B = 2^ceil(log2 K)
    assert res.n_samples < (1 << N) / 100


def test_sparse_wht_support_robust_to_noise():
    N, K = 16, 20
    rng = np.random.default_rng(5)
    hits = 0
    for trial in range(5):
        X = random_spectrum(N, K, rng)
        clean = fwht(X) / (1 << N)
        sd = np.sqrt(np.mean(clean**2) / 10)  # 10 dB SNR per sample
        res = sparse_wht(clean + sd * rng.standard_normal(clean.size), K, noise_std=sd, random_state=trial)
        hits += set(res.indices.tolist()) == set(np.flatnonzero(X).tolist())
        assert np.abs(res.dense() - X).max() < 0.3
    assert hits == 5
