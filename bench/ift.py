"""Sparse Iso-FLOP Transformations benchmark (Thangarasa et al. 2023): accuracy at equal FLOPs.

Workloads: the in-project MLP on digits and MNIST-1D, the 1-D ResNet CNN on MNIST-1D. Each dense model
is compared with its Sparse-IFT variants at the same forward MACs (measured, sparse weights at their
density; training FLOPs are 3x forward for every model, same steps and batch, so the ratio carries
over; RigL's dense gradient at its update steps, every 1/20 of training, is not counted). Sparse Wide
at s = 0.5 / 0.75 with static (random, uniform) and RigL sparsity; Parallel, Factorized, Doped at 0.75
with RigL. AdamW, cosine LR, same epochs for all; mean and std over seeds.

    .venv/bin/python -m bench.ift            # ~9 min on the shared 2-core machine at load 8-14
    .venv/bin/python -m bench.ift --quick    # 1 seed, fewer epochs

Writes bench/results/ift{.json,.md,.png} (or ift_quick.*).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from bench.common import RESULTS, markdown_table, pyplot, write_results

#: (label, dataset, model, constructor arguments, epochs)
WORKLOADS = [
    ("digits-mlp", "digits", "mlp", {"hidden": (128, 128, 128)}, 8),
    ("mnist1d-mlp", "mnist1d", "mlp", {"hidden": (128, 128, 128)}, 10),
    ("mnist1d-cnn", "mnist1d", "cnn", {"channels": (16, 32)}, 6),
]
#: (transform, sparsity, updater)
VARIANTS = [("dense", 0.0, None), ("wide", 0.5, "static"), ("wide", 0.5, "rigl"), ("wide", 0.75, "static"),
            ("wide", 0.75, "rigl"), ("parallel", 0.75, "rigl"), ("factorized", 0.75, "rigl"),
            ("doped", 0.75, "rigl")]
CLAIM_VARIANT = ("wide", 0.75, "rigl")


def run_one(data: Any, model: str, kwargs: dict, epochs: int, transform: str, sparsity: float,
            method: str | None, seed: int) -> dict[str, Any]:
    from sparsecraft.architectures import forward_macs, iso_flop_model, train_ift
    from sparsecraft.training import evaluate

    torch.manual_seed(seed)
    ift = iso_flop_model(model, data, transform, sparsity, **kwargs)
    options = {"criterion": "random"} if method == "static" else {}
    t0 = time.perf_counter()
    train_ift(ift, data, method or "dense", epochs=epochs, seed=seed, **options)
    seconds = time.perf_counter() - t0
    return {"acc": evaluate(ift.model, data.test_x, data.test_y), "macs": forward_macs(ift.model, data.test_x[:8]),
            "params": sum(p.numel() for p in ift.model.parameters()), "train_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, a third of the epochs")
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    from sparsecraft.data import load_dataset

    name = "ift_quick" if args.quick else "ift"
    seeds = 1 if args.quick else args.seeds
    load_before, start = os.getloadavg(), time.perf_counter()
    rows: list[dict[str, Any]] = []
    for label, dataset, model, kwargs, epochs in WORKLOADS:
        data = load_dataset(dataset, seed=0, **({"num_samples": 4000} if dataset == "mnist1d" else {}))
        epochs = max(1, epochs // 3) if args.quick else epochs
        dense_macs = None
        for transform, sparsity, method in VARIANTS:
            runs = [run_one(data, model, kwargs, epochs, transform, sparsity, method, seed) for seed in range(seeds)]
            accs = [r["acc"] for r in runs]
            dense_macs = dense_macs or runs[0]["macs"]
            rows.append({
                "workload": label, "transform": transform, "sparsity": sparsity, "method": method or "dense",
                "epochs": epochs, "acc_mean": statistics.mean(accs),
                "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs,
                "macs": runs[0]["macs"], "flop_ratio": runs[0]["macs"] / dense_macs, "params": runs[0]["params"],
                "train_s": statistics.mean(r["train_s"] for r in runs),
            })
            print(rows[-1], flush=True)
    load_after, total = os.getloadavg(), time.perf_counter() - start
    claims = []
    for label, *_ in WORKLOADS:
        dense = next(r for r in rows if r["workload"] == label and r["transform"] == "dense")
        wide = next(r for r in rows if r["workload"] == label
                    and (r["transform"], r["sparsity"], r["method"]) == CLAIM_VARIANT)
        held = wide["acc_mean"] > dense["acc_mean"]
        claims.append({"claim": f"{label}: Sparse Wide (s=0.75, RigL) beats dense at equal training FLOPs",
                       "measured": f"{wide['acc_mean']:.3f}±{wide['acc_std']:.3f} vs dense "
                                   f"{dense['acc_mean']:.3f}±{dense['acc_std']:.3f} at "
                                   f"{wide['flop_ratio']:.3f}x the FLOPs",
                       "verdict": "held" if held else "not held"})
    from bench.common import machine_info
    info = machine_info()
    md = [
        f"# Sparse Iso-FLOP Transformations ({'quick' if args.quick else 'full'} run)", "",
        f"CPU {info['cpu']}, 1 torch thread; load average before {load_before[0]:.2f} / after "
        f"{load_after[0]:.2f} (a machine shared with other agents); {total / 60:.1f} min in all; "
        f"{seeds} seed(s). Accuracy on the test split; `flop_ratio` = forward MACs / the dense model's "
        "(sparse weights at their density); wide uses the exact iso-FLOP width (first and last layers dense).",
        "", "## Claims", "", markdown_table(claims, ["claim", "measured", "verdict"]), "",
        "## All runs", "",
        markdown_table(rows, ["workload", "transform", "sparsity", "method", "epochs", "acc_mean", "acc_std",
                              "flop_ratio", "params", "train_s"]), "",
        "Scale: tiny models and datasets (digits 1437 train images; MNIST-1D 3200 train signals), a few "
        "epochs; the paper trains ResNet-18 on ImageNet and GPT-3 Small. Train seconds are wall time on "
        "the shared machine (masked weights are computed dense, so a wide model trains slower here).",
    ]
    write_results(name, rows, "\n".join(md), extra={"claims": claims, "load_before": load_before,
                                                     "load_after": load_after})
    plot(rows, RESULTS / f"{name}.png")


def plot(rows: list[dict[str, Any]], path: Any) -> None:
    plt = pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.5 * len(workloads), 3.6))
    for ax, label in zip(axes, workloads):
        sub = [r for r in rows if r["workload"] == label]
        names = [r["transform"] if r["transform"] == "dense" else f"{r['transform']}\n{r['sparsity']} {r['method']}"
                 for r in sub]
        ax.bar(range(len(sub)), [r["acc_mean"] for r in sub], yerr=[r["acc_std"] for r in sub],
               color=["grey" if r["transform"] == "dense" else "tab:blue" for r in sub])
        ax.set_xticks(range(len(sub)), names, rotation=70, fontsize=7)
        lo = min(r["acc_mean"] for r in sub)
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, max(r["acc_mean"] for r in sub) + 0.05))
        ax.set_title(label)
        ax.set_ylabel("test accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
