"""Issue 20 item 6: OMP on linearly dependent or all-zero columns stops like scikit-learn."""
import warnings

import numpy as np
import pytest
from sklearn.linear_model import OrthogonalMatchingPursuit

from sparsecraft.coding import OMP


def _dependent(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 6))
    if kind == "duplicate":
        A[:, 3] = A[:, 1]
        A[:, 5] = A[:, 0]
    else:
        A[:, [2, 4]] = 0.0
    y = A[:, [0, 1]] @ np.array([1.5, -2.0])
    return A, y


def _fit(est, A, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(A, y)
    return est.coef_, [w for w in caught if "linear dependence" in str(w.message)]


@pytest.mark.parametrize("kind", ["duplicate", "zero"])
@pytest.mark.parametrize("k", [2, 4, 6])
def test_omp_on_dependent_columns_matches_sklearn(kind, k):
    A, y = _dependent(kind)
    ours, warned = _fit(OMP(n_nonzero_coefs=k, fit_intercept=False), A, y)
    ref, ref_warned = _fit(OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False), A, y)
    np.testing.assert_array_equal(ours != 0, ref != 0)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    assert bool(warned) == bool(ref_warned)


def test_omp_on_a_zero_signal_and_multitarget():
    A, y = _dependent("zero")
    Y = np.column_stack([y, np.zeros_like(y), A[:, 3]])
    coef, warned = _fit(OMP(n_nonzero_coefs=3, fit_intercept=False), A, Y)
    assert warned
    np.testing.assert_allclose(A @ coef.T, Y, atol=1e-10)
    assert np.count_nonzero(coef[1]) == 0 and np.count_nonzero(coef[2]) == 1
