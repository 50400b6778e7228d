"""Post-training pruning benchmark (not a test): MiniLM and a tiny decoder LM.

1. all-MiniLM-L6-v2, every method (magnitude, Wanda, SparseGPT, OWL-Wanda, OWL-SparseGPT) at
   0.5/0.6/0.7/0.8 unstructured, 2:4 and 4:8, 128 calibration paragraphs: mean cosine similarity
   of sentence embeddings vs dense, top-10 neighbour agreement on the eval paragraphs, per-layer
   relative reconstruction error, wall time (ratios against magnitude in the same run);
2. essential-sparsity sweep (one-shot layer-wise magnitude 0..95%, knee found automatically);
3. SquareHead distillation vs output distillation vs no fine-tuning, masks fixed;
4. the tiny decoder LM (trained in-project, cached): held-out perplexity before/after pruning.

    .venv/bin/python -m bench.posttrain           # full run, ~15 min on 2 idle cores
    .venv/bin/python -m bench.posttrain --quick   # smoke run: few samples and configs

Writes bench/results/posttrain{.json,.md,_methods.png,_essential.png,_squarehead.png}.
"""
from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch

from bench.common import RESULTS, markdown_table, write_results

UNSTRUCTURED = (0.5, 0.6, 0.7, 0.8)
NM_PATTERNS = ("2:4", "4:8")
BASE_METHODS = ("magnitude", "wanda", "sparsegpt")
OWL_METHODS = ("owl-wanda", "owl-sparsegpt")


def configs(quick: bool) -> list[tuple[str, str, float]]:
    """(method, pattern, sparsity) grid; OWL only unstructured (N:M fixes every layer's density)."""
    sparsities = (0.5, 0.7) if quick else UNSTRUCTURED
    grid = [(m, "unstructured", s) for m in BASE_METHODS + OWL_METHODS for s in sparsities]
    grid += [(m, p, 0.5) for m in BASE_METHODS for p in NM_PATTERNS[: 1 if quick else 2]]
    return grid


class MiniLM:
    """Dense MiniLM, its calibration/eval/train batches and dense eval embeddings."""

    def __init__(self, calib: int, seq_len: int, eval_samples: int) -> None:
        from sparsecraft.data import load_text
        from sparsecraft.models.hf import load_pretrained
        from sparsecraft.posttrain.hf import encode
        from sparsecraft.posttrain.metrics import sentence_embeddings

        self.dense, tok = load_pretrained("minilm")
        text = load_text(0)
        self.calib = encode(tok, text.calibration[:calib], seq_len, by_length=True)
        self.eval = encode(tok, text.eval[: eval_samples or None], seq_len, by_length=True)
        self.train = encode(tok, text.train, seq_len, batch_size=16)
        self.dense_emb = sentence_embeddings(self.dense, self.eval)

    def metrics(self, model: torch.nn.Module) -> dict[str, float]:
        from sparsecraft.posttrain.metrics import layer_errors, sentence_embeddings, summarize

        return summarize(self.dense_emb, sentence_embeddings(model, self.eval),
                         layer_errors(self.dense, model, self.eval))


def run_methods(m: MiniLM, grid: list[tuple[str, str, float]]) -> list[dict[str, Any]]:
    from sparsecraft.posttrain import prune_model

    rows = []
    for method, pattern, sparsity in grid:
        model = copy.deepcopy(m.dense)
        t0 = time.perf_counter()
        _, report = prune_model(model, m.calib, method, sparsity, pattern, progress=True)
        seconds = time.perf_counter() - t0
        row = {"workload": f"minilm {pattern} {sparsity if pattern == 'unstructured' else ''}".strip(),
               "method": method, "pattern": pattern, "target": sparsity if pattern == "unstructured" else 0.5,
               "sparsity": report.overall_sparsity, "seconds": seconds, "calib_error": report.mean_rel_error,
               "block_sparsity": report.block_sparsity, **m.metrics(model)}
        rows.append(row)
        print(f"{method:14s} {pattern:12s} {row['target']:.2f}  cos {row['cosine']:.4f}  knn10 {row['knn10']:.3f}  "
              f"err {row['mean_layer_error']:.4f}  {seconds:.1f}s", flush=True)
    for row in rows:  # baseline: magnitude with the same pattern and sparsity, same run
        base = next(r for r in rows if r["method"] == "magnitude" and r["workload"] == row["workload"])
        row["baseline"] = "magnitude"
        row["knn10_vs_magnitude"] = row["knn10"] / max(base["knn10"], 1e-9)
        row["error_vs_magnitude"] = row["mean_layer_error"] / max(base["mean_layer_error"], 1e-12)
        row["time_vs_magnitude"] = row["seconds"] / base["seconds"]
    return rows


