"""ISTA/FISTA Lasso, IHT, OMP and the penalties against scikit-learn and brute force."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso as SkLasso
from sklearn.linear_model import OrthogonalMatchingPursuit

from sparsecraft.coding import IHT, OMP, Lasso, sparse_encode
from sparsecraft.coding.penalties import PENALTIES, keep_largest
from sparsecraft.coding.solvers import objective, proximal_gradient


def sparse_problem(n, d, k, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) / np.sqrt(n)
    x = np.zeros(d)
    x[rng.choice(d, k, replace=False)] = rng.choice([-1, 1], k) * (1 + rng.random(k))
    return A, x, A @ x + noise * rng.standard_normal(n)


def sk_objective(X, y, coef, intercept, alpha):
    return ((y - X @ coef - intercept) ** 2).sum() / (2 * len(y)) + alpha * np.abs(coef).sum()


@pytest.mark.parametrize("solver", ["ista", "fista"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_lasso_matches_sklearn_objective(solver, fit_intercept):
    A, _, y = sparse_problem(80, 120, 8, seed=3, noise=0.05)
    y = y + 0.7
    ours = Lasso(alpha=0.01, solver=solver, fit_intercept=fit_intercept).fit(A, y)
    ref = SkLasso(alpha=0.01, fit_intercept=fit_intercept, tol=1e-12, max_iter=200000).fit(A, y)
    f_ref = sk_objective(A, y, ref.coef_, ref.intercept_, 0.01)
    assert abs(ours.objective(A, y) - f_ref) <= 1e-6 * f_ref
    assert np.array_equal(np.abs(ours.coef_) > 1e-6, np.abs(ref.coef_) > 1e-6)
    np.testing.assert_allclose(ours.predict(A), ref.predict(A), atol=1e-5)


def test_lasso_multitarget_matches_per_target():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 30))
    Y = rng.standard_normal((50, 3))
    multi = Lasso(alpha=0.05).fit(A, Y)
    assert multi.coef_.shape == (3, 30) and multi.intercept_.shape == (3,)
    for j in range(3):
        single = SkLasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(A, Y[:, j])
        np.testing.assert_allclose(multi.coef_[j], single.coef_, atol=1e-6)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_omp_same_support_and_coefficients_as_sklearn(fit_intercept):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((60, 100))
    Y = rng.standard_normal((60, 5))
    ours = OMP(n_nonzero_coefs=9, fit_intercept=fit_intercept).fit(A, Y)
    ref = OrthogonalMatchingPursuit(n_nonzero_coefs=9, fit_intercept=fit_intercept).fit(A, Y)
    assert np.array_equal(ours.coef_ != 0, ref.coef_ != 0)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-10)


def test_omp_tol_stops_each_signal_on_its_own():
    A, x, y = sparse_problem(40, 80, 4, seed=5)
    A2, x2, y2 = sparse_problem(40, 80, 7, seed=6)
    Y = np.column_stack([y, A @ x2])
    C = sparse_encode(Y.T, A.T, method="omp", k=20)
    ref = OrthogonalMatchingPursuit(tol=1e-10, fit_intercept=False).fit(A, Y)
    ours = OMP(tol=1e-10, fit_intercept=False).fit(A, Y)
    assert np.array_equal(ours.coef_ != 0, ref.coef_ != 0)
    assert (ours.coef_[0] != 0).sum() == 4  # stopped early, not at the default 10% of features
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-8)
    np.testing.assert_allclose(C[0], x, atol=1e-10)


@pytest.mark.parametrize("method", ["omp", "iht", "l1"])
def test_exact_noiseless_recovery_inside_phase_transition(method):
    # n/d = 0.5, k/n ~ 0.05 (n > 2 k ln d): far inside every method's success region
    for seed in range(5):
        A, x, y = sparse_problem(128, 256, 6, seed=seed)
        if method == "omp":
            est = OMP(n_nonzero_coefs=6, fit_intercept=False).fit(A, y).coef_
        elif method == "iht":
            est = IHT(n_nonzero_coefs=6, fit_intercept=False).fit(A, y).coef_
        else:
            lasso = Lasso(alpha=1e-6, fit_intercept=False, max_iter=50000).fit(A, y)
            est = lasso.coef_
        assert np.array_equal(np.abs(est) > 1e-3, x != 0)
        np.testing.assert_allclose(est, x, atol=1e-3 if method == "l1" else 1e-8)


def test_iht_without_debias_converges_to_exact_solution():
    A, x, y = sparse_problem(100, 256, 12, seed=11)
    est = IHT(n_nonzero_coefs=12, fit_intercept=False, debias=False, tol=1e-24, max_iter=2000).fit(A, y).coef_
    np.testing.assert_allclose(est, x, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.floats(-5, 5), st.floats(0.01, 2.0), st.floats(0.1, 0.95), st.sampled_from(["l1", "l0", "cel0"]))
def test_prox_is_the_scalar_minimizer(v, lam, step_frac, name):
    """prox(v) minimizes 1/(2 step) (x - v)^2 + lam R(x) on a fine grid (||a|| = 1, step < 1)."""
    pen = PENALTIES.get(name)
    norms = np.ones(1)
    step = step_frac
    p = pen.prox(np.array([[v]]), lam, step, norms)[0, 0]
    grid = np.concatenate([np.linspace(-7, 7, 28001), [p, 0.0]])
    vals = (grid - v) ** 2 / (2 * step) + lam * pen.value(grid[None, :], lam, norms)
    f_p = (p - v) ** 2 / (2 * step) + lam * pen.value(np.array([[p]]), lam, norms)[0]
    assert f_p <= vals.min() + 1e-9


def test_cel0_matches_l0_objective_at_its_minimizers_and_lowers_l1_error():
    rng = np.random.default_rng(4)
    D = rng.standard_normal((30, 60))
    D /= np.linalg.norm(D, axis=0)
    X = np.zeros((60, 20))
    for j in range(20):
        X[rng.choice(60, 3, replace=False), j] = rng.standard_normal(3) * 2
    Y = D @ X + 0.01 * rng.standard_normal((30, 20))
    lam = 0.02
    C_cel0, _ = proximal_gradient(D, Y, lam, "cel0", max_iter=3000, tol=1e-10)
    C_l0, _ = proximal_gradient(D, Y, lam, "l0", max_iter=3000, tol=1e-10)
    C_l1, _ = proximal_gradient(D, Y, lam, "l1", max_iter=3000, tol=1e-10)
    # CEL0 <= l0 objective everywhere; at a CEL0 critical point with |c_i| >= sqrt(2 lam)/||d_i|| they coincide
    f_cel0_l0 = objective(D, Y, C_cel0, lam, "l0")
    assert np.mean(f_cel0_l0 <= objective(D, Y, C_l0, lam, "l0") + 1e-9) >= 0.8

    def err(C):
        return np.linalg.norm(D @ C - Y) / np.linalg.norm(Y)

    assert err(C_cel0) < err(C_l1)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 9), st.integers(1, 7), st.integers(0, 10**6))
def test_keep_largest_keeps_exactly_k(d, t, seed):
    v = np.random.default_rng(seed).standard_normal((d, t))
    k = max(1, d // 2)
    out = keep_largest(v, k)
    assert np.all((out != 0).sum(axis=0) == k)
    kept_min = np.where(out != 0, np.abs(v), np.inf).min(axis=0)
    dropped_max = np.where(out == 0, np.abs(v), -np.inf).max(axis=0)
    assert np.all(kept_min >= dropped_max)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 17), st.integers(2, 23), st.integers(1, 3), st.integers(0, 10**6))
def test_omp_matches_sklearn_on_odd_shapes(n, d, t, seed):
    rng = np.random.default_rng(seed)
    A, Y = rng.standard_normal((n, d)), rng.standard_normal((n, t))
    k = max(1, min(n, d) // 2)
    ours = OMP(n_nonzero_coefs=k, fit_intercept=False).fit(A, Y).coef_
    ref = OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False).fit(A, Y).coef_
    np.testing.assert_allclose(ours, ref.reshape(ours.shape), atol=1e-8)  # sklearn squeezes t=1


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 17), st.integers(2, 23), st.integers(0, 10**6))
def test_fista_matches_sklearn_objective_on_odd_shapes(n, d, seed):
    rng = np.random.default_rng(seed)
    A, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    alpha = 0.1 * np.abs(A.T @ (y - y.mean())).max() / n
    ours = Lasso(alpha=alpha, tol=1e-12).fit(A, y)
    ref = SkLasso(alpha=alpha, tol=1e-12, max_iter=100000).fit(A, y)
    f_ref = sk_objective(A, y, ref.coef_, ref.intercept_, alpha)
    assert ours.objective(A, y) <= f_ref * (1 + 1e-6)
