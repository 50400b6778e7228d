"""Sparse representations benchmark (one torch thread, about 2 minutes on an idle machine).

1. Activation sparsity (Lazy Neuron Phenomenon): share of exactly-zero ReLU outputs of an MLP and
   a ReLU patch transformer on digits, at init and after training; near-zero GELU outputs of a
   byte-level TinyTransformer LM on text; accuracy after top-k activation sparsity (no retraining).
2. Top-k attention on the trained LM over real text windows (T = 64): relative error of each
   attention layer's output vs k, with exact ranking and with Double Sparsity label channels, and
   the LM's eval loss.
3. A 4-expert MoE feed-forward in place of the dense one.

The SAE comparison (TopK, feature choice with uniform / Zipf capacities, mutual choice, aux_k and
aux_zipf) is its own benchmark, ``bench/sae.py``, on the residual stream of the LM trained here.

Run: ``.venv/bin/python bench/representations.py`` -> bench/results/representations.{json,md,png}.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, markdown_table, write_results  # noqa: E402
from sparsecraft.data import load_dataset  # noqa: E402
from sparsecraft.models import evaluate, evaluate_loss, model_for_data, train_classifier  # noqa: E402
from sparsecraft.models.transformer import FeedForward, SelfAttention  # noqa: E402
from sparsecraft.representations import (  # noqa: E402
    MoEFeedForward,
    TopKSelfAttention,
    calibrate_label_channels,
    measure_activation_sparsity,
    moe_aux_loss,
    sparsify_activations,
    sparsify_attention,
    use_moe,
)

SEQ = 64
TOPK_FRACTION = 0.1
N_TRAIN = 2400  # LM training windows (2 epochs)
SAE_STEPS = 1000


def activation_rows() -> list[dict]:
    """Exact-zero ReLU share at init and trained, for an MLP and a ReLU transformer on digits."""
    data = load_dataset("digits")
    rows = []
    for name in ("mlp", "transformer"):
        torch.manual_seed(0)
        kwargs = {"hidden": (256, 256)} if name == "mlp" else {"d_model": 64, "num_layers": 2}
        model = model_for_data(name, data, **kwargs)
        for module in model.modules():
            if isinstance(module, FeedForward):
                module.act = nn.ReLU()  # Lazy Neuron studies ReLU MLPs
        init = measure_activation_sparsity(model, data.test_x)
        train_classifier(model, data, epochs=15, lr=2e-3, progress=False, num_threads=1)
        trained = measure_activation_sparsity(model, data.test_x)
        dense_acc = evaluate(model, data.test_x, data.test_y)
        for a, b in zip(init, trained):
            rows.append({
                "section": "activations", "model": f"{name}-relu (digits)", "layer": a.name,
                "width": a.width, "zero_init": a.zero_fraction, "zero_trained": b.zero_fraction,
                "active_per_token": b.mean_active,
            })
        sparsify_activations(model, fraction=TOPK_FRACTION)
        rows.append({
            "section": "topk_activation", "model": f"{name}-relu (digits)", "fraction_kept": TOPK_FRACTION,
            "acc_dense": dense_acc, "acc_topk": evaluate(model, data.test_x, data.test_y),
        })
    return rows


def train_lm() -> tuple[nn.Module, object, list[dict]]:
    data = load_dataset("text", seq_len=SEQ)
    torch.manual_seed(0)
    model = model_for_data("transformer", data, d_model=64, num_heads=4, num_layers=2)
    test_x = data.test_x[:200]
    init = measure_activation_sparsity(model, test_x, eps=0.01)
    n = N_TRAIN
    train_classifier(model, (data.train_x[:n], data.train_y[:n]), epochs=2, lr=3e-3, progress=False, num_threads=1)
    trained = measure_activation_sparsity(model, test_x, eps=0.01)
    rows = [
        {
            "section": "activations", "model": "transformer-gelu LM (text), abs(a)<=0.01", "layer": a.name,
            "width": a.width, "zero_init": a.zero_fraction, "zero_trained": b.zero_fraction,
            "active_per_token": b.mean_active,
        }
        for a, b in zip(init, trained)
    ]
    return model, data, rows


@torch.no_grad()
def attention_rows(model: nn.Module, data) -> list[dict]:
    x, y = data.test_x[:200], data.test_y[:200]
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SelfAttention)]
    inputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs.__setitem__(n, a[0])) for n, m in layers]
    model.eval()
    dense_loss = evaluate_loss(model, x, y)
    model(x)
    for h in handles:
        h.remove()
    dense_out = {n: m(inputs[n]) for n, m in layers}
    gen = torch.Generator().manual_seed(0)
    heads, head_dim = layers[0][1].num_heads, layers[0][1].head_dim
    rankings = {
        "exact": None,
        "label r=4/16 (calibrated)": calibrate_label_channels(model, data.calib_x[:64], 4),
        "random r=4/16": {
            n: torch.stack([torch.randperm(head_dim, generator=gen)[:4].sort().values for _ in range(heads)])
            for n, _ in layers
        },
    }
    rows = []
    for ranking, channels in rankings.items():
        for k in (1, 2, 4, 8, 16, 32, 64):
            errs = []
            for n, m in layers:
                sparse = TopKSelfAttention.from_dense(m, k, channels[n] if channels else None)
                diff = sparse(inputs[n]) - dense_out[n]
                errs.append(float(diff.norm() / dense_out[n].norm()))
            lm = copy.deepcopy(model)
            sparsify_attention(lm, k, channels)
            rows.append({
                "section": "attention", "ranking": ranking,
                "k": k, "keys_fraction": k / SEQ, "rel_err": sum(errs) / len(errs),
                "loss_dense": dense_loss, "loss_sparse": evaluate_loss(lm, x, y),
            })
    return rows


def moe_rows(data, dense_loss: float, n_train: int) -> list[dict]:
    """TinyTransformer LM with 4-expert MoE feed-forwards (k = 1 and 2, experts as wide as the dense
    FFN divided by k: equal active FFN compute) trained like the dense LM, with the Switch aux loss."""
    rows = []
    x, y = data.train_x[:n_train], data.train_y[:n_train]
    for k in (1, 2):
        torch.manual_seed(0)
        model = model_for_data("transformer", data, d_model=64, num_heads=4, num_layers=2)
        use_moe(model, n_experts=4, k=k)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(2):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = order[i : i + 64]
                logits = model(x[idx])
                loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1))
                opt.zero_grad(set_to_none=True)
                (loss + 0.01 * moe_aux_loss(model)).backward()
                opt.step()
        train_s = time.perf_counter() - t0
        test_x, test_y = data.test_x[:200], data.test_y[:200]
        with torch.no_grad():
            model.eval()
            model(test_x)
        loads = [m.routing.load(m.n_experts).float() for m in model.modules() if isinstance(m, MoEFeedForward)]
        share = torch.stack([ld / ld.sum() for ld in loads])
        rows.append({
            "section": "moe", "experts": 4, "k": k, "loss_dense": dense_loss,
            "loss_moe": evaluate_loss(model, test_x, test_y),
            "aux_loss_per_layer": float(moe_aux_loss(model)) / len(loads),
            "max_expert_share": float(share.max()), "min_expert_share": float(share.min()),
            "train_s": train_s,
        })
    return rows


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, a = plt.subplots(1, 1, figsize=(5.5, 3.8))
    for ranking in ("exact", "label r=4/16 (calibrated)", "random r=4/16"):
        sel = [r for r in rows if r["section"] == "attention" and r["ranking"] == ranking]
        a.plot([r["k"] for r in sel], [r["rel_err"] for r in sel], marker="o", label=ranking)
    a.set_xscale("log", base=2)
    a.set_ylim(0, 1.1)
    a.set_xlabel("keys kept per query (k), T = 64")
    a.set_ylabel("relative L2 error of attention output")
    a.set_title("top-k attention, byte LM on text")
    a.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "representations.png", dpi=110)


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = activation_rows()
    model, data, lm_rows = train_lm()
    rows += lm_rows
    att_rows = attention_rows(model, data)
    rows += att_rows
    rows += moe_rows(data, att_rows[0]["loss_dense"], N_TRAIN)
    act = [r for r in rows if r["section"] == "activations"]
    tka = [r for r in rows if r["section"] == "topk_activation"]
    att = [r for r in rows if r["section"] == "attention"]
    moe = [r for r in rows if r["section"] == "moe"]
    md = "\n\n".join([
        "# Sparse representations (one torch thread)",
        "## Activation sparsity (share of zero activations on test inputs)",
        markdown_table(act, ["model", "layer", "width", "zero_init", "zero_trained", "active_per_token"]),
        f"Top-k activation (keep {TOPK_FRACTION:.0%} per token, no retraining):",
        markdown_table(tka, ["model", "fraction_kept", "acc_dense", "acc_topk"]),
        "## Top-k attention (T = 64, 200 text windows; error averaged over layers)",
        markdown_table(att, ["ranking", "k", "keys_fraction", "rel_err", "loss_dense", "loss_sparse"]),
        "## MoE feed-forward (4 experts, same data and epochs as the dense LM, aux weight 0.01)",
        markdown_table(moe, ["experts", "k", "loss_dense", "loss_moe", "aux_loss_per_layer", "max_expert_share",
                             "min_expert_share", "train_s"]),
        "SAEs: see [sae.md](sae.md) (`bench/sae.py`).",
        "![](representations.png)",
    ])
    elapsed = time.perf_counter() - start
    write_results("representations", rows, md, {"runtime_s": elapsed})
    plot(rows)
    print(md)
    print(f"runtime {elapsed:.0f} s")


if __name__ == "__main__":
    main()
