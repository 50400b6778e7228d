"""Spectral unmixing (l2,1 / l2,p, robust bands) and LDP sparse regression."""
import numpy as np
import pytest
from scipy.optimize import nnls

from sparsecraft.coding import LDPSparseRegression, SparseUnmixing, synthetic_mixture
from sparsecraft.coding.ldp import gaussian_sigma, ldp_randomize
from sparsecraft.coding.unmixing import _group_prox
from sparsecraft.errors import SparsecraftError


def sre_db(A, est):
    return 10 * np.log10((A**2).sum() / ((A - est) ** 2).sum())


def test_group_prox_is_the_minimizer():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((6, 5))
    th = rng.random(6)
    P = _group_prox(V, th)

    def f(A):
        return 0.5 * ((A - V) ** 2).sum() + (th * np.linalg.norm(A, axis=1)).sum()

    assert np.all(P >= 0)
    for _ in range(200):  # no feasible perturbation improves the objective
        Q = np.maximum(P + 0.05 * rng.standard_normal(P.shape), 0)
        assert f(P) <= f(Q) + 1e-12


@pytest.mark.parametrize("penalty", ["l21", "l2p"])
def test_unmixing_beats_nnls_and_finds_the_endmembers(penalty):
    lib, Y, A = synthetic_mixture(n_pixels=200, snr_db=30, random_state=1)
    est = SparseUnmixing(lib, lam=1.0, penalty=penalty, max_iter=1000).fit(Y)
    ref = np.array([nnls(lib.T, y)[0] for y in Y])
    assert sre_db(A, est.abundances_) > sre_db(A, ref) + 3
    true = np.flatnonzero(A.sum(axis=0))
    top = np.argsort(-np.linalg.norm(est.abundances_, axis=0))[: len(true)]
    assert set(top) == set(true)
    assert np.all(est.abundances_ >= 0)


@pytest.mark.parametrize("seed", [1, 2])
def test_robust_bands_survive_outlier_channels(seed):
    lib, Y, A = synthetic_mixture(n_pixels=200, n_outlier_bands=5, random_state=seed)
    plain = SparseUnmixing(lib, lam=1.0).fit(Y)
    robust = SparseUnmixing(lib, lam=1.0, robust=True).fit(Y)
    assert sre_db(A, robust.abundances_) > sre_db(A, plain.abundances_) + 5
    assert sre_db(A, plain.abundances_) < 1
    worst = np.argsort(np.abs(Y - A @ lib).mean(axis=0))[-5:]   # the corrupted bands
    assert set(np.argsort(robust.band_weights_)[:5]) == set(worst)


def test_unmixing_bad_input():
    lib, Y, _ = synthetic_mixture(n_pixels=10, random_state=0)
    with pytest.raises(SparsecraftError, match="Y has 99 bands"):
        SparseUnmixing(lib).fit(Y[:, :99])
    with pytest.raises(SparsecraftError, match="p must lie in"):
        SparseUnmixing(lib, penalty="l2p", p=1.5).fit(Y)


def test_randomizer_noise_has_the_mechanism_scale():
    gen = np.random.default_rng(0)
    X, y = np.zeros((20000, 4)), np.zeros(20000)
    xy, xx = ldp_randomize(X, y, 0.5, 1e-5, 1.0, 1.0, True, gen)
    assert xy.std() == pytest.approx(gaussian_sigma(2 * 2 * 1.0, 0.25, 5e-6), rel=0.02)
    assert xx.std() == pytest.approx(gaussian_sigma(2 * 4 * 1.0, 0.25, 5e-6), rel=0.02)
    np.testing.assert_array_equal(xx, np.swapaxes(xx, 1, 2))


def test_ldp_sparse_regression_recovers_support_and_improves_with_epsilon():
    rng = np.random.default_rng(0)
    d, n = 4, 1000000
    theta = np.zeros(d)
    theta[[1, 3]] = [1.0, -0.8]
    X = rng.standard_normal((n, d))
    y = X @ theta + 0.1 * rng.standard_normal(n)
    public = rng.standard_normal((2000, d))
    errs = []
    for eps in (0.2, 1.0):
        est = LDPSparseRegression(2, epsilon=eps, clip_x=2.5, clip_y=2.5, public_X=public, random_state=1).fit(X, y)
        errs.append(np.linalg.norm(est.coef_ - theta))
    assert set(np.flatnonzero(est.coef_)) == {1, 3}
    assert errs[1] < 0.3 and errs[1] < errs[0]
    assert np.linalg.norm(est.coef_ - theta) < np.linalg.norm(est.dense_coef_ - theta)


def test_ldp_bad_input():
    X = np.zeros((10, 3))
    with pytest.raises(SparsecraftError, match="epsilon=2.0 > 1"):
        LDPSparseRegression(1, epsilon=2.0).fit(X, np.zeros(10))
    with pytest.raises(SparsecraftError, match=r"k=4 must lie in \[1, 3\]"):
        LDPSparseRegression(4).fit(X, np.zeros(10))
    with pytest.raises(SparsecraftError, match="y has 9 entries"):
        LDPSparseRegression(1).fit(X, np.zeros(9))