def run_essential(m: MiniLM, quick: bool) -> dict[str, Any]:
    from sparsecraft.posttrain.essential import DEFAULT_SPARSITIES, knee_index, magnitude_sweep
    from sparsecraft.posttrain.metrics import knn_agreement, mean_cosine, sentence_embeddings

    knn: list[float] = []

    def cosine(model: torch.nn.Module) -> float:
        emb = sentence_embeddings(model, m.eval)
        knn.append(knn_agreement(m.dense_emb, emb, 10))
        return mean_cosine(m.dense_emb, emb)

    sparsities = DEFAULT_SPARSITIES[::2] if quick else DEFAULT_SPARSITIES
    result = magnitude_sweep(m.dense, cosine, sparsities, name="cosine", progress=True).to_dict()
    result["knn10"] = knn
    result["essential_sparsity_knn10"] = sparsities[knee_index(list(sparsities), knn)]
    print(f"essential sparsity: {result['essential_sparsity']:.2f} (cosine), "
          f"{result['essential_sparsity_knn10']:.2f} (knn10)", flush=True)
    return result


def run_squarehead(m: MiniLM, steps: int, quick: bool) -> list[dict[str, Any]]:
    from sparsecraft import Sparsifier
    from sparsecraft.posttrain import distill, prune_model

    rows = []
    cases = [("wanda", "unstructured", 0.7)] + ([] if quick else [("sparsegpt", "2:4", 0.5)])
    for method, pattern, sparsity in cases:
        pruned = copy.deepcopy(m.dense)
        sp, _ = prune_model(pruned, m.calib, method, sparsity, pattern)
        masks, patterns = {n: mask.clone() for n, mask in sp.masks.items()}, dict(sp.patterns)
        sp.finalize()
        for loss in ("none", "output", "squarehead"):
            model = copy.deepcopy(pruned)
            t0 = time.perf_counter()
            history = [] if loss == "none" else distill(Sparsifier(model, masks, patterns), m.dense, m.train, loss,
                                                        steps, lr=1e-4, progress=True)
            row = {"workload": f"minilm {method} {pattern} {sparsity}", "finetune": loss,
                   "steps": 0 if loss == "none" else steps,
                   "seconds": time.perf_counter() - t0, "loss_first": history[0] if history else None,
                   "loss_last": sum(history[-10:]) / len(history[-10:]) if history else None, "history": history,
                   "sparsity_after": float(sum(int((p == 0).sum()) for n, p in model.named_parameters()
                                               if "encoder.layer" in n and n.endswith("weight") and p.dim() == 2)
                                           / sum(p.numel() for n, p in model.named_parameters()
                                                 if "encoder.layer" in n and n.endswith("weight") and p.dim() == 2)),
                   **m.metrics(model)}
            rows.append(row)
            print(f"{row['workload']} {loss:10s} cos {row['cosine']:.4f} knn10 {row['knn10']:.3f} "
                  f"{row['seconds']:.0f}s", flush=True)
    for row in rows:
        base = next(r for r in rows if r["workload"] == row["workload"] and r["finetune"] == "none")
        row["baseline"] = "none"
        row["knn10_vs_none"] = row["knn10"] / max(base["knn10"], 1e-9)
    return rows


