"""Continual learning with dynamic sparse training (Yildirim et al. 2023) at small scale.

Digits and MNIST-1D split into 5 tasks of 2 classes; an MLP (hidden 128, 128) learns them in order.
Task-incremental: per-task RigL subnetworks (parameter isolation, :mod:`sparsecraft.training.continual`)
with ERK or uniform allocation and random / gradient / momentum growth, at a low (80%) and a high
(95%) per-task sparsity, vs dense fine-tuning. Class-incremental: the same at 80% vs fine-tuning.
Every configuration runs over 3 seeds; the tables give mean and std of the final average accuracy
and the average forgetting.

Run: ``python -m bench.continual`` (about 10-15 min on a busy 2-core machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results
from sparsecraft.data import load_dataset
from sparsecraft.models.mlp import MLP
from sparsecraft.training.continual import split_tasks, train_continual

DATASETS = {"digits": 10, "mnist1d": 5}          # epochs per task
SPARSITIES = (0.8, 0.95)
ALLOCATIONS = ("erk", "uniform")
GROWTHS = ("random", "gradient", "momentum")


def _run(data: Any, epochs: int, scenario: str, seed: int, **kw: Any) -> dict[str, float]:
    torch.manual_seed(seed)
    model = MLP(int(torch.tensor(data.input_shape).prod()), data.num_classes, hidden=(128, 128))
    r = train_continual(model, split_tasks(data, 5), scenario=scenario, epochs=epochs, batch_size=32, lr=3e-3,
                        seed=seed, **kw)
    return {"avg_acc": r.average_accuracy, "forgetting": r.forgetting, "used_density": r.used_density,
            "final_row": r.accuracy[-1]}


def _configs(scenario: str) -> list[dict[str, Any]]:
    out = [{"method": "finetune"}]
    sparsities = SPARSITIES if scenario == "task" else SPARSITIES[:1]
    for s in sparsities:
        for alloc in ALLOCATIONS:
            for grow in GROWTHS if scenario == "task" else ("gradient",):
                out.append({"method": "rigl", "sparsity": s, "allocation": alloc, "grow": grow})
    return out


def _label(cfg: dict[str, Any]) -> str:
    if cfg["method"] == "finetune":
        return "dense finetune"
    return f"rigl {cfg['allocation']} {cfg['grow']} {cfg['sparsity']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    for name, epochs in DATASETS.items():
        data = load_dataset(name)
        for scenario in ("task", "class"):
            for cfg in _configs(scenario):
                runs = [_run(data, epochs, scenario, seed, **cfg) for seed in range(args.seeds)]
                acc = [r["avg_acc"] for r in runs]
                fgt = [r["forgetting"] for r in runs]
                rows.append({"dataset": name, "scenario": scenario, "config": _label(cfg), **cfg,
                             "avg_acc": statistics.mean(acc), "avg_acc_std": statistics.pstdev(acc),
                             "forgetting": statistics.mean(fgt), "forgetting_std": statistics.pstdev(fgt),
                             "used_density": statistics.mean(r["used_density"] for r in runs),
                             "per_seed_avg_acc": acc})
                print(name, scenario, _label(cfg), f"{rows[-1]['avg_acc']:.3f} +- {rows[-1]['avg_acc_std']:.3f}",
                      f"forgetting {rows[-1]['forgetting']:.3f}", flush=True)
    elapsed = time.time() - t0
    load_after = os.getloadavg()
    claims = _claims(rows)
    md = ["# Continual learning with dynamic sparse training", "",
          "Yildirim et al. 2023 at small scale: digits / MNIST-1D, 5 tasks x 2 classes, MLP 128-128, "
          f"{args.seeds} seeds (mean +- std), epochs per task {DATASETS}, AdamW lr 3e-3, batch 32. "
          "Each task's RigL subnetwork has the given sparsity of every layer; earlier tasks' weights are "
          "frozen (parameter isolation). Free capacity: 5 x 20% = 100% at 80%, 25% at 95%.", "",
          f"Machine: {machine_info()['cpu']}, 1 torch thread; load average before "
          f"{load_before[0]:.1f}, after {load_after[0]:.1f} (shared with other agents; no timings are reported). "
          f"Run time {elapsed / 60:.1f} min.", "", "## Claims", "",
          markdown_table(claims, ["claim", "measured", "verdict"]), ""]
    for scenario in ("task", "class"):
        md += [f"## {scenario}-incremental", "",
               markdown_table([r for r in rows if r["scenario"] == scenario],
                              ["dataset", "config", "avg_acc", "avg_acc_std", "forgetting", "forgetting_std",
                               "used_density"]), ""]
    md += ["Task-incremental DST has zero forgetting by construction (frozen weights, later tasks' weights "
           "masked out when an earlier task is evaluated); the question there is how much each new task "
           "can still learn. Class-incremental has no task id: the shared hidden units change with every "
           "subnetwork and the single head favours the newest classes, so isolation alone does not stop "
           "forgetting.", ""]
    _plot(rows)
    md += ["![avg accuracy](continual.png)"]
    write_results("continual", rows, "\n".join(md),
                  extra={"claims": claims, "loadavg_before": load_before, "loadavg_after": load_after,
                         "elapsed_s": elapsed, "seeds": args.seeds, "epochs": DATASETS})


def _mean(rows: list[dict[str, Any]], key: str = "avg_acc") -> float:
    return statistics.mean(r[key] for r in rows)


def _claims(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    task = [r for r in rows if r["scenario"] == "task" and r["method"] == "rigl"]
    out = []
    for s, text, better in ((0.8, "at low sparsity ERK beats uniform allocation", "erk"),
                            (0.95, "at high sparsity uniform is more reliable than ERK", "uniform")):
        parts, held = [], []
        for name in DATASETS:
            cell = {a: [r for r in task if r["dataset"] == name and r["sparsity"] == s and r["allocation"] == a]
                    for a in ALLOCATIONS}
            m = {a: _mean(cell[a]) for a in ALLOCATIONS}
            spread = {a: statistics.pstdev([v for r in cell[a] for v in r["per_seed_avg_acc"]]) for a in ALLOCATIONS}
            parts.append(f"{name}: erk {m['erk']:.3f} (std {spread['erk']:.3f}) vs uniform {m['uniform']:.3f} "
                         f"(std {spread['uniform']:.3f})")
            other = "uniform" if better == "erk" else "erk"
            held.append(m[better] >= m[other])
        out.append({"claim": f"{text} (avg accuracy, task-incremental, mean over growth criteria and seeds)",
                    "measured": "; ".join(parts), "verdict": _verdict(held)})
    best = {}
    for name in DATASETS:
        for s in SPARSITIES:
            for a in ALLOCATIONS:
                cell = [r for r in task if r["dataset"] == name and r["sparsity"] == s and r["allocation"] == a]
                best[(name, s, a)] = max(cell, key=lambda r: r["avg_acc"])["grow"]
    winners = {name: {best[k] for k in best if k[0] == name} for name in DATASETS}
    out.append({"claim": "the best growth criterion depends on the initialisation and the sparsity",
                "measured": "; ".join(f"{k[0]} {k[2]} {k[1]:.2f}: {v}" for k, v in best.items()),
                "verdict": _verdict([len(w) > 1 for w in winners.values()])})
    for scenario in ("task", "class"):
        parts, held = [], []
        for name in DATASETS:
            here = [r for r in rows if r["dataset"] == name and r["scenario"] == scenario]
            ft = [r for r in here if r["method"] == "finetune"][0]
            dst = [r for r in here if r["method"] == "rigl" and r["sparsity"] == 0.8]
            top = max(dst, key=lambda r: r["avg_acc"])
            parts.append(f"{name}: finetune acc {ft['avg_acc']:.3f} / forgetting {ft['forgetting']:.3f}; best DST "
                         f"({top['config']}) {top['avg_acc']:.3f} / {top['forgetting']:.3f}")
            held.append(top["avg_acc"] > ft["avg_acc"] and top["forgetting"] < ft["forgetting"])
        out.append({"claim": f"{scenario}-incremental: sparse isolated subnetworks forget less and end with higher "
                             "average accuracy than dense fine-tuning", "measured": "; ".join(parts),
                    "verdict": _verdict(held)})
    return out


def _verdict(held: list[bool]) -> str:
    return "held" if all(held) else "not held" if not any(held) else "mixed (held on some datasets)"


def _plot(rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(6 * len(DATASETS), 4))
    for ax, name in zip(axes, DATASETS):
        task = [r for r in rows if r["dataset"] == name and r["scenario"] == "task"]
        ft = [r for r in task if r["method"] == "finetune"][0]
        labels, vals, errs = ["finetune"], [ft["avg_acc"]], [ft["avg_acc_std"]]
        for r in task:
            if r["method"] == "rigl":
                labels.append(f"{r['allocation']}/{r['grow'][:4]}/{r['sparsity']:.2f}")
                vals.append(r["avg_acc"])
                errs.append(r["avg_acc_std"])
        ax.bar(range(len(vals)), vals, yerr=errs, color=["grey"] + ["C0" if "erk" in s else "C1" for s in labels[1:]])
        ax.set_xticks(range(len(vals)), labels, rotation=70, fontsize=7)
        ax.set_ylim(min(vals) - 0.05, 1.0)
        ax.set_title(f"{name}: task-incremental average accuracy")
    fig.tight_layout()
    fig.savefig(RESULTS / "continual.png", dpi=110)


if __name__ == "__main__":
    main()
