"""Monarch matrices benchmark (Dao et al. 2022): projection, dense-to-Monarch fine-tuning, training from
scratch at equal parameters, and speed of a Monarch layer against a dense one of the same shape.

Model: the in-project TinyTransformer (d_model 64, 2 layers, 4 heads, rows of the 8x8 digits as
tokens); Monarch replaces the q/k/v/out and MLP Linears (embedding and head stay dense).

1. Projection error ||W - M||/||W|| on random Monarch matrices (must be ~0) and on the trained
   transformer's weights, next to unstructured magnitude pruning and a truncated SVD keeping the same
   number of weights.
2. Dense-to-Monarch: train dense, project (nblocks 4), fine-tune; accuracy vs the dense model.
3. From scratch at equal parameters: Monarch transformer vs a narrower dense transformer with about
   the same parameters vs the same transformer with unstructured sparsity (static random and RigL,
   uniform) keeping as many weights as Monarch; same epochs.
4. Forward speed of MonarchLinear vs nn.Linear at equal shape (1 thread, interleaved rounds, thread
   CPU time, min over rounds), as a ratio.

    .venv/bin/python -m bench.monarch            # ~4-6 min on a busy 2-core machine
    .venv/bin/python -m bench.monarch --quick

Writes bench/results/monarch{.json,.md,.png} (or monarch_quick.*).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from torch import nn

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results

ARCH = {"d_model": 64, "num_heads": 4, "num_layers": 2}
NBLOCKS = 4
LR = 3e-3
SPEED_SHAPES = [(512, 512, 4), (512, 512, 8), (512, 512, 16), (1024, 1024, 8), (1024, 1024, 32), (1024, 4096, 8),
                (1024, 4096, 32)]


def transformer(data: Any, seed: int, **kwargs: Any) -> nn.Module:
    from sparsecraft.models import model_for_data

    torch.manual_seed(seed)
    return model_for_data("transformer", data, **{**ARCH, **kwargs})


def inner_linears(model: nn.Module) -> list[str]:
    from sparsecraft.target import find_targets

    return [t.module_name for t in find_targets(model, keep_dense=("first", "last"), types=(nn.Linear,))]


def train(model: nn.Module, data: Any, epochs: int, seed: int, lr: float = LR) -> float:
    from sparsecraft.training import evaluate, fit

    fit(model, data, epochs=epochs, lr=lr, seed=seed, progress=False)
    return evaluate(model, data.test_x, data.test_y)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def projection_rows(model: nn.Module) -> list[dict[str, Any]]:
    """Relative errors of Monarch projection, magnitude pruning and truncated SVD at equal weights."""
    from sparsecraft.architectures import monarch_multiply, monarch_params, monarch_project

    rows = []
    for name in inner_linears(model):
        w = model.get_submodule(name).weight.detach().double()
        d_out, d_in = w.shape
        for b in (2, 4, 8):
            keep = monarch_params(d_in, d_out, b)
            w1, w2 = monarch_project(w, b)
            m = monarch_multiply(torch.eye(d_in, dtype=torch.float64), w1, w2).T
            flat = w.abs().flatten()
            dropped = flat.sort().values[: flat.numel() - keep]
            sv = torch.linalg.svdvals(w)
            rank = keep // (d_in + d_out)
            rows.append({"layer": name, "shape": f"{d_out}x{d_in}", "nblocks": b, "kept_fraction": keep / w.numel(),
                         "monarch": float((w - m).norm() / w.norm()),
                         "magnitude": float(dropped.norm() / w.norm()),
                         "low_rank": float(sv[rank:].norm() / sv.norm()), "svd_rank": rank})
    return rows


def dense_width_for(data: Any, target_params: int) -> int:
    """The d_model (a multiple of the head count) whose dense transformer has the nearest parameter count."""
    heads = ARCH["num_heads"]
    widths = range(heads, ARCH["d_model"] + 1, heads)
    return min(widths, key=lambda d: abs(count(transformer(data, 0, d_model=d)) - target_params))


def speed_rows(rounds: int) -> list[dict[str, Any]]:
    from sparsecraft.architectures import MonarchLinear
    from sparsecraft.timing import compare, default_clock

    rows = []
    torch.manual_seed(0)
    for d_in, d_out, b in SPEED_SHAPES:
        x = torch.randn(256, d_in)
        dense, mon = nn.Linear(d_in, d_out), MonarchLinear(d_in, d_out, b)
        with torch.no_grad():
            t = compare({"dense": lambda: dense(x), "monarch": lambda: mon(x)}, rounds=rounds, warmup=3,
                        clock=default_clock())
        rows.append({"shape": f"{d_out}x{d_in}", "nblocks": b, "batch": 256,
                     "weight_fraction": (mon.w1.numel() + mon.w2.numel()) / dense.weight.numel(),
                     "dense_ms": 1e3 * t["dense"], "monarch_ms": 1e3 * t["monarch"],
                     "speedup": t["dense"] / t["monarch"]})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    from sparsecraft.architectures import MonarchLinear, monarch_multiply, monarch_project, monarchize
    from sparsecraft.data import load_dataset
    from sparsecraft.training import SparsityConfig, evaluate, fit, make_updater

    name = "monarch_quick" if args.quick else "monarch"
    seeds = 1 if args.quick else args.seeds
    epochs, ft_epochs = (4, 1) if args.quick else (15, 4)
    load_before, start = os.getloadavg(), time.perf_counter()
    data = load_dataset("digits")

    # 1. exactness on Monarch matrices
    exact = []
    for d_in, d_out, b in [(64, 64, 8), (64, 256, 4), (256, 64, 4), (48, 48, 3)]:
        with torch.no_grad():
            m = MonarchLinear(d_in, d_out, b).double().to_dense()
        w1, w2 = monarch_project(m, b)
        back = monarch_multiply(torch.eye(d_in, dtype=torch.float64), w1, w2).T
        exact.append(float((m - back).norm() / m.norm()))

    # 2. dense -> Monarch fine-tuning, and 1. on the trained weights
    finetune, proj = [], []
    for seed in range(seeds):
        dense = transformer(data, seed)
        dense_acc = train(dense, data, epochs, seed)
        if seed == 0:
            proj = projection_rows(dense)
        report = monarchize(dense, NBLOCKS)
        projected_acc = evaluate(report.model, data.test_x, data.test_y)
        ft_acc = train(report.model, data, ft_epochs, seed, lr=LR / 3)
        dense_more = transformer(data, seed)
        dense_more.load_state_dict(dense.state_dict())
        dense_ft_acc = train(dense_more, data, ft_epochs, seed, lr=LR / 3)
        finetune.append({"seed": seed, "dense": dense_acc, "dense_plus_ft": dense_ft_acc, "projected": projected_acc,
                         "monarch_ft": ft_acc, "mean_projection_error": statistics.mean(report.errors.values()),
                         "params": count(report.model), "dense_params": count(dense)})
        print(finetune[-1], flush=True)

    # 3. from scratch at equal parameters
    mon_params = count(monarchize(transformer(data, 0), NBLOCKS, project=False).model)
    narrow = dense_width_for(data, mon_params)
    base = transformer(data, 0)
    inner = inner_linears(base)
    inner_weights = sum(base.get_submodule(n).weight.numel() for n in inner)
    mon_inner = monarchize(base, NBLOCKS, project=False).monarch_params
    sparsity = 1 - mon_inner / inner_weights
    scratch: dict[str, list[float]] = {"monarch": [], f"dense d_model={narrow}": [], "static (unstructured)": [],
                                       "rigl (unstructured)": [], "dense d_model=64": []}
    params = {"monarch": mon_params, f"dense d_model={narrow}": count(transformer(data, 0, d_model=narrow)),
              "static (unstructured)": mon_params, "rigl (unstructured)": mon_params,
              "dense d_model=64": count(base)}
    for seed in range(seeds):
        scratch["monarch"].append(train(monarchize(transformer(data, seed), NBLOCKS, project=False).model,
                                        data, epochs, seed))
        scratch[f"dense d_model={narrow}"].append(train(transformer(data, seed, d_model=narrow), data, epochs, seed))
        scratch["dense d_model=64"].append(train(transformer(data, seed), data, epochs, seed))
        for method, label in (("static", "static (unstructured)"), ("rigl", "rigl (unstructured)")):
            model = transformer(data, seed)
            updater = make_updater(method, SparsityConfig(sparsity, allocation="uniform", layers=inner), seed=seed,
                                   **({"criterion": "random"} if method == "static" else {}))
            fit(model, data, updater, epochs=epochs, lr=LR, seed=seed, progress=False)
            scratch[label].append(evaluate(model, data.test_x, data.test_y))
        print({k: v[-1] for k, v in scratch.items()}, flush=True)
    scratch_rows = [{"model": k, "params": params[k], "acc_mean": statistics.mean(v),
                     "acc_std": statistics.stdev(v) if len(v) > 1 else 0.0, "accs": v} for k, v in scratch.items()]

    # 4. speed
    speed = speed_rows(rounds=10 if args.quick else 30)
    load_after, total = os.getloadavg(), time.perf_counter() - start

    mean = statistics.mean
    dense_acc, ft_acc = mean(r["dense"] for r in finetune), mean(r["monarch_ft"] for r in finetune)
    by = {r["model"]: r for r in scratch_rows}
    mon_proj = mean(r["monarch"] for r in proj if r["nblocks"] == NBLOCKS)
    mag_proj = mean(r["magnitude"] for r in proj if r["nblocks"] == NBLOCKS)
    lr_proj = mean(r["low_rank"] for r in proj if r["nblocks"] == NBLOCKS)
    claims = [
        {"claim": "the projection is exact on Monarch matrices",
         "measured": f"max relative error {max(exact):.1e}", "verdict": "held" if max(exact) < 1e-10 else "not held"},
        {"claim": f"projection of trained weights (nblocks {NBLOCKS}): best approximation; how good vs "
                  "magnitude pruning / low rank at equal weights",
         "measured": f"mean relative error Monarch {mon_proj:.3f}, magnitude {mag_proj:.3f}, low rank {lr_proj:.3f}",
         "verdict": "reported (no accuracy claim)"},
        {"claim": "dense-to-Monarch fine-tuning keeps the dense accuracy (paper: comparable on GLUE)",
         "measured": f"{ft_acc:.3f} after {ft_epochs} fine-tuning epochs (projected, no tuning: "
                     f"{mean(r['projected'] for r in finetune):.3f}) vs dense {dense_acc:.3f}",
         "verdict": "held" if ft_acc >= dense_acc - 0.01 else "not held"},
        {"claim": "from scratch at equal parameters, Monarch >= a dense model of the same parameter count",
         "measured": f"{by['monarch']['acc_mean']:.3f}±{by['monarch']['acc_std']:.3f} vs "
                     f"{by[f'dense d_model={narrow}']['acc_mean']:.3f}±{by[f'dense d_model={narrow}']['acc_std']:.3f}",
         "verdict": "held" if by["monarch"]["acc_mean"] >= by[f"dense d_model={narrow}"]["acc_mean"] else "not held"},
        {"claim": "from scratch at equal parameters, Monarch >= unstructured sparse (RigL) with as many weights",
         "measured": f"{by['monarch']['acc_mean']:.3f} vs RigL {by['rigl (unstructured)']['acc_mean']:.3f}, "
                     f"static {by['static (unstructured)']['acc_mean']:.3f}",
         "verdict": "held" if by["monarch"]["acc_mean"] >= by["rigl (unstructured)"]["acc_mean"] else "not held"},
        {"claim": "a Monarch layer is faster than dense at equal shape (bmm, CPU, 1 thread)",
         "measured": ", ".join(f"{r['shape']}/b{r['nblocks']} {r['speedup']:.2f}x" for r in speed),
         "verdict": "held" if all(r["speedup"] > 1 for r in speed if r["nblocks"] >= 8) else "not held"},
    ]
    info = machine_info()
    md = [
        f"# Monarch matrices ({'quick' if args.quick else 'full'} run)", "",
        f"CPU {info['cpu']}, 1 torch thread; load average before {load_before[0]:.2f} / after {load_after[0]:.2f} "
        f"(shared with other agents); {total / 60:.1f} min; {seeds} seed(s). TinyTransformer {ARCH} on digits, "
        f"{epochs} epochs from scratch, {ft_epochs} fine-tuning epochs at lr {LR / 3:g}; nblocks {NBLOCKS}.", "",
        "## Claims", "", markdown_table(claims, ["claim", "measured", "verdict"]), "",
        "## Projection of the trained weights (seed 0; relative Frobenius error at equal kept weights)", "",
        markdown_table(proj, ["layer", "shape", "nblocks", "kept_fraction", "monarch", "magnitude", "low_rank"]), "",
        "## Dense-to-Monarch fine-tuning (test accuracy)", "",
        markdown_table(finetune, ["seed", "dense", "dense_plus_ft", "projected", "monarch_ft", "mean_projection_error",
                                  "params", "dense_params"]), "",
        "`dense_plus_ft`: the dense model fine-tuned for the same epochs (the fair reference).", "",
        f"## From scratch at equal parameters (unstructured sparsity {sparsity:.3f} on the same layers)", "",
        markdown_table(scratch_rows, ["model", "params", "acc_mean", "acc_std"]), "",
        "For the unstructured rows `params` counts kept weights (every dense parameter plus the nonzeros of the "
        "sparsified layers), equal to Monarch's.", "",
        "## Forward speed, MonarchLinear vs nn.Linear (batch 256, thread CPU time, min of interleaved rounds)", "",
        markdown_table(speed, ["shape", "nblocks", "weight_fraction", "dense_ms", "monarch_ms", "speedup"]), "",
        "Scale: a 2-layer d_model-64 transformer on 1437 digits images; the paper fine-tunes BERT on GLUE "
        "and trains ViT / GPT-2 on GPUs.",
    ]
    write_results(name, finetune, "\n".join(md), extra={"claims": claims, "projection": proj, "scratch": scratch_rows,
                                                         "speed": speed, "exact_errors": exact,
                                                         "load_before": load_before, "load_after": load_after})
    plot(proj, speed, RESULTS / f"{name}.png")


def plot(proj: list[dict[str, Any]], speed: list[dict[str, Any]], path: Any) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, color in (("monarch", "tab:blue"), ("magnitude", "tab:orange"), ("low_rank", "tab:green")):
        a.scatter([r["kept_fraction"] for r in proj], [r[key] for r in proj], label=key, color=color, s=14)
    a.set_xlabel("kept fraction of the weights")
    a.set_ylabel("relative projection error")
    a.set_title("trained transformer weights")
    a.legend()
    b.bar(range(len(speed)), [r["speedup"] for r in speed])
    b.axhline(1.0, color="grey", lw=0.8)
    b.set_xticks(range(len(speed)), [f"{r['shape']}\nb={r['nblocks']}" for r in speed], fontsize=7)
    b.set_ylabel("dense time / Monarch time")
    b.set_title("forward speed, 1 thread")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
