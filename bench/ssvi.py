"""Sparse Subspace Variational Inference (Li et al. 2024) at small scale.

Per dataset (digits, MNIST-1D) and seed, an MLP (hidden 128, 128) is trained as: a deterministic net
(cross-entropy), a dense mean-field BNN (negative ELBO, reparameterisation trick), and SSVI at 90% and
95% sparsity (ERK subspace, SNR removal and gradient addition; at 90% also |mu| removal), all with
AdamW lr 3e-3, batch 64, the same epochs. Test accuracy, NLL and ECE (15 bins) of the Monte-Carlo
predictive (32 samples; the deterministic net's softmax).

Run: ``python -m bench.ssvi`` (about 10-15 min on a busy 2-core machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results
from sparsecraft.bayes import SSVI, BayesMLP, predict, predictive_metrics, train_bayes
from sparsecraft.data import load_dataset
from sparsecraft.models.mlp import MLP
from sparsecraft.training import SparsityConfig, fit

EPOCHS = {"digits": 30, "mnist1d": 20}
CAVEAT = ("Caveat: the second claim holds only through ECE on MNIST-1D at 95%, where accuracy is far below "
          "dense VI, so a lower ECE there says little. On MNIST-1D (40 inputs) a 90-95% sparse MLP of this "
          "width loses much of its capacity at this training length; the paper's models are far wider.")
CONFIGS = (("deterministic", None, None), ("dense BNN", None, None), ("SSVI", 0.9, "snr"),
           ("SSVI", 0.9, "magnitude"), ("SSVI", 0.95, "snr"))


def _one(data: Any, kind: str, sparsity: float | None, remove: str | None, seed: int) -> dict[str, float]:
    n_in = int(torch.tensor(data.input_shape).prod())
    epochs = EPOCHS[data.name]
    torch.manual_seed(seed)
    if kind == "deterministic":
        model = MLP(n_in, data.num_classes, hidden=(128, 128))
        fit(model, data, None, epochs=epochs, batch_size=64, lr=3e-3, seed=seed, progress=False)
        kept = 1.0
    else:
        model = BayesMLP(n_in, data.num_classes, hidden=(128, 128))
        updater = None if sparsity is None else SSVI(SparsityConfig(sparsity, allocation="erk"), seed=seed,
                                                     remove=remove)
        train_bayes(model, data, updater, epochs=epochs, batch_size=64, lr=3e-3, seed=seed)
        kept = 1.0 if updater is None else 1.0 - updater.sparsity()
    torch.manual_seed(1000 + seed)
    return {**predictive_metrics(predict(model, data.test_x, samples=32), data.test_y), "density": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds on digits")
    parser.add_argument("--mnist1d-seeds", type=int, default=1, help="seeds on MNIST-1D (slower)")
    args = parser.parse_args()
    seeds = {"digits": args.seeds, "mnist1d": args.mnist1d_seeds}
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    for name in EPOCHS:
        data = load_dataset(name)
        for kind, sparsity, remove in CONFIGS:
            runs = [_one(data, kind, sparsity, remove, s) for s in range(seeds[name])]
            label = kind if sparsity is None else f"SSVI {sparsity:.0%} {remove}"
            row: dict[str, Any] = {"dataset": name, "model": label, "sparsity": sparsity or 0.0}
            for key in ("accuracy", "nll", "ece", "entropy", "density"):
                row[key] = statistics.mean(r[key] for r in runs)
            row["accuracy_std"] = statistics.pstdev(r["accuracy"] for r in runs)
            rows.append(row)
            print(name, label, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)},
                  f"{time.time() - t0:.0f}s", flush=True)
    elapsed = time.time() - t0
    load_after = os.getloadavg()
    claims = _claims(rows)
    md = ["# Sparse subspace variational inference", "",
          f"Li et al. 2024 at small scale: MLP 128-128, epochs {EPOCHS}, seeds {seeds} (mean; accuracy std over "
          "seeds), AdamW lr 3e-3, batch 64; BNNs: mean-field Gaussian, prior N(0, 1), initial sigma 0.01, "
          "full ELBO (KL / N); SSVI: ERK subspace of fixed size, cosine-decayed removal fraction 0.3 every "
          "1/20 of training until 75%, addition by dense |grad mu|. Predictive: 32 Monte-Carlo samples. "
          "ECE with 15 equal-width bins.", "",
          f"Machine: {machine_info()['cpu']}, 1 torch thread; load average before {load_before[0]:.1f}, after "
          f"{load_after[0]:.1f} (shared with other agents; no timings reported). Run time {elapsed / 60:.1f} min.", "",
          "## Claims", "", markdown_table(claims, ["claim", "measured", "verdict"]), "", CAVEAT, "", "## Results", "",
          markdown_table(rows, ["dataset", "model", "density", "accuracy", "accuracy_std", "nll", "ece", "entropy"]),
          "", "![accuracy and ECE](ssvi.png)"]
    _plot(rows)
    write_results("ssvi", rows, "\n".join(md), extra={"claims": claims, "loadavg_before": load_before,
                                                      "loadavg_after": load_after, "elapsed_s": elapsed,
                                                      "seeds": seeds, "epochs": EPOCHS})


def _claims(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    def get(name: str, model: str) -> dict[str, Any]:
        return next(r for r in rows if r["dataset"] == name and r["model"] == model)

    drop, beat, calib = [], [], []
    held_drop, held_beat, held_calib = [], [], []
    for name in EPOCHS:
        dense, det = get(name, "dense BNN"), get(name, "deterministic")
        for s in (0.9, 0.95):
            ssvi = get(name, f"SSVI {s:.0%} snr")
            d = dense["accuracy"] - ssvi["accuracy"]
            drop.append(f"{name} {s:.0%}: {ssvi['accuracy']:.3f} vs {dense['accuracy']:.3f} (drop {d * 100:.1f} pts)")
            held_drop.append(d < 0.03)
            better = [k for k in ("accuracy", "nll", "ece")
                      if (ssvi[k] > dense[k] if k == "accuracy" else ssvi[k] < dense[k])]
            beat.append(f"{name} {s:.0%}: better on {', '.join(better) or 'none'}")
            held_beat.append(bool(better))
            calib.append(f"{name} {s:.0%}: ECE {ssvi['ece']:.3f} vs {det['ece']:.3f}, NLL {ssvi['nll']:.3f} vs "
                         f"{det['nll']:.3f}")
            held_calib.append(ssvi["ece"] < det["ece"] and ssvi["nll"] < det["nll"])
    return [{"claim": "SSVI at 90-95% sparsity (10-20x smaller) loses under 3 points of accuracy vs dense VI",
             "measured": "; ".join(drop), "verdict": _verdict(held_drop)},
            {"claim": "SSVI occasionally beats dense VI on accuracy or uncertainty (NLL, ECE)",
             "measured": "; ".join(beat), "verdict": "held" if any(held_beat) else "not held"},
            {"claim": "SSVI is better calibrated than the deterministic net (ECE and NLL)",
             "measured": "; ".join(calib), "verdict": _verdict(held_calib)}]


def _verdict(held: list[bool]) -> str:
    return "held" if all(held) else "not held" if not any(held) else f"mixed ({sum(held)}/{len(held)} cells)"


def _plot(rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes, ("accuracy", "nll", "ece")):
        for i, name in enumerate(EPOCHS):
            rs = [r for r in rows if r["dataset"] == name]
            ax.bar([j + 0.4 * i for j in range(len(rs))], [r[key] for r in rs], width=0.4, label=name)
            ax.set_xticks([j + 0.2 for j in range(len(rs))], [r["model"] for r in rs], rotation=30, fontsize=7)
        ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "ssvi.png", dpi=110)


if __name__ == "__main__":
    main()
