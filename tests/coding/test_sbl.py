"""Tipping SBL and the Kronecker-structured SBL."""
import numpy as np
import pytest

from sparsecraft.coding import SBL, KroneckerSBL
from sparsecraft.coding.sbl import sbl_posterior


def kron_problem(seed, m1=8, n1=12, m2=9, n2=14, k1=2, k2=3):
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))
    x1, x2 = np.zeros(n1), np.zeros(n2)
    x1[rng.choice(n1, k1, replace=False)] = rng.choice([-1, 1], k1) * (1 + rng.random(k1))
    x2[rng.choice(n2, k2, replace=False)] = rng.choice([-1, 1], k2) * (1 + rng.random(k2))
    return A, B, np.kron(x1, x2)


def test_posterior_matches_dense_formula():
    rng = np.random.default_rng(0)
    Phi, y, gamma = rng.standard_normal((15, 25)), rng.standard_normal(15), rng.random(25)
    mu, var, resid = sbl_posterior(Phi, y, gamma, 0.3)
    Sigma = np.linalg.inv(Phi.T @ Phi / 0.3 + np.diag(1 / gamma))
    np.testing.assert_allclose(mu, Sigma @ Phi.T @ y / 0.3, atol=1e-10)
    np.testing.assert_allclose(var, np.diag(Sigma), atol=1e-10)
    assert resid == pytest.approx(((y - Phi @ mu) ** 2).sum())


@pytest.mark.parametrize("update", ["em", "mackay"])
def test_sbl_exact_noiseless_recovery(update):
    rng = np.random.default_rng(2)
    for _ in range(3):
        Phi = rng.standard_normal((40, 100))
        x = np.zeros(100)
        x[rng.choice(100, 5, replace=False)] = rng.choice([-1, 1], 5) * (1 + rng.random(5))
        est = SBL(noise_var=1e-8, update=update).fit(Phi, Phi @ x)
        np.testing.assert_allclose(est.coef_, x, atol=1e-6)
        assert np.count_nonzero(est.gamma_ > 1e-4 * est.gamma_.max()) == 5


def test_kronecker_factored_posterior_equals_plain_sbl_posterior():
    rng = np.random.default_rng(3)
    A, B, x = kron_problem(3)
    y = np.kron(A, B) @ x
    g1, g2 = rng.random(A.shape[1]), rng.random(B.shape[1])
    M, V, r = KroneckerSBL().posterior(A, B, y.reshape(A.shape[0], B.shape[0]), g1, g2, 0.05)
    mu, var, r2 = sbl_posterior(np.kron(A, B), y, np.kron(g1, g2), 0.05)
    np.testing.assert_allclose(M.ravel(), mu, atol=1e-10)
    np.testing.assert_allclose(V.ravel(), var, atol=1e-10)
    assert r == pytest.approx(r2, rel=1e-9)


@pytest.mark.parametrize("update", ["am", "svd"])
def test_kronecker_sbl_equals_plain_sbl_on_small_problems(update):
    for seed in range(3):
        A, B, x = kron_problem(seed)
        Phi = np.kron(A, B)
        y = Phi @ x
        plain = SBL(noise_var=1e-8, update="mackay").fit(Phi, y)
        kron = KroneckerSBL(noise_var=1e-8, update=update).fit(A, B, y)
        # the factored algebra follows the dense reference iterate by iterate
        short = KroneckerSBL(noise_var=1e-8, update=update, max_iter=20).fit(A, B, y)
        dense = KroneckerSBL(noise_var=1e-8, update=update, algebra="dense", max_iter=20).fit(A, B, y)
        np.testing.assert_allclose(kron.coef_, plain.coef_, atol=1e-6)
        np.testing.assert_allclose(kron.coef_, x, atol=1e-6)
        np.testing.assert_allclose(short.coef_, dense.coef_, atol=1e-9)
        np.testing.assert_allclose(kron.predict(A, B), y, atol=1e-6)


def test_kronecker_sbl_learns_noise_and_beats_plain_sbl_when_noisy():
    rng = np.random.default_rng(7)
    nmse_k, nmse_p = [], []
    for seed in range(3):
        A, B, x = kron_problem(seed + 10)
        Phi = np.kron(A, B)
        y = Phi @ x + 0.05 * rng.standard_normal(Phi.shape[0])
        kron = KroneckerSBL(update="svd").fit(A, B, y)
        plain = SBL(update="mackay", max_iter=300).fit(Phi, y)
        nmse_k.append(np.sum((kron.coef_ - x) ** 2) / np.sum(x**2))
        nmse_p.append(np.sum((plain.coef_ - x) ** 2) / np.sum(x**2))
        assert 1e-4 < kron.noise_var_ < 1e-2  # true value 2.5e-3
    assert np.mean(nmse_k) < 0.02
    assert np.mean(nmse_k) < np.mean(nmse_p)
