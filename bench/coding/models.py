"""Probabilistic sparse coding (BSC, spike-and-slab), spectral unmixing and LDP sparse regression."""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from sklearn.decomposition import MiniBatchDictionaryLearning

from bench.common import markdown_table, pyplot
from sparsecraft.coding import (
    BinarySparseCoding,
    LDPSparseRegression,
    SparseUnmixing,
    SpikeAndSlabSparseCoding,
    match_dictionaries,
    synthetic_mixture,
)
from sparsecraft.coding.solvers import iht

from ._common import Section, save_plot, timed


def _bars(g: int = 5, amp: float = 5.0) -> np.ndarray:
    W = []
    for i in range(g):
        for horizontal in (True, False):
            a = np.zeros((g, g))
            if horizontal:
                a[i, :] = 1
            else:
                a[:, i] = 1
            W.append(a.ravel())
    return np.array(W) * amp


def _probabilistic(quick: bool) -> list[dict]:
    rows = []
    W = _bars()
    H, D = W.shape
    N = 500 if quick else 1000
    seeds = range(2 if quick else 5)
    models = {  # name -> estimator for a seed
        "bsc": lambda seed: BinarySparseCoding(H, n_candidates=7, max_active=4, n_iter=60, n_init=3,
                                               random_state=seed),
        "spike-and-slab": lambda seed: SpikeAndSlabSparseCoding(H, n_candidates=6, max_active=4, n_iter=40,
                                                                random_state=seed),
        "sklearn MiniBatchDictionaryLearning (l1)": lambda seed: MiniBatchDictionaryLearning(
            H, alpha=1.0, batch_size=64, max_iter=10, random_state=seed),
    }
    for model_name, make in models.items():
        for seed in seeds:
            gen = np.random.default_rng(100 + seed)
            S = (gen.random((N, H)) < 2 / H).astype(float)
            if model_name == "bsc":
                Y = S @ W + gen.standard_normal((N, D))
            else:
                Y = (S * gen.normal(1.0, 0.3, (N, H))) @ W + gen.standard_normal((N, D))
            model, t = timed(lambda: make(seed).fit(Y), repeats=1)
            _, cos = match_dictionaries(model.components_, W)
            row = {"section": "probabilistic", "model": model_name, "seed": seed, "min_cos": float(cos.min()),
                   "mean_cos": float(cos.mean()), "all_atoms_recovered(>0.95)": bool(cos.min() > 0.95), "time_s": t}
            if hasattr(model, "noise_var_"):
                row.update(noise_var=float(model.noise_var_), pi=float(np.mean(model.pi_)))
            rows.append(row)
    return rows


def _sre(A: np.ndarray, E: np.ndarray) -> float:
    """Signal-to-reconstruction error of the estimate ``E`` of ``A``, in dB."""
    return float(10 * np.log10((A**2).sum() / ((A - E) ** 2).sum()))


def _unmixing(quick: bool) -> list[dict]:
    rows = []
    for outliers in (0, 5):
        for seed in range(2 if quick else 3):
            lib, Y, A = synthetic_mixture(n_pixels=200 if quick else 400, n_outlier_bands=outliers, random_state=seed)
            true = set(np.flatnonzero(A.sum(axis=0)).tolist())
            est, t = timed(lambda: np.array([nnls(lib.T, y)[0] for y in Y]), repeats=1)
            rows.append({"section": "unmixing", "method": "NNLS (scipy, per pixel)", "outlier_bands": outliers,
                         "seed": seed, "SRE_dB": _sre(A, est), "time_s": t})
            for label, kw in (("l2,1", {}), ("l2,p p=0.5", {"penalty": "l2p"}), ("l2,1 robust", {"robust": True}),
                              ("l2,p robust", {"penalty": "l2p", "robust": True})):
                m, t = timed(lambda: SparseUnmixing(lib, lam=1.0, **kw).fit(Y), repeats=1)
                top = set(np.argsort(-np.linalg.norm(m.abundances_, axis=0))[: len(true)].tolist())
                rows.append({"section": "unmixing", "method": label, "outlier_bands": outliers, "seed": seed,
                             "SRE_dB": _sre(A, m.abundances_), "endmembers_found": top == true,
                             "rows_in_use": len(m.active_), "time_s": t})
    return rows


