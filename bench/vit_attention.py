"""Sparsifiner benchmark: instance-dependent sparse attention vs dense and vs fixed local windows.

Wei et al. 2023 ("Sparsifiner: Learning Sparse Instance-Dependent Attention for Efficient Vision
Transformers") claim that a low-rank connectivity predictor cuts 48-69% of the multi-head
self-attention (MHSA) FLOPs with an accuracy drop within 0.4% on ImageNet, and beats fixed local
attention patterns at the same budget.

Here (one torch thread, small scale): a TinyViT on sklearn digits (8x8 upsampled to 16x16, 2x2
patches: 64 tokens; d=32, 4 heads, 2 layers) trained densely, then, from those weights, fine-tuned
for ``FT_EPOCHS`` epochs with the dense model as teacher:

* Sparsifiner: rank-``RANK`` connectivity predictor per layer and head, top-B keys per query,
  loss ``L_cls + L_distill + L_conn + 0.01 L_sparse``;
* fixed local windows: each patch's B nearest patches, loss ``L_cls + L_distill``;
* dense, fine-tuned the same number of epochs with ``L_cls + L_distill`` (the control).

Attention cost is counted in multiply-accumulates per image (``attention_macs``), not timed.

Run: ``.venv/bin/python -m bench.vit_attention`` -> bench/results/vit_attention.{json,md,png}.
"""
from __future__ import annotations

import copy
import os
import time

import torch

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results
from sparsecraft.data import load_dataset
from sparsecraft.models import evaluate, model_for_data, train_classifier
from sparsecraft.representations import (
    attention_macs,
    kept_teacher_mass,
    train_sparse_attention,
    use_local_windows,
    use_sparsifiner,
)

DENSE_EPOCHS = 25
FT_EPOCHS = 6
RANK = 2
BUDGETS = (4, 8, 16)
VIT = {"d_model": 32, "num_heads": 4, "num_layers": 2, "mlp_ratio": 2, "upsample": 2, "patch_size": 2}


def row(method: str, budget: int | None, model, teacher, data, macs: dict, dense_macs: dict, t0: float) -> dict:
    out = {
        "method": method, "keys_per_query": budget if budget is not None else model.num_tokens,
        "tokens": model.num_tokens, "accuracy": evaluate(model, data.test_x, data.test_y),
        "attention_macs": macs["attention"], "predictor_macs": macs["predictor"], "mhsa_macs": macs["mhsa"],
        "mhsa_macs_saved": 1 - macs["mhsa"] / dense_macs["mhsa"],
        "attn_macs_saved": 1 - (macs["attention"] + macs["predictor"]) / dense_macs["attention"],
        "teacher_mass_kept": kept_teacher_mass(model, teacher, data.test_x) if budget is not None else 1.0,
        "train_s": time.perf_counter() - t0,
    }
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}, flush=True)
    return out


