"""Phase transitions: success rate vs (delta = n/d, rho = k/n) for l1, IHT, OMP and SBL.

One Gaussian A per grid cell and ``trials`` k-sparse signals with random signs and magnitudes in
[1, 2]; success means ||x_hat - x|| / ||x|| < 1e-3. ``l1`` is FISTA on the Lasso with
lam = 1e-4 ||A^T y||_inf followed by least squares on its support (a debiased basis-pursuit proxy).
"""
from __future__ import annotations

import numpy as np

from bench.common import pyplot
from sparsecraft.coding import SBL
from sparsecraft.coding.solvers import iht, least_squares_on_support, omp, proximal_gradient

from ._common import Section, save_plot, sparse_problem


def _l1(A: np.ndarray, Y: np.ndarray, k: int) -> np.ndarray:
    lam = 1e-4 * float(np.abs(A.T @ Y).max())
    X, _ = proximal_gradient(A, Y, lam, "l1", max_iter=3000, tol=1e-9)
    X = np.where(np.abs(X) > 1e-3 * np.abs(X).max(axis=0, keepdims=True), X, 0.0)
    return least_squares_on_support(A, Y, X)


def _sbl(A: np.ndarray, Y: np.ndarray, k: int) -> np.ndarray:
    return np.column_stack([SBL(noise_var=1e-8, update="mackay", max_iter=300).fit(A, y).coef_ for y in Y.T])


METHODS = {
    "l1": _l1,
    "iht": lambda A, Y, k: least_squares_on_support(A, Y, iht(A, Y, k, max_iter=300)[0]),
    "omp": lambda A, Y, k: omp(A, Y, k=k),
    "sbl": _sbl,
}


def run(quick: bool) -> Section:
    d = 64 if quick else 100
    trials = 4 if quick else 10
    deltas = np.linspace(0.1, 0.9, 5 if quick else 9)
    rhos = np.linspace(0.05, 0.95, 6 if quick else 10)
    rng = np.random.default_rng(0)
    grid = {m: np.zeros((len(rhos), len(deltas))) for m in METHODS}
    for j, delta in enumerate(deltas):
        n = max(2, int(round(delta * d)))
        for i, rho in enumerate(rhos):
            k = max(1, int(round(rho * n)))
            A, X, Y = sparse_problem(n, d, k, trials, rng)
            for name, solve in METHODS.items():
                est = solve(A, Y, k)
                err = np.linalg.norm(est - X, axis=0) / np.linalg.norm(X, axis=0)
                grid[name][i, j] = float(np.mean(err < 1e-3))
    rows = []
    for name, g in grid.items():
        # the 50% transition rho*(delta), linearly interpolated down each column
        for j, delta in enumerate(deltas):
            col = g[:, j]
            below = np.flatnonzero(col < 0.5)
            r50 = float(rhos[below[0]]) if below.size else float(rhos[-1])
            if below.size and below[0] > 0:
                a, b = col[below[0] - 1], col[below[0]]
                r50 = float(rhos[below[0] - 1] + (a - 0.5) / (a - b) * (rhos[below[0]] - rhos[below[0] - 1]))
            rows.append({"section": "phase", "method": name, "d": d, "delta": float(delta), "rho50": r50,
                         "success_mean": float(col.mean())})
    plots = _plot(grid, deltas, rhos)
    table = ["| delta=n/d | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for j, delta in enumerate(deltas):
        vals = [next(r["rho50"] for r in rows if r["method"] == m and r["delta"] == float(delta)) for m in METHODS]
        table.append(f"| {delta:.2f} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    md = (f"### Phase transitions (d={d}, {trials} signals per cell)\n\n"
          "rho50 = k/n at which exact recovery (rel. error < 1e-3) drops below 50%; higher is better.\n\n"
          + "\n".join(table) + "\n\n![phase transitions](coding_phase.png)\n")
    return Section("phase", rows, md, plots, {"grid": {m: g.tolist() for m, g in grid.items()},
                                              "deltas": deltas.tolist(), "rhos": rhos.tolist()})


def _plot(grid: dict[str, np.ndarray], deltas: np.ndarray, rhos: np.ndarray) -> list[str]:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(grid), figsize=(3.4 * len(grid) + 1, 3.4), sharey=True, constrained_layout=True)
    for ax, (name, g) in zip(axes, grid.items()):
        im = ax.imshow(g, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                       extent=[deltas[0], deltas[-1], rhos[0], rhos[-1]])
        ax.set_title(name)
        ax.set_xlabel("delta = n / d")
    axes[0].set_ylabel("rho = k / n")
    fig.colorbar(im, ax=axes, label="success rate")
    return save_plot(fig, "phase")
