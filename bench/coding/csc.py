"""Convolutional sparse coding: heterogeneous kernel sizes vs a single size, sparsity at equal error."""
from __future__ import annotations

import numpy as np

from bench.common import markdown_table
from sparsecraft.coding import ConvSparseCoding, image_crops

from ._common import Curves, Section, nnz_at_error, plot_curves, timed


def run(quick: bool) -> Section:
    size, n_train, n_test, steps = (32, 8, 4, 10) if quick else (48, 32, 8, 40)
    train = image_crops(size, n_train, random_state=0)
    test = image_crops(size, n_test, random_state=1)
    banks = {"heterogeneous 5/9/13 (8 each)": [5] * 8 + [9] * 8 + [13] * 8, "single 9x9 (24)": [9] * 24,
             "single 5x5 (24)": [5] * 24}
    lams = [0.5, 1.0, 2.0, 4.0]
    rows: list[dict] = []
    curves: Curves = {}
    for name, sizes in banks.items():
        model, t_fit = timed(lambda: ConvSparseCoding(sizes, lam=1.0, n_steps=steps, batch_size=4, code_iter=30,
                                                      lr=0.5, random_state=0).fit(train), repeats=1)
        for lam in lams:
            codes = model.transform(test, lam=lam, n_iter=150)
            rec = model.inverse_transform(codes)
            err = float(np.linalg.norm(rec - test) / np.linalg.norm(test))
            nnz = float(sum((c != 0).sum() for c in codes) / test.size)
            curves.setdefault(name, []).append((nnz, err))
            rows.append({"section": "csc", "bank": name, "lam": lam, "nnz_per_pixel": nnz, "rel_err": err,
                         "fit_time_s": t_fit})
    targets = [0.2, 0.35]
    equal = {name: [nnz_at_error(pts, t, log_nnz=True) for t in targets] for name, pts in curves.items()}
    for name, vals in equal.items():
        for t, v in zip(targets, vals):
            rows.append({"section": "csc", "bank": name, "task": f"nnz/pixel at rel_err {t}", "nnz_per_pixel": v})
    plots = plot_curves(curves, "csc", "non-zeros per pixel", log_x=True, legend_size=8)
    md = (f"### Convolutional sparse coding ({size}x{size} whitened crops, l1, {steps} learning steps)\n\n"
          + markdown_table([r for r in rows if "task" not in r],
                           ["bank", "lam", "nnz_per_pixel", "rel_err", "fit_time_s"])
          + "\n\nNon-zeros per pixel at equal error (interpolated; lower is sparser):\n\n"
          + markdown_table([{"bank": n, **{f"err {t}": v for t, v in zip(targets, vals)}} for n, vals in equal.items()],
                           ["bank"] + [f"err {t}" for t in targets])
          + "\n\n![csc](coding_csc.png)\n")
    return Section("csc", rows, md, plots)
