"""Natural-image patches: l1 vs l0 vs CEL0 sparse coding (as in "Beyond l1 sparse coding in V1"),
and our online dictionary learning vs scikit-learn's MiniBatchDictionaryLearning on the same patches."""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import MiniBatchDictionaryLearning, SparseCoder

from bench.common import markdown_table
from sparsecraft.coding import DictionaryLearning, image_patches, sparse_encode
from sparsecraft.coding.solvers import objective

from ._common import Curves, Section, nnz_at_error, plot_curves, timed


def _quality(test: np.ndarray, D: np.ndarray, method: str, lam: float | None = None, k: int | None = None):
    C = sparse_encode(test, D, method, lam=lam, k=k, max_iter=1000)
    err = float(np.linalg.norm(C @ D - test) / np.linalg.norm(test))
    return err, float((C != 0).sum(axis=1).mean()), C


def run(quick: bool) -> Section:
    n_train, n_test, atoms = (3000, 500, 64) if quick else (10000, 2000, 128)
    P = image_patches(8, n_train + n_test, random_state=0)
    train, test = P[:n_train], P[n_train:]
    rows: list[dict] = []
    # --- dictionary learning vs scikit-learn, same l1 objective (alpha = lam) ---------------------------
    alpha = 1.0
    ours, t_ours = timed(lambda: DictionaryLearning(atoms, "l1", lam=alpha, n_epochs=1, batch_size=256,
                                                    random_state=0).fit(train), repeats=1)
    ref, t_ref = timed(lambda: MiniBatchDictionaryLearning(atoms, alpha=alpha, batch_size=256, max_iter=1,
                                                           fit_algorithm="cd", random_state=0).fit(train), repeats=1)
    for label, D in (("ours", ours.components_), ("sklearn", ref.components_)):
        e1, n1, _ = _quality(test, D, "l1", lam=alpha)
        e2, n2, _ = _quality(test, D, "omp", k=5)
        rows.append({"section": "images", "task": "dictionary learning (l1, alpha=1, 1 epoch)", "dictionary": label,
                     "atoms": atoms, "test_err_l1": e1, "test_nnz_l1": n1, "test_err_omp5": e2,
                     "fit_time_s": t_ours if label == "ours" else t_ref})
    rows[-2]["time_ratio"] = t_ours / t_ref
    # our FISTA codes vs scikit-learn's lasso_cd codes on the same (sklearn) dictionary: same objective
    D = ref.components_ / np.linalg.norm(ref.components_, axis=1, keepdims=True)
    C_ours, t_c = timed(lambda: sparse_encode(test, D, "l1", lam=alpha, max_iter=2000))
    coder = SparseCoder(D, transform_algorithm="lasso_cd", transform_alpha=alpha, transform_max_iter=5000)
    C_ref, t_cref = timed(lambda: coder.transform(test))
    f_ours = objective(D.T, test.T, C_ours.T, alpha, "l1").sum()
    f_ref = objective(D.T, test.T, C_ref.T, alpha, "l1").sum()
    rows.append({"section": "images", "task": "l1 coding of test patches (FISTA vs lasso_cd)", "dictionary": "sklearn",
                 "objective_rel_diff": float((f_ours - f_ref) / f_ref), "time_ratio": t_c / t_cref})
    # --- l1 vs l0 vs CEL0: each learns its own dictionary, lambda swept --------------------------------
    grids = {"l1": [0.5, 1.0, 2.0, 4.0], "l0": [0.1, 0.3, 1.0, 2.0], "cel0": [0.1, 0.3, 1.0, 2.0]}
    if quick:
        grids = {m: g[1:3] for m, g in grids.items()}
    curves: Curves = {}
    for method, lams in grids.items():
        for lam in lams:
            dl = DictionaryLearning(atoms, method, lam=lam, n_epochs=1, batch_size=256, random_state=0).fit(train)
            err, nnz, _ = _quality(test, dl.components_, method, lam=lam)
            curves.setdefault(method, []).append((nnz, err))
            rows.append({"section": "images", "task": "penalty sweep (own dictionary)", "method": method,
                         "lam": lam, "test_nnz": nnz, "test_err": err})
    targets = (0.3, 0.4, 0.5)
    at_equal = {t: {m: nnz_at_error(pts, t) for m, pts in curves.items()} for t in targets}
    for t in targets:
        for method, nnz in at_equal[t].items():
            rows.append({"section": "images", "task": f"nnz per patch at rel. error {t}", "method": method,
                         "test_nnz": nnz})
    plots = plot_curves(curves, "images", "mean non-zeros per patch", title="8x8 natural-image patches")
    md = ("### Natural-image patches (8x8, scikit-learn sample photos)\n\n"
          f"Dictionary learning, {atoms} atoms, {n_train} training / {n_test} test patches; test error = "
          "||X - C D|| / ||X|| with codes from the same encoder on each dictionary.\n\n"
          + markdown_table([r for r in rows if r["task"].startswith(("dictionary", "l1 coding"))],
                           ["task", "dictionary", "test_err_l1", "test_nnz_l1", "test_err_omp5", "objective_rel_diff",
                            "fit_time_s", "time_ratio"])
          + "\n\nl1 vs l0 vs CEL0 (each with its own learned dictionary): mean non-zeros per patch and error.\n\n"
          + markdown_table([r for r in rows if r["task"].startswith("penalty")],
                           ["method", "lam", "test_nnz", "test_err"])
          + "\n\nNon-zeros per patch needed for a given relative error (interpolated, nan = outside the swept "
          "range; lower is sparser):\n\n"
          + markdown_table([{"method": m, **{f"err {t}": at_equal[t][m] for t in targets}} for m in curves],
                           ["method"] + [f"err {t}" for t in targets])
          + "\n\n![sparsity vs error](coding_images.png)\n")
    return Section("images", rows, md, plots)
