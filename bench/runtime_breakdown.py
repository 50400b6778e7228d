"""Where the time goes in all-MiniLM-L6-v2, dense eager vs sparsecraft's fused path (issue 11's arithmetic).

``python -m bench.runtime_breakdown [--threads 2] [--quick]`` writes
``bench/results/runtime_breakdown.{json,md,png}``.

For every variant of :mod:`bench.runtime` (every encoder Linear pruned by magnitude, uniform) and
batch 1 and 16 of random ids (sequence 128), both models run under :mod:`torch.profiler` and each
operator's self CPU time goes into one of: ``linear`` (torch's GEMMs and the sparsecraft kernels,
epilogues included), ``attention`` (SDPA, softmax, batched matmuls), ``layernorm``, ``gelu`` and
``other`` (embeddings, adds, copies, unpadding, views). With the Linear FLOPs of the run
(``2 x tokens x kept weights``; dense: every weight) this gives the arithmetic behind each speedup:
the rate at which the Linears run (GFLOP/s), the best speedup possible if the Linears took no time at
all (the rest of the model bounds it), and the Linear rate a target speedup would need. Profiler
shares are measured in one run per model (best of ``--repeats`` profiled batches of calls), so they
are ratios of the same conditions, not absolute timings.
"""
from __future__ import annotations

import argparse
import copy
import os
from typing import Any

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results
from bench.runtime import SEQ, TARGETS, VARIANTS

CATEGORIES = ("linear", "attention", "layernorm", "gelu", "other")
LINEAR_OPS = ("aten::addmm", "aten::mm", "aten::linear")
ATTENTION_MARKERS = ("scaled_dot_product", "softmax", "bmm", "flash_attention")


def category(op: str) -> str:
    """The category of a profiler operator name."""
    if op.startswith("sparsecraft::") or op in LINEAR_OPS:
        return "linear"
    if any(m in op for m in ATTENTION_MARKERS):
        return "attention"
    if "layer_norm" in op:
        return "layernorm"
    if "gelu" in op:
        return "gelu"
    return "other"


def profile(fn: Any, calls: int, repeats: int) -> dict[str, float]:
    """Milliseconds per call of each category (and ``total``, wall), from the best of ``repeats`` batches."""
    import time

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    best: dict[str, float] | None = None
    for _ in range(repeats):
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            wall = (time.perf_counter() - t0) / calls * 1e3
        parts = dict.fromkeys(CATEGORIES, 0.0)
        for event in prof.key_averages():
            parts[category(event.key)] += event.self_cpu_time_total / 1e3 / calls
        parts["total"] = wall
        if best is None or wall < best["total"]:
            best = parts
    assert best is not None
    return best


def linear_flops(model: Any, tokens: int) -> tuple[float, float]:
    """(dense, kept) multiply-add FLOPs of the encoder Linears for ``tokens`` token rows."""
    from torch import nn

    dense = kept = 0.0
    for module in model.encoder.modules():
        if isinstance(module, nn.Linear):
            dense += 2.0 * tokens * module.weight.numel()
            kept += 2.0 * tokens * int((module.weight != 0).sum())
    return dense, kept


def attention_flops(model: Any, batch: int) -> float:
    """QK^T and PV FLOPs of every layer at sequence length SEQ."""
    cfg = model.config
    return cfg.num_hidden_layers * 4.0 * batch * SEQ * SEQ * cfg.hidden_size


def run(quick: bool, threads: int, repeats: int) -> list[dict[str, Any]]:
    import torch
    from torch import nn

    import sparsecraft
    from sparsecraft.inference import convert
    from sparsecraft.models.hf import load_pretrained

    torch.set_num_threads(threads)
    base, _ = load_pretrained("minilm")
    linears = [t.module_name for t in sparsecraft.find_targets(base, types=(nn.Linear,), within="encoder")]
    rows = []
    for label, sp, pattern in VARIANTS[:4:3] + VARIANTS[-1:] if quick else VARIANTS:
        dense = copy.deepcopy(base)
        if pattern:
            sparsecraft.prune(dense, sparsity=sp, pattern=pattern, allocation="uniform", layers=linears).finalize()
        fast, _ = convert(copy.deepcopy(dense))
        for batch in (1, 16):
            ids = torch.randint(1000, 28000, (batch, SEQ), generator=torch.Generator().manual_seed(batch))
            feed = {"input_ids": ids, "attention_mask": torch.ones(batch, SEQ, dtype=torch.long)}
            calls = 20 if batch == 1 else 3
            with torch.no_grad():
                fast(**feed)  # the dispatcher measures its choices on the first call
                d = profile(lambda: dense(**feed), calls, repeats)
                s = profile(lambda: fast(**feed), calls, repeats)
            flops_dense, flops_kept = linear_flops(dense, batch * SEQ)
            target = TARGETS[(label, sp)]
            rest = s["total"] - s["linear"]
            budget = d["total"] / target - rest
            row = {"pattern": label, "sparsity": sp, "batch": batch,
                   **{f"dense_{k}_ms": v for k, v in d.items()}, **{f"sparse_{k}_ms": v for k, v in s.items()},
                   "speedup": d["total"] / s["total"], "target": target,
                   "dense_linear_gflops": flops_dense / d["linear"] / 1e6,
                   "sparse_linear_gflops": flops_kept / s["linear"] / 1e6,
                   "attention_gflop": attention_flops(dense, batch) / 1e9,
                   "linear_share": s["linear"] / s["total"],
                   "bound_if_linears_free": d["total"] / rest,
                   "linear_gflops_needed": flops_kept / budget / 1e6 if budget > 0 else float("inf")}
            rows.append(row)
            print(f"{label} {sp} b{batch}: {row['speedup']:.2f}x; sparse linear {s['linear']:.2f} ms "
                  f"({row['sparse_linear_gflops']:.0f} GFLOP/s, dense {row['dense_linear_gflops']:.0f}); "
                  f"rest {rest:.2f} ms vs dense rest {d['total'] - d['linear']:.2f} ms; bound "
                  f"{row['bound_if_linears_free']:.2f}x", flush=True)
    return rows


