"""all-MiniLM-L6-v2 end to end: sparsecraft's fused BERT path vs torch dense eager, in one run.

``python -m bench.runtime [--quick] [--threads 2] [--peers]`` writes ``bench/results/runtime.{json,md,png}``.
``--peers`` (run with the peers venv's python, see ``bench/peers_venv.sh``) adds ONNX Runtime and
DeepSparse 1.8.0 on the same pruned weights, exported to ONNX (:mod:`bench.runtime_peers`).

Variants: every encoder Linear pruned by magnitude (uniform) to 0/50/70/90% unstructured, 2:4,
and 4x1 blocks at 90%. Random ids, sequence 128, batch 1 and 16 (no padding), plus real pydoc
paragraphs (batch 16, mixed lengths, padded to the longest for torch; the fused path skips the
padding), reported as tokens/s. For each row the dense masked model (torch eager) and the
converted model are timed in blocks of consecutive calls with a short pause between blocks,
rotating over the candidates round after round (so one runtime's spinning thread pool cannot
steal the next one's cores), via :func:`sparsecraft.timing.compare`; the best block is kept.
Outputs are checked against the dense masked model at the real tokens.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any, Callable

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results

VARIANTS = [("dense", 0.0, None), ("unstructured", 0.5, "unstructured"), ("unstructured", 0.7, "unstructured"),
            ("unstructured", 0.9, "unstructured"), ("2:4", 0.5, "2:4"), ("4x1", 0.9, "block4x1")]
TARGETS = {("dense", 0.0): 1.3, ("unstructured", 0.5): 1.5, ("unstructured", 0.7): 2.0,
           ("unstructured", 0.9): 3.0, ("2:4", 0.5): 1.6, ("4x1", 0.9): 4.0}
SEQ, BLOCK_PAUSE_S = 128, 0.05


def blocks(fns: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, float]:
    """Seconds per call of each callable: best of ``rounds`` rotating blocks of ``calls`` consecutive calls."""
    from sparsecraft.timing import compare

    def block(f: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                f()
        return run

    t = compare({k: block(f) for k, f in fns.items()}, rounds=rounds, warmup=1,
                before=lambda: time.sleep(BLOCK_PAUSE_S))
    return {k: v / calls for k, v in t.items()}


def paragraphs(tokenizer: Any, n: int) -> dict[str, Any]:
    """``n`` real pydoc paragraphs, tokenized and padded to the longest (at most SEQ tokens)."""
    from sparsecraft.data.text import paragraphs as pydoc_paragraphs

    paras = pydoc_paragraphs()[:n]
    return dict(tokenizer(paras, padding=True, truncation=True, max_length=SEQ, return_tensors="pt"))


def run(quick: bool, peers: bool, threads: int) -> tuple[list[dict[str, Any]], float]:
    """Time every variant; the rows and the highest load average seen while running."""
    import tempfile
    from pathlib import Path

    import torch
    from torch import nn

    import sparsecraft
    from sparsecraft.inference import convert, weight_bytes
    from sparsecraft.models.hf import load_pretrained

    base, tokenizer = load_pretrained("minilm")
    linears = [t.module_name for t in sparsecraft.find_targets(base, types=(nn.Linear,), within="encoder")]
    real = paragraphs(tokenizer, 16)
    rounds = 3 if quick else 5
    rows, loads = [], []
    for label, sp, pattern in VARIANTS[:4:3] + VARIANTS[-1:] if quick else VARIANTS:
        model = copy.deepcopy(base)
        if pattern:
            sparsecraft.prune(model, sparsity=sp, pattern=pattern, allocation="uniform", layers=linears).finalize()
        dense = copy.deepcopy(model)
        fast, _ = convert(model)
        stored, total = weight_bytes(fast)
        inputs = [(b, "random", {"input_ids": torch.randint(1000, 28000, (b, SEQ),
                                                           generator=torch.Generator().manual_seed(b)),
                                 "attention_mask": torch.ones(b, SEQ, dtype=torch.long)}) for b in (1, 16)]
        inputs.append((16, "pydoc", real))
        for batch, kind, feed in inputs:
            fns = {"dense": lambda: dense(**feed), "sparsecraft": lambda: fast(**feed)}
            peer_fns = {}
            if peers:
                from bench import runtime_peers

                onnx = runtime_peers.export(dense, feed, Path(tempfile.mkdtemp()) / "model.onnx")
                peer_fns = runtime_peers.runners(onnx, feed, threads)
            with torch.no_grad():
                ref = dense(**feed).last_hidden_state
                got = {"sparsecraft": fast(**feed).last_hidden_state,  # dispatch measures here
                       **(runtime_peers.outputs(peer_fns) if peers else {})}
                keep = feed["attention_mask"].bool()
                errs = {k: float((ref - v)[keep].abs().max()) for k, v in got.items()}
                err = errs["sparsecraft"]
                t = blocks({**fns, **peer_fns}, (4 if quick else 10) if batch == 1 else 2, rounds)
            loads.append(os.getloadavg()[0])
            tokens = int(feed["attention_mask"].sum())
            peer_cols = {f"{k}_speedup": t["dense"] / t[k] for k in peer_fns}
            peer_cols.update({f"{k}_max_abs_diff": errs[k] for k in peer_fns})
            rows.append({**peer_cols, "pattern": label, "sparsity": sp, "batch": batch, "input": kind,
                         "padded_tokens": int(feed["attention_mask"].numel()), "real_tokens": tokens,
                         "dense_ms": t["dense"] * 1e3, "sparsecraft_ms": t["sparsecraft"] * 1e3,
                         "speedup": t["dense"] / t["sparsecraft"],
                         "sparsecraft_tokens_per_s": tokens / t["sparsecraft"],
                         "dense_tokens_per_s": tokens / t["dense"], "linear_bytes_vs_dense": stored / total,
                         "max_abs_diff": err, "target": TARGETS.get((label, sp)) if kind == "random" else 2.0})
            print(f"{label} {sp} b{batch} {kind}: {rows[-1]['speedup']:.2f}x (diff {err:.1e}) "
                  + " ".join(f"{k} {t['dense'] / t[k]:.2f}x" for k in peer_fns), flush=True)
    return rows, max(loads)


def plot(rows: list[dict[str, Any]]) -> None:
    """Speedup vs torch dense eager per variant, one bar group per input."""
    plt = pyplot()
    keys = sorted({(r["batch"], r["input"]) for r in rows})
    labels = list(dict.fromkeys(f"{r['pattern']} {r['sparsity']:g}" for r in rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(keys)
    for i, (b, kind) in enumerate(keys):
        vals = {f"{r['pattern']} {r['sparsity']:g}": r["speedup"]
                for r in rows if (r["batch"], r["input"]) == (b, kind)}
        ax.bar([j + i * width for j in range(len(labels))], [vals.get(lab, 0) for lab in labels], width,
               label=f"batch {b}, {kind}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("speedup vs torch dense eager")
    ax.set_title("all-MiniLM-L6-v2, fused sparse path (seq 128)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "runtime.png", dpi=110)


def render(payload: dict[str, Any]) -> str:
    """The markdown of a run: machine, load, the targets against what was measured, every row."""
    info, rows = payload["machine"], payload["rows"]
    peers = any("deepsparse_speedup" in r for r in rows)
    targets = []
    for r in rows:
        met = r["speedup"] >= r["target"]
        want = f">= {r['target']}" + (" (tokens/s vs torch with padding)" if r["input"] == "pydoc" else "")
        if r["input"] == "pydoc" and r["sparsity"] != 0.0:
            continue
        if peers and r["input"] == "random" and "deepsparse_speedup" in r:
            want += f", and >= DeepSparse {r['deepsparse_speedup']:.2f}"
            met = met and r["speedup"] >= r["deepsparse_speedup"]
        targets.append({"target": f"{r['pattern']} {r['sparsity']:g} batch {r['batch']} {r['input']}", "want": want,
                        "measured": r["speedup"], "met": "yes" if met else "NO"})
    cols = ["pattern", "sparsity", "batch", "input", "real_tokens", "padded_tokens", "dense_ms", "sparsecraft_ms",
            "speedup", "target", "sparsecraft_tokens_per_s", "linear_bytes_vs_dense", "max_abs_diff"]
    cols += ["deepsparse_speedup", "onnxruntime_speedup", "deepsparse_max_abs_diff"] if peers else []
    return (f"# all-MiniLM-L6-v2 end to end: fused sparse path vs torch dense eager (runtime)\n\n"
            f"Machine: {info['cpu']}, {info['cores']} cores, flags {', '.join(info['flags'])}, torch {info['torch']} "
            f"({payload['threads']} threads), commit {info['commit']}, {info['date']}. "
            f"Runtime {payload['minutes']:.1f} min.\n"
            f"Load average (1 min): {payload['load_before']:.1f} before, {payload['load_peak']:.1f} peak, "
            f"{payload['load_after']:.1f} after, on {info['cores']} cores. When it exceeds the thread count the "
            "machine was shared and these ratios must be re-measured on a quiet machine.\n\n"
            "`speedup` = torch dense eager time / sparsecraft time (the model `inference.convert` returns: the fused "
            "BERT path), same inputs, same run, best of rotating blocks of consecutive calls with a pause between "
            "blocks; peers (`--peers`) run the same pruned weights exported to ONNX in the same blocks. `pydoc`: 16 "
            "real paragraphs padded to the longest for torch (and the peers); the fused path skips the padding.\n\n"
            "## Targets\n\n" + markdown_table(targets, ["target", "want", "measured", "met"]) + "\n\n"
            "## All rows\n\n" + markdown_table(rows, cols) + "\n")


def main() -> None:
    import json

    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="dense, 90%% and 4x1 only, fewer rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peers", action="store_true", help="also ONNX Runtime and DeepSparse (in the peers venv)")
    p.add_argument("--render", action="store_true", help="only rewrite runtime.md and the plot from runtime.json")
    args = p.parse_args()
    if args.render:
        payload = json.loads((RESULTS / "runtime.json").read_text())
        (RESULTS / "runtime.md").write_text(render(payload))
        plot(payload["rows"])
        return
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows, load_peak = run(args.quick, args.peers, args.threads)
    extra = {"threads": args.threads, "load_before": load_before, "load_peak": load_peak,
             "load_after": os.getloadavg()[0], "minutes": (time.perf_counter() - start) / 60}
    write_results("runtime", rows, render({"machine": machine_info(), "rows": rows, **extra}), extra)
    plot(rows)


if __name__ == "__main__":
    main()
