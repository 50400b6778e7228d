"""Sparse architecture search benchmark: DASS (Mousavi et al. 2022) vs DARTS-then-prune vs random search
(Rahul et al. 2021), on the digits images.

One tiny cell space (2 cells of 2 nodes, 8 channels, hidden Linear 32; operations none / skip /
avg_pool_3 / max_pool_3 / conv_3 / conv_5, plus sparse_conv_3 / sparse_conv_5 / sparse_linear for
DASS and random search). Target sparsity 0.95 of the cell and hidden weights.

* DASS: first-order DARTS over the sparse space with the sparsity-aware objective.
* DARTS: the dense space, plain validation loss (the architecture designed for dense networks).
* Random search: candidates from the sparse space, each trained briefly while pruned to 0.95, at
  the DASS search's training MAC budget (3x forward MACs per example seen).

Search on 80% of the training split (weights) and 20% (architecture / candidate choice); every found
architecture is then trained from scratch on the whole training split while pruned to 0.95 (global
gradual magnitude pruning, the same for all), test accuracy over seeds. Also the random-search
paper's own question: does the best random-search candidate beat the first random one?

    .venv/bin/python -m bench.nas            # ~10 min on the shared 2-core machine
    .venv/bin/python -m bench.nas --quick

Writes bench/results/nas{.json,.md,.png} (or nas_quick.*).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results

SPACE = {"channels": 8, "cells": 2, "nodes": 2, "hidden": 32}
SPARSITY = 0.95


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=2, help="final-training seeds per architecture")
    args = p.parse_args()
    torch.set_num_threads(1)
    from sparsecraft.architectures import (
        DENSE_SPACE,
        Architecture,
        CellNet,
        SearchSpace,
        differentiable_search,
        random_search,
        train_pruned,
    )
    from sparsecraft.data import load_dataset
    from sparsecraft.training import evaluate

    name = "nas_quick" if args.quick else "nas"
    search_epochs, final_epochs, candidates = (1, 3, 3) if args.quick else (4, 10, 6)
    seeds = 1 if args.quick else args.seeds
    load_before, start = os.getloadavg(), time.perf_counter()
    search_seconds: dict[str, float] = {}
    data = load_dataset("digits")
    n = int(0.8 * len(data.train_x))
    train, val = (data.train_x[:n], data.train_y[:n]), (data.train_x[n:], data.train_y[n:])
    sparse_space = SearchSpace(sparsity=SPARSITY, **SPACE)
    dense_space = SearchSpace(operations=DENSE_SPACE, fc_choices=("linear",), sparsity=SPARSITY, **SPACE)

    searches: dict[str, Any] = {}
    runs = {
        "DASS": lambda: differentiable_search(sparse_space, train, val, epochs=search_epochs, sparsity_weight=1.0),
        "DARTS, then pruned": lambda: differentiable_search(dense_space, train, val, epochs=search_epochs,
                                                            sparsity_weight=0.0),
        "random search": lambda: random_search(sparse_space, train, val, searches["DASS"].budget_macs,
                                               candidates=candidates),
    }
    for label, run in runs.items():
        t0 = time.perf_counter()
        searches[label] = run()
        search_seconds[label] = time.perf_counter() - t0
    first = searches["random search"].history[0]["architecture"]
    for k, v in searches.items():
        print(k, v.architecture, f"{v.budget_macs:.3g}", flush=True)

    def parse(text: str) -> Architecture:
        *cells, fc = text.split(" | ")
        return Architecture(tuple(tuple(c.split(",")) for c in cells), fc.removeprefix("fc="))

    finals = {k: (v.architecture, sparse_space if k != "DARTS, then pruned" else dense_space)
              for k, v in searches.items()}
    finals["first random candidate (no search)"] = (parse(first), sparse_space)
    rows = []
    for label, (arch, space) in finals.items():
        accs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            net = train_pruned(CellNet(space, arch), data, SPARSITY, final_epochs, seed=seed)
            accs.append(evaluate(net, data.test_x, data.test_y))
        search = searches.get(label)
        rows.append({"method": label, "architecture": str(arch), "acc_mean": statistics.mean(accs),
                     "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accs": accs,
                     "search_gmacs": search.budget_macs / 1e9 if search else 0.0,
                     "search_s": search_seconds.get(label, 0.0)})
        print(rows[-1], flush=True)
    load_after, total = os.getloadavg(), time.perf_counter() - start

    by = {r["method"]: r for r in rows}
    dass, darts, rs = by["DASS"], by["DARTS, then pruned"], by["random search"]
    rand = by["first random candidate (no search)"]
    fmt = lambda r: f"{r['acc_mean']:.3f}±{r['acc_std']:.3f}"  # noqa: E731
    claims = [
        {"claim": f"DASS's architecture, pruned to {SPARSITY}, beats the DARTS (dense-searched) one pruned the same",
         "measured": f"{fmt(dass)} vs {fmt(darts)}",
         "verdict": "held" if dass["acc_mean"] > darts["acc_mean"] else "not held"},
        {"claim": "DASS beats random search at the same search budget (training MACs)",
         "measured": f"{fmt(dass)} vs {fmt(rs)} (random search spent {rs['search_gmacs']:.0f} vs "
                     f"{dass['search_gmacs']:.0f} GMACs)",
         "verdict": "held" if dass["acc_mean"] > rs["acc_mean"] else "not held"},
        {"claim": "random-search paper: the best random-search configuration does not beat a random one",
         "measured": f"{fmt(rs)} vs first candidate {fmt(rand)}",
         "verdict": "held" if rs["acc_mean"] <= rand["acc_mean"] + max(rs["acc_std"], rand["acc_std"], 0.005)
         else "not held"},
    ]
    info = machine_info()
    md = [
        f"# Sparse architecture search ({'quick' if args.quick else 'full'} run)", "",
        f"CPU {info['cpu']}, 1 torch thread; load average before {load_before[0]:.2f} / after {load_after[0]:.2f} "
        f"(shared with other agents); {total / 60:.1f} min. Digits, space {SPACE}, target sparsity {SPARSITY}; "
        f"{search_epochs} search epochs (one search seed), {candidates} random-search candidates, final training "
        f"{final_epochs} epochs with global gradual magnitude pruning to {SPARSITY}, {seeds} seed(s).", "",
        "## Claims", "", markdown_table(claims, ["claim", "measured", "verdict"]), "",
        "## Final networks (test accuracy at sparsity 0.95)", "",
        markdown_table(rows, ["method", "architecture", "acc_mean", "acc_std", "search_gmacs", "search_s"]), "",
        "## DASS search trajectory", "",
        markdown_table(searches["DASS"].history, ["epoch", "expected_density", "architecture"]), "",
        "## Random-search candidates (short training at 0.95)", "",
        markdown_table(searches["random search"].history, ["candidate", "architecture", "epochs", "val_acc"]), "",
        "Scale: one search per method on 8x8 digits (the paper searches on CIFAR-10); a single search seed, "
        "so the search's own variance is not measured. `search_s` is wall time on the shared machine.",
    ]
    write_results(name, rows, "\n".join(md), extra={
        "claims": claims, "dass_history": searches["DASS"].history,
        "random_search_history": searches["random search"].history,
        "darts_history": searches["DARTS, then pruned"].history,
        "load_before": load_before, "load_after": load_after})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(len(rows)), [r["acc_mean"] for r in rows], yerr=[r["acc_std"] for r in rows],
           color=["tab:blue", "tab:orange", "tab:green", "grey"])
    ax.set_xticks(range(len(rows)), [r["method"].replace(", ", ",\n").replace(" (", "\n(") for r in rows], fontsize=7)
    lo = min(r["acc_mean"] for r in rows)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel(f"test accuracy at sparsity {SPARSITY}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