def render(payload: dict[str, Any]) -> str:
    m, rows = payload["machine"], payload["rows"]
    cols = ("pattern", "sparsity", "batch", "dense_total_ms", "sparse_total_ms", "speedup", "target",
            "dense_linear_ms", "sparse_linear_ms", "dense_attention_ms", "sparse_attention_ms",
            "sparse_layernorm_ms", "sparse_other_ms", "dense_linear_gflops", "sparse_linear_gflops",
            "bound_if_linears_free", "linear_gflops_needed")
    lines = [
        "# all-MiniLM-L6-v2: where the time goes (runtime_breakdown)", "",
        f"CPU: {m['cpu']} ({', '.join(m.get('flags', []))}), {payload['threads']} thread(s), torch "
        f"{m.get('torch', '')}, commit {m.get('commit', '')}. Load average {payload['load_before']:.1f} before, "
        f"{payload['load_after']:.1f} after, on {os.cpu_count()} cores.", "",
        "Self CPU time per operator category from torch.profiler (ms per call, best of "
        f"{payload['repeats']} profiled batches), random ids, sequence {SEQ}, every encoder Linear pruned by "
        "magnitude (uniform). `linear`: GEMMs / sparse kernels with their fused epilogues; GFLOP/s: Linear "
        "FLOPs (dense: every weight; sparse: kept weights, 2 x tokens x nnz) / Linear time. "
        "`bound_if_linears_free`: dense total / sparse time outside the Linears, the most any Linear kernel "
        "could give. `linear_gflops_needed`: the Linear rate that would reach the target given the rest as "
        "measured (inf: the rest alone is over the target's budget).", "",
        markdown_table(rows, cols), "",
        "## Reading it", "",
    ]
    for r in rows:
        short = r["speedup"] < r["target"]
        lines.append(
            f"- {r['pattern']} {r['sparsity']:g} batch {r['batch']}: {r['speedup']:.2f}x (target {r['target']:g}"
            f"{', short' if short else ', met'}). Linears {r['sparse_linear_ms']:.2f} of {r['sparse_total_ms']:.2f} ms "
            f"({r['linear_share']:.0%}) at {r['sparse_linear_gflops']:.0f} GFLOP/s of kept weights vs torch's GEMM "
            f"{r['dense_linear_gflops']:.0f}; the rest (attention, LayerNorm, embeddings, copies) bounds the "
            f"speedup at {r['bound_if_linears_free']:.2f}x"
            + (f"; the target needs the Linears at {r['linear_gflops_needed']:.0f} GFLOP/s." if short and
               r['linear_gflops_needed'] != float('inf') else
               ("; the target is out of reach without a faster rest." if short else ".")))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    labels = [f"{r['pattern']} {r['sparsity']:g}\nb{r['batch']}" for r in rows]
    for side, offset in (("dense", -0.2), ("sparse", 0.2)):
        bottom = [0.0] * len(rows)
        for i, cat in enumerate(CATEGORIES):
            vals = [r[f"{side}_{cat}_ms"] / r["dense_total_ms"] for r in rows]
            ax.bar([j + offset for j in range(len(rows))], vals, 0.38, bottom=bottom, color=f"C{i}",
                   label=cat if side == "dense" else None, edgecolor="black" if side == "sparse" else None)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set(ylabel="time / dense total", title="left bar: torch dense eager, right (outlined): sparsecraft")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "runtime_breakdown.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="0%, 90% and 4x1 only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = run(args.quick, args.threads, args.repeats)
    payload = {"benchmark": "runtime_breakdown", "machine": machine_info(), "threads": args.threads,
               "repeats": args.repeats, "load_before": load_before, "load_after": os.getloadavg()[0], "rows": rows}
    md = render(payload)
    write_results("runtime_breakdown", rows, md, {k: v for k, v in payload.items() if k not in ("rows", "machine",
                                                                                            "benchmark")})
    plot(rows)
    print(md)


if __name__ == "__main__":
    main()