def _ldp(quick: bool) -> tuple[list[dict], list[str]]:
    n, d, k = (200000, 10, 2) if quick else (1000000, 10, 2)
    theta = np.zeros(d)
    theta[[2, 7]] = [1.0, -0.8]
    rows = []
    for seed in range(1 if quick else 2):
        gen = np.random.default_rng(seed)
        X = gen.standard_normal((n, d))
        y = X @ theta + 0.1 * gen.standard_normal(n)
        public = gen.standard_normal((5000, d))
        nonpriv = iht(X / np.sqrt(n), (y / np.sqrt(n))[:, None], k)[0][:, 0]
        for eps in (0.1, 0.25, 0.5, 1.0):
            loc = LDPSparseRegression(k, epsilon=eps, clip_x=2.5, clip_y=2.5, random_state=seed).fit(X, y)
            pub = LDPSparseRegression(k, epsilon=eps, clip_x=2.5, clip_y=2.5, public_X=public,
                                      random_state=seed).fit(X, y)

            def err(v: np.ndarray) -> float:
                return float(np.linalg.norm(v - theta))

            rows.append({"section": "ldp", "epsilon": eps, "seed": seed, "n": n, "d": d, "k": k,
                         "err_sparse_ldp": err(loc.coef_), "err_dense_ldp": err(loc.dense_coef_),
                         "err_sparse_ldp_public_cov": err(pub.coef_), "err_dense_ldp_public_cov": err(pub.dense_coef_),
                         "err_zero_estimator": err(np.zeros(d)), "err_non_private_iht": err(nonpriv),
                         "support_ok_public_cov": set(np.flatnonzero(pub.coef_).tolist()) == {2, 7}})
    return rows, _plot_ldp(rows)


def _plot_ldp(rows: list[dict]) -> list[str]:
    plt = pyplot()
    eps = sorted({r["epsilon"] for r in rows})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key in ("err_sparse_ldp", "err_dense_ldp", "err_sparse_ldp_public_cov", "err_dense_ldp_public_cov",
                "err_zero_estimator", "err_non_private_iht"):
        ax.plot(eps, [np.mean([r[key] for r in rows if r["epsilon"] == e]) for e in eps], "o-", label=key[4:])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epsilon (per user)")
    ax.set_ylabel("||theta_hat - theta||_2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_plot(fig, "ldp")


def run(quick: bool) -> Section:
    prob = _probabilistic(quick)
    unmix = _unmixing(quick)
    ldp, plots = _ldp(quick)
    summary = []
    for name in ("bsc", "spike-and-slab", "sklearn MiniBatchDictionaryLearning (l1)"):
        rs = [r for r in prob if r["model"] == name]
        summary.append({"model": name, "runs": len(rs),
                        "all_atoms_recovered": sum(r["all_atoms_recovered(>0.95)"] for r in rs),
                        "median_min_cos": float(np.median([r["min_cos"] for r in rs])),
                        "median_time_s": float(np.median([r["time_s"] for r in rs]))})
    um = []
    for method in dict.fromkeys(r["method"] for r in unmix):
        for o in (0, 5):
            rs = [r for r in unmix if r["method"] == method and r["outlier_bands"] == o]
            found = sum(bool(r["endmembers_found"]) for r in rs) if "endmembers_found" in rs[0] else ""
            um.append({"method": method, "outlier_bands": o, "mean_SRE_dB": float(np.mean([r["SRE_dB"] for r in rs])),
                       "endmembers_found": found,
                       "mean_time_s": float(np.mean([r["time_s"] for r in rs]))})
    lp = []
    for e in sorted({r["epsilon"] for r in ldp}):
        rs = [r for r in ldp if r["epsilon"] == e]
        lp.append({"epsilon": e, **{k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k.startswith("err_")}})
    md = ("### Probabilistic sparse coding: 5x5 bars (H=10, pi=0.2, sigma=1, N samples), "
          "dictionary match up to permutation\n\n"
          "min_cos = smallest |cosine| between a true bar and its Hungarian-matched learned atom.\n\n"
          + markdown_table(summary, ["model", "runs", "all_atoms_recovered", "median_min_cos", "median_time_s"])
          + "\n\n### Spectral unmixing (60-spectrum library, 5 active, 100 bands, 30 dB; SRE higher is better)\n\n"
          + markdown_table(um, ["method", "outlier_bands", "mean_SRE_dB", "endmembers_found", "mean_time_s"])
          + f"\n\n### Sparse linear regression under LDP (n={ldp[0]['n']}, d={ldp[0]['d']}, k={ldp[0]['k']}, "
          "delta=1e-5)\n\n"
          + markdown_table(lp, list(lp[0]))
          + "\n\n![ldp](coding_ldp.png)\n")
    return Section("models", prob + unmix + ldp, md, plots)