def main() -> None:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    start = time.perf_counter()
    data = load_dataset("digits")
    torch.manual_seed(0)
    teacher = model_for_data("vit", data, **VIT)
    t0 = time.perf_counter()
    train_classifier(teacher, data, epochs=DENSE_EPOCHS, lr=2e-3, progress=False, num_threads=1)
    dense_macs = attention_macs(teacher)
    rows = [row("dense (teacher)", None, teacher, teacher, data, dense_macs, dense_macs, t0)]
    t0 = time.perf_counter()
    control = copy.deepcopy(teacher)
    train_sparse_attention(control, teacher, data.train_x, data.train_y, epochs=FT_EPOCHS, lr=1e-3)
    rows.append(row("dense + same fine-tuning", None, control, teacher, data, dense_macs, dense_macs, t0))
    for budget in BUDGETS:
        t0 = time.perf_counter()
        student = copy.deepcopy(teacher)
        use_sparsifiner(student, budget, rank=RANK)
        train_sparse_attention(student, teacher, data.train_x, data.train_y, epochs=FT_EPOCHS, lr=1e-3)
        rows.append(row(f"Sparsifiner r={RANK}", budget, student, teacher, data,
                        attention_macs(student, budget, RANK), dense_macs, t0))
        t0 = time.perf_counter()
        local = copy.deepcopy(teacher)
        use_local_windows(local, budget)
        train_sparse_attention(local, teacher, data.train_x, data.train_y, epochs=FT_EPOCHS, lr=1e-3)
        rows.append(row("local window", budget, local, teacher, data, attention_macs(local, budget), dense_macs, t0))
    claim_rows = claims(rows)
    elapsed = time.perf_counter() - start
    load_after = os.getloadavg()
    info = machine_info()
    md = "\n\n".join([
        "# Sparsifiner: learned instance-dependent sparse attention on a tiny ViT (digits)",
        f"CPU: {info['cpu']}, one torch thread; load average before {load_before[0]:.1f}, after "
        f"{load_after[0]:.1f} (shared machine: train_s is indicative only). Scale: TinyViT {VIT} on 8x8 digits "
        f"(64 patches), dense training {DENSE_EPOCHS} epochs, every variant fine-tuned {FT_EPOCHS} epochs from the "
        "dense weights with the dense model as teacher. MACs per image summed over the attention layers; "
        "mhsa = q/k/v/out projections + attention (+ predictor); attn_macs_saved compares QK^T + AV (+ predictor) "
        "with dense QK^T + AV. teacher_mass_kept: share of the dense teacher's attention probability on the "
        "kept keys. Accuracy on the 360 test images (1 image = 0.28%).",
        "## Claims",
        markdown_table(claim_rows, ["claim", "measured", "verdict"]),
        "## Runs",
        markdown_table(rows, ["method", "keys_per_query", "accuracy", "attention_macs", "predictor_macs",
                              "mhsa_macs", "mhsa_macs_saved", "attn_macs_saved", "teacher_mass_kept", "train_s"]),
        "![](vit_attention.png)",
        f"Runtime {elapsed:.0f} s.",
    ])
    write_results("vit_attention", rows + [{"section": "claim", **c} for c in claim_rows], md,
                  {"runtime_s": elapsed, "load_before": load_before, "load_after": load_after})
    plot(rows)
    print(md)


def claims(rows: list[dict]) -> list[dict]:
    control = next(r for r in rows if r["method"] == "dense + same fine-tuning")
    out = []
    for budget in BUDGETS:
        sp = next(r for r in rows if r["method"].startswith("Sparsifiner") and r["keys_per_query"] == budget)
        lw = next(r for r in rows if r["method"] == "local window" and r["keys_per_query"] == budget)
        drop = control["accuracy"] - sp["accuracy"]
        out.append({
            "claim": f"B={budget}/64: MHSA MACs cut 48-69% with accuracy drop <= 0.4% vs dense",
            "measured": f"MHSA MACs -{sp['mhsa_macs_saved']:.0%} (attention part -{sp['attn_macs_saved']:.0%}), "
                        f"accuracy {sp['accuracy']:.3f} vs dense {control['accuracy']:.3f} (drop {drop:+.3f})",
            "verdict": "held" if drop <= 0.004 and sp["mhsa_macs_saved"] >= 0.48 else
                       ("accuracy held, MACs cut smaller" if drop <= 0.004 else "not held"),
        })
        out.append({
            "claim": f"B={budget}/64: learned instance-dependent mask beats fixed local windows",
            "measured": f"accuracy {sp['accuracy']:.3f} vs {lw['accuracy']:.3f}; teacher attention kept "
                        f"{sp['teacher_mass_kept']:.2f} vs {lw['teacher_mass_kept']:.2f}",
            "verdict": "held" if sp["accuracy"] > lw["accuracy"] else
                       ("tie" if sp["accuracy"] == lw["accuracy"] else "not held"),
        })
    return out


def plot(rows: list[dict]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, marker in (("Sparsifiner", "o"), ("local window", "s")):
        sel = [r for r in rows if r["method"].startswith(method)]
        ax.plot([r["mhsa_macs"] / 1e3 for r in sel], [r["accuracy"] for r in sel], marker=marker, label=method)
        for r in sel:
            ax.annotate(f"B={r['keys_per_query']}", (r["mhsa_macs"] / 1e3, r["accuracy"]), fontsize=7)
    for r in rows:
        if r["keys_per_query"] == r["tokens"]:
            ax.scatter([r["mhsa_macs"] / 1e3], [r["accuracy"]], marker="*", s=90, label=r["method"])
    ax.set_xlabel("MHSA kMACs per image")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title("sparse attention on a 64-patch TinyViT")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "vit_attention.png", dpi=110)


if __name__ == "__main__":
    main()
