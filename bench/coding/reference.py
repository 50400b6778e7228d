"""Each solver against its scikit-learn reference on the same problem: objective, error, time ratio."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import ARDRegression, OrthogonalMatchingPursuit, orthogonal_mp
from sklearn.linear_model import Lasso as SkLasso

from bench.common import markdown_table
from sparsecraft.coding import IHT, OMP, SBL, KroneckerSBL, Lasso

from ._common import Section, nmse, sparse_problem, timed


def _lasso_rows(quick: bool, rng: np.random.Generator) -> list[dict]:
    rows = []
    for n, d in [(200, 500)] if quick else [(200, 500), (500, 2000)]:
        A, X, Y = sparse_problem(n, d, n // 10, 1, rng)
        y = Y[:, 0] + 0.01 * rng.standard_normal(n)
        alpha = 0.01 * float(np.abs(A.T @ y).max()) / n
        ref, t_ref = timed(lambda: SkLasso(alpha=alpha, tol=1e-10, max_iter=100000).fit(A, y))
        f_ref = ((y - ref.predict(A)) ** 2).sum() / (2 * n) + alpha * np.abs(ref.coef_).sum()
        for solver in ("ista", "fista"):
            est, t = timed(lambda: Lasso(alpha=alpha, solver=solver, tol=1e-10, max_iter=100000).fit(A, y))
            rows.append({"section": "reference", "solver": f"lasso-{solver}", "reference": "sklearn Lasso (cd)",
                         "problem": f"n={n} d={d}", "objective_rel_diff": (est.objective(A, y) - f_ref) / f_ref,
                         "nmse_vs_truth": nmse(est.coef_, X[:, 0]), "ref_nmse_vs_truth": nmse(ref.coef_, X[:, 0]),
                         "time_s": t, "ref_time_s": t_ref, "time_ratio": t / t_ref})
    return rows


def _omp_rows(quick: bool, rng: np.random.Generator) -> list[dict]:
    rows = []
    n, d, k = 64, 256, 8
    t = 500 if quick else 5000
    A, X, Y = sparse_problem(n, d, k, t, rng)
    Y = Y + 0.01 * rng.standard_normal(Y.shape)
    est, t_ours = timed(lambda: OMP(n_nonzero_coefs=k, fit_intercept=False).fit(A, Y))
    ref, t_ref = timed(lambda: orthogonal_mp(A, Y, n_nonzero_coefs=k, precompute=True))
    same = float(np.mean(np.all((est.coef_.T != 0) == (ref != 0), axis=0)))
    rows.append({"section": "reference", "solver": "omp", "reference": "sklearn orthogonal_mp (gram)",
                 "problem": f"n={n} d={d} k={k} signals={t}", "same_support_frac": same,
                 "nmse_vs_truth": nmse(est.coef_.T, X), "ref_nmse_vs_truth": nmse(ref, X),
                 "time_s": t_ours, "ref_time_s": t_ref, "time_ratio": t_ours / t_ref})
    single = OrthogonalMatchingPursuit(n_nonzero_coefs=k, fit_intercept=False)
    iht_est, t_iht = timed(lambda: IHT(n_nonzero_coefs=k, fit_intercept=False).fit(A, Y[:, :200]))
    _, t_ref1 = timed(lambda: single.fit(A, Y[:, :200]))
    rows.append({"section": "reference", "solver": "iht", "reference": "sklearn OMP (no IHT in sklearn)",
                 "problem": f"n={n} d={d} k={k} signals=200", "nmse_vs_truth": nmse(iht_est.coef_.T, X[:, :200]),
                 "ref_nmse_vs_truth": nmse(single.coef_.T, X[:, :200]),
                 "time_s": t_iht, "ref_time_s": t_ref1, "time_ratio": t_iht / t_ref1})
    return rows


def _sbl_rows(quick: bool, rng: np.random.Generator) -> list[dict]:
    rows = []
    for n, d, k in [(60, 200, 10)] if quick else [(60, 200, 10), (150, 500, 20)]:
        A, X, Y = sparse_problem(n, d, k, 1, rng)
        y = Y[:, 0] + 0.01 * rng.standard_normal(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, t_ref = timed(lambda: ARDRegression(fit_intercept=False, max_iter=300).fit(A, y), repeats=1)
        for update in ("em", "mackay"):
            est, t = timed(lambda: SBL(update=update, max_iter=1000).fit(A, y), repeats=1)
            rows.append({"section": "reference", "solver": f"sbl-{update}", "reference": "sklearn ARDRegression",
                         "problem": f"n={n} d={d} k={k} noise=0.01", "nmse_vs_truth": nmse(est.coef_, X[:, 0]),
                         "ref_nmse_vs_truth": nmse(ref.coef_, X[:, 0]), "time_s": t, "ref_time_s": t_ref,
                         "time_ratio": t / t_ref})
    return rows


def _kron_rows(quick: bool, rng: np.random.Generator) -> list[dict]:
    rows = []
    sizes = [(8, 16, 2), (12, 24, 3)] if quick else [(8, 16, 2), (12, 24, 3), (16, 40, 4), (24, 64, 5), (64, 256, 6)]
    for m, nn, k in sizes:
        A, B = rng.standard_normal((m, nn)) / np.sqrt(m), rng.standard_normal((m, nn)) / np.sqrt(m)
        x1, x2 = np.zeros(nn), np.zeros(nn)
        x1[rng.choice(nn, k, replace=False)] = rng.choice([-1, 1], k) * (1 + rng.random(k))
        x2[rng.choice(nn, k, replace=False)] = rng.choice([-1, 1], k) * (1 + rng.random(k))
        x = np.kron(x1, x2)
        y = (A @ x.reshape(nn, nn) @ B.T).ravel()
        y = y + 0.01 * np.linalg.norm(y) / np.sqrt(y.size) * rng.standard_normal(y.size)
        for update in ("am", "svd"):
            est, t = timed(lambda: KroneckerSBL(update=update, max_iter=500).fit(A, B, y), repeats=1)
            row = {"section": "reference", "solver": f"kron-sbl-{update}", "reference": "plain SBL on kron(A, B)",
                   "problem": f"({m}x{nn}) kron ({m}x{nn}), k={k}x{k}, SNR 40dB",
                   "nmse_vs_truth": nmse(est.coef_, x), "time_s": t}
            if m * nn <= 2000:  # plain SBL on the explicit (m^2, nn^2) matrix; beyond that it is 2+ GB
                Phi = np.kron(A, B)
                ref, t_ref = timed(lambda: SBL(update="mackay", max_iter=500).fit(Phi, y), repeats=1)
                row.update(ref_nmse_vs_truth=nmse(ref.coef_, x), ref_time_s=t_ref, time_ratio=t / t_ref)
            else:
                row.update(ref_nmse_vs_truth=f"skipped (A kron B would be {m * m}x{nn * nn})")
            rows.append(row)
    return rows


def run(quick: bool) -> Section:
    rng = np.random.default_rng(1)
    rows = _lasso_rows(quick, rng) + _omp_rows(quick, rng) + _sbl_rows(quick, rng) + _kron_rows(quick, rng)
    cols = ["solver", "reference", "problem", "objective_rel_diff", "same_support_frac", "nmse_vs_truth",
            "ref_nmse_vs_truth", "time_ratio"]
    md = ("### Solvers vs references (time_ratio = ours / reference, < 1 is faster)\n\n"
          + markdown_table(rows, cols) + "\n")
    return Section("reference", rows, md)
