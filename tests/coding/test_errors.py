"""Bad input gives a one-line SparsecraftError naming the argument."""
import numpy as np
import pytest

from sparsecraft.coding import IHT, OMP, SBL, KroneckerSBL, Lasso, SparseEncoder, fwht, sparse_encode, sparse_wht
from sparsecraft.errors import SparsecraftError

X = np.random.default_rng(0).standard_normal((20, 30))
y = X[:, 0].copy()


def raises(match, fn, *args, **kwargs):
    with pytest.raises(SparsecraftError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("est", [Lasso(0.1), IHT(3), OMP(3), SBL()])
def test_shape_mismatch_and_non_finite(est):
    raises(r"y has 19 .*rows|y has 19 entries", est.fit, X, y[:19])
    bad = X.copy()
    bad[3, 4] = np.nan
    raises("X contains NaN or inf", est.fit, bad, y)
    bad_y = y.copy()
    bad_y[0] = np.inf
    raises("y contains NaN or inf", est.fit, X, bad_y)
    raises("X must be 2-D", est.fit, X[0], y)


def test_k_larger_than_dimension():
    raises(r"n_nonzero_coefs=31 must lie in \[1, 30\]", IHT(31).fit, X, y)
    raises(r"n_nonzero_coefs=31 must lie in \[1, 30\]", OMP(31).fit, X, y)
    raises("n_nonzero_coefs=25 exceeds n_samples=20", OMP(25).fit, X, y)
    raises(r"k=0 must lie in \[1, 20\]", sparse_encode, X, X, "omp", None, 0)
    raises("k=40 exceeds the signal length 32", sparse_wht, np.zeros(32), 40)


def test_wht_length_must_be_power_of_two():
    raises("length of x must be a power of two", fwht, np.zeros(12))
    raises(r"len\(signal\) must be a power of two", sparse_wht, np.zeros(48), 2)
    raises("n must be a power of two", sparse_wht, lambda idx: np.zeros(idx.size), 2, n=100)
    raises("n is required", sparse_wht, lambda idx: np.zeros(idx.size), 2)


def test_bad_names_and_parameters():
    raises("unknown sparse coding method 'l2'", SparseEncoder(X, method="l2").fit)
    raises("unknown sparse coding method 'l2'", SparseEncoder(X, method="l2").transform, X)
    raises("solver must be 'ista' or 'fista'", Lasso(0.1, solver="cd").fit, X, y)
    raises("alpha must be a finite number > 0", Lasso(-1.0).fit, X, y)
    raises("needs lam", sparse_encode, X, X, "l1")
    raises("X has 30 features but dictionary atoms have 20", sparse_encode, X, X[:, :20], "l1", 0.1)
    raises("y has 5 entries but A kron B has 12 rows", KroneckerSBL().fit, np.eye(3), np.eye(4), np.zeros(5))
    raises("not fitted", Lasso().predict, X)