def run_decoder(quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from sparsecraft.posttrain import prune_model
    from sparsecraft.posttrain.decoder import DecoderConfig, describe, load_decoder

    t0 = time.perf_counter()
    dec = load_decoder(DecoderConfig(epochs=1, max_train_windows=512) if quick else DecoderConfig())
    info = {**describe(dec), "load_or_train_seconds": time.perf_counter() - t0}
    calib = dec.calibration_batches(128)
    rows = []
    grid = [(m, "unstructured", s) for m in BASE_METHODS + OWL_METHODS for s in (0.5, 0.7)]
    grid += [(m, p, 0.5) for m in BASE_METHODS for p in NM_PATTERNS]
    for method, pattern, sparsity in grid:
        model = copy.deepcopy(dec.model)
        t1 = time.perf_counter()
        _, report = prune_model(model, calib, method, sparsity, pattern)
        rows.append({"workload": f"tinylm {pattern} {sparsity if pattern == 'unstructured' else ''}".strip(),
                     "method": method, "pattern": pattern, "sparsity": report.overall_sparsity,
                     "seconds": time.perf_counter() - t1, "dense_ppl": dec.perplexity,
                     "ppl": dec.eval_perplexity(model), "calib_error": report.mean_rel_error})
        print(f"tinylm {method:14s} {pattern:12s} {sparsity:.2f} ppl {rows[-1]['ppl']:.3f} "
              f"(dense {dec.perplexity:.3f})", flush=True)
    for row in rows:
        row["baseline"] = "dense"
        row["ppl_vs_dense"] = row["ppl"] / row["dense_ppl"]
    return info, rows


# --------------------------------------------------------------------------- report
def claims(rows: list[dict[str, Any]], ft: list[dict[str, Any]], dec: list[dict[str, Any]]) -> str:
    """Compare the papers' claims with the measured numbers; every verdict is computed."""
    def get(method: str, workload: str, key: str = "knn10", table=rows) -> float | None:
        r = next((r for r in table if r["method"] == method and r["workload"] == workload), None)
        return None if r is None else r[key]

    lines = ["## Papers' claims vs this run", ""]
    mid = [r["workload"] for r in rows
           if r["method"] == "magnitude" and (r["pattern"] != "unstructured" or r["target"] <= 0.7)]
    for metric, better in (("knn10", max), ("cosine", max), ("mean_layer_error", min)):
        sg_w = sum(1 for w in mid
                   if better(get("sparsegpt", w, metric), get("wanda", w, metric)) == get("sparsegpt", w, metric))
        w_m = sum(1 for w in mid
                  if better(get("wanda", w, metric), get("magnitude", w, metric)) == get("wanda", w, metric))
        lines.append(f"- **SparseGPT >= Wanda >> magnitude (50-70%, 2:4, 4:8)**, by {metric}: "
                     f"SparseGPT at least as good as Wanda in {sg_w}/{len(mid)} settings; "
                     f"Wanda better than magnitude in {w_m}/{len(mid)}.")
    gaps = [(w, get("wanda", w) - get("magnitude", w), get("sparsegpt", w) - get("wanda", w)) for w in mid]
    lines.append("  Top-10 agreement gains (Wanda - magnitude, SparseGPT - Wanda): "
                 + "; ".join(f"{w.replace('minilm ', '')}: {a:+.3f}, {b:+.3f}" for w, a, b in gaps) + ".")
    high = [r["workload"] for r in rows
            if r["method"] == "magnitude" and r["pattern"] == "unstructured" and r["target"] >= 0.7]
    for base in ("wanda", "sparsegpt"):
        deltas = [(w, get(f"owl-{base}", w) - get(base, w)) for w in high]
        wins = sum(1 for _, d in deltas if d > 0)
        lines.append(f"- **OWL helps at high sparsity** ({base}): OWL-{base} beats uniform {base} in top-10 agreement "
                     f"in {wins}/{len(deltas)} settings >= 70% ("
                     + ", ".join(f"{w.split()[-1]}: {d:+.3f}" for w, d in deltas) + ").")
    for workload in sorted({r["workload"] for r in ft}):
        by = {r["finetune"]: r for r in ft if r["workload"] == workload}
        verdict = "holds" if by["squarehead"]["knn10"] > by["none"]["knn10"] else "does not hold"
        lines.append(f"- **SquareHead recovers more than no fine-tuning** ({workload}): {verdict}; top-10 agreement "
                     f"none {by['none']['knn10']:.3f}, output distillation {by['output']['knn10']:.3f}, SquareHead "
                     f"{by['squarehead']['knn10']:.3f} (cosine {by['none']['cosine']:.4f} / "
                     f"{by['output']['cosine']:.4f} / {by['squarehead']['cosine']:.4f}).")
    if dec:
        order = {w: sorted(BASE_METHODS, key=lambda m: get(m, w, "ppl", dec))
                 for w in sorted({r["workload"] for r in dec})}
        lines.append("- **Decoder LM** (held-out perplexity, lower is better), method ranking per setting: "
                     + "; ".join(f"{w.replace('tinylm ', '')}: {' < '.join(o)}" for w, o in order.items()) + ".")
    return "\n".join(lines)


def plots(rows: list[dict[str, Any]], essential: dict[str, Any], ft: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in BASE_METHODS + OWL_METHODS:
        pts = sorted((r["target"], r["cosine"], r["knn10"]) for r in rows
                     if r["method"] == method and r["pattern"] == "unstructured")
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=method)
    for ax, name in zip(axes, ("mean cosine similarity to dense", "top-10 neighbour agreement")):
        ax.set_xlabel("sparsity (unstructured)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("all-MiniLM-L6-v2, layer-wise post-training pruning")
    fig.tight_layout()
    fig.savefig(RESULTS / "posttrain_methods.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(essential["sparsities"], essential["values"], marker="o", label="cosine similarity")
    ax.plot(essential["sparsities"], essential["knn10"], marker="s", label="top-10 agreement")
    ax.axvline(essential["essential_sparsity"], color="k", ls="--",
               label=f"essential sparsity {essential['essential_sparsity']:.2f}")
    ax.set_xlabel("one-shot magnitude sparsity")
    ax.set_ylabel("agreement with dense")
    ax.set_title("Essential sparsity of all-MiniLM-L6-v2")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "posttrain_essential.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in ft:
        if r["history"]:
            ax.plot(r["history"], label=f"{r['workload'].replace('minilm ', '')} {r['finetune']}")
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss (normalised MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "posttrain_squarehead.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with few samples and configs")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="distillation steps")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared 2-core machine, "
                             "2 threads spin and run several times slower)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    calib = 16 if args.quick else args.calib_samples
    m = MiniLM(calib, 32 if args.quick else args.seq_len, 48 if args.quick else 0)
    rows = run_methods(m, configs(args.quick))
    essential = run_essential(m, args.quick)
    ft = run_squarehead(m, 10 if args.quick else args.steps, args.quick)
    dec_info, dec = run_decoder(args.quick)
    total = time.perf_counter() - start
    name = "posttrain_quick" if args.quick else "posttrain"
    md = [f"# Post-training pruning ({'quick' if args.quick else 'full'} run, {total / 60:.1f} min)", "",
          f"all-MiniLM-L6-v2, {calib} calibration paragraphs (<= {args.seq_len} tokens), {len(m.eval)} eval batches "
          f"({len(m.dense_emb)} eval paragraphs, disjoint). "
          "cosine: mean cosine similarity of sentence embeddings vs dense; "
          "knn10: top-10 neighbour agreement with dense on the eval paragraphs; error: mean per-layer relative "
          "reconstruction error on eval inputs; time: pruning wall time (calibration forward passes included).", "",
          markdown_table(rows, ["method", "pattern", "target", "sparsity", "cosine", "knn10", "mean_layer_error",
                                "seconds", "knn10_vs_magnitude", "time_vs_magnitude"]), "",
          f"## Essential sparsity\n\nOne-shot layer-wise magnitude pruning, 0-95%: the knee (Kneedle) of the cosine "
          f"curve is at **{essential['essential_sparsity']:.2f}** (cosine {essential['value_at_knee']:.4f}); of the "
          f"top-10 agreement curve at **{essential['essential_sparsity_knn10']:.2f}**. "
          "Plot: posttrain_essential.png.", "",
          markdown_table([{"sparsity": s, "cosine": c, "knn10": k} for s, c, k in
                          zip(essential["sparsities"], essential["values"], essential["knn10"])],
                         ["sparsity", "cosine", "knn10"]), "",
          f"## Sparse fine-tuning ({ft[1]['steps'] if len(ft) > 1 else 0} steps, batch 16, lr 1e-4, masks fixed)", "",
          markdown_table(ft, ["workload", "finetune", "cosine", "knn10", "mean_layer_error", "sparsity_after",
                              "seconds", "knn10_vs_none"]), "",
          f"## Tiny decoder LM ({dec_info['parameters']} parameters, "
          f"dense held-out perplexity {dec_info['dense_perplexity']:.3f})", "",
          markdown_table(dec, ["method", "pattern", "sparsity", "ppl", "ppl_vs_dense", "seconds"]), "",
          claims(rows, ft, dec)]
    for r in ft:
        r["history"] = [round(h, 5) for h in r["history"]]
    write_results(name, rows, "\n".join(md), extra={"essential": essential, "squarehead": ft, "decoder": dec_info,
                                                     "decoder_rows": dec, "total_seconds": total})
    if not args.quick:
        plots(rows, essential, ft)
    print(f"done in {total / 60:.1f} min -> {RESULTS / name}.md", flush=True)


if __name__ == "__main__":
    main()
