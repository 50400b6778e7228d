"""Sparse Walsh-Hadamard transform vs the full fast WHT: samples, time and success rate."""
from __future__ import annotations

import numpy as np

from bench.common import markdown_table, median_time
from sparsecraft.coding import fwht, sparse_wht

from ._common import Section


def run(quick: bool) -> Section:
    configs = [(12, 10), (16, 20), (20, 50)] if quick else [(12, 10), (16, 20), (16, 100), (20, 50), (22, 100)]
    trials = 3 if quick else 10
    rows = []
    gen = np.random.default_rng(0)
    for N, K in configs:
        n = 1 << N
        for snr in (None, 10.0):
            ok, samples, t_sparse = 0, [], []
            for trial in range(trials):
                X = np.zeros(n)
                X[gen.choice(n, K, replace=False)] = gen.choice([-1, 1], K) * (1 + gen.random(K))
                x = fwht(X) / n
                sd = 0.0 if snr is None else float(np.sqrt(np.mean(x**2) / 10 ** (snr / 10)))
                if sd:
                    x = x + sd * gen.standard_normal(n)
                res = sparse_wht(x, K, noise_std=sd, random_state=trial)
                t_sparse.append(median_time(lambda: sparse_wht(x, K, noise_std=sd, random_state=trial),
                                            repeats=3, warmup=1))
                samples.append(res.n_samples)
                ok += set(res.indices.tolist()) == set(np.flatnonzero(X).tolist())
            t_full = median_time(lambda: fwht(x), repeats=5, warmup=1)
            rows.append({"section": "wht", "N": N, "n": n, "K": K, "snr_db": "inf" if snr is None else snr,
                         "support_success": ok / trials, "samples": float(np.mean(samples)),
                         "sample_fraction": float(np.mean(samples)) / n, "time_sparse_s": float(np.median(t_sparse)),
                         "time_full_fwht_s": t_full, "time_ratio": float(np.median(t_sparse)) / t_full})
    md = ("### Sparse WHT (SPRIGHT-style) vs full fast WHT\n\n"
          "Support success = exact recovery of the K-sparse support; the full FWHT reads all n samples.\n\n"
          + markdown_table(rows, ["N", "K", "snr_db", "support_success", "samples", "sample_fraction", "time_ratio"])
          + "\n")
    return Section("wht", rows, md)
