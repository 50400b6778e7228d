"""Parameter-efficient fine-tuning benchmark (not a test): S2FT, PST, SaRA vs full fine-tuning,
LoRA and movement pruning on the tiny byte-level decoder LM (``sparsecraft.posttrain.decoder``, 0.87 M
parameters, 4 blocks, d=128, trained on pydoc prose and cached).

Task: adapt it to a new domain, Python standard-library source code (``sparsecraft.efficient.domains``,
16 modules to train on, 6 other modules held out). Every run takes the same batches (16 windows of 64
bytes) for ``--steps`` Adam steps and adapts the Linears of the 4 blocks (full fine-tuning trains
everything). Reported: perplexity on the held-out code (the new domain) and on the held-out pydoc
paragraphs (the old domain: generalisation away from the fine-tuning data, i.e. forgetting).

1. S2FT vs full fine-tuning vs LoRA at equal trainable parameters (73,728: LoRA r=8; S2FT 1 of 4 heads
   and 112 of 512 FFN channels per block), training-step time (interleaved rounds, ratio to full FT),
   training memory (saved activations + grads + Adam state, counted from the tensors), the inference
   time of the merged model vs the original;
2. PST vs movement pruning at 50/70/90% unstructured sparsity (and one-shot magnitude, no training);
3. SaRA (smallest 9.4% of each weight = 73,728 parameters, progressive 2 phases, nuclear norm) vs
   the same LoRA, plus SaRA without progression and nuclear norm; and whether the smallest 10-20% of
   the pretrained weights contribute at all (perplexity with them zeroed).

    .venv/bin/python -m bench.efficient             # full run (~10-15 min on a busy 2-core machine)
    .venv/bin/python -m bench.efficient --quick     # smoke run: 20 steps, no files written

Writes bench/results/efficient{.json,.md,.png}.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import RESULTS, machine_info, markdown_table, pyplot, write_results
from sparsecraft.efficient import apply, source_lm, training_memory
from sparsecraft.timing import compare

BATCH = 16
WITHIN = "blocks"
LORA = {"rank": 8}
S2FT = {"head_fraction": 0.25, "channel_fraction": 112 / 512}
SARA = {"fraction": 18432 / 196608, "phases": 2, "nuclear": 1e-4}
LR = {"full": 3e-4, "lora": 3e-3, "s2ft": 1e-3, "sara": 1e-3, "pst": 3e-3, "movement": 3e-4}
SCORE_LR = 1e-2  # importance scores of PST and movement pruning
SPARSITIES = (0.5, 0.7, 0.9)
PEFT_LRS = (1e-3, 3e-3)  # LoRA, S2FT and SaRA each run at both; the lower final training loss is kept


class Task:
    """The cached decoder, the code windows and the two evaluation sets."""

    def __init__(self, eval_windows: int) -> None:
        from sparsecraft.posttrain.decoder import load_decoder

        self.decoder = load_decoder(progress=False)
        self.train_x, self.train_y, code_x, code_y = source_lm(seq_len=self.decoder.config.seq_len)
        self.code = (code_x[:eval_windows], code_y[:eval_windows])
        self.prose = (self.decoder.data.test_x[:eval_windows], self.decoder.data.test_y[:eval_windows])
        self.base = self.decoder.model

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.train_x), (BATCH,), generator=torch.Generator().manual_seed(step))
        return self.train_x[idx], self.train_y[idx]

    def perplexities(self, model: nn.Module) -> dict[str, float]:
        from sparsecraft.posttrain.metrics import perplexity

        model.eval()
        return {"code_ppl": perplexity(model, *self.code), "pydoc_ppl": perplexity(model, *self.prose)}


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def prepare(task: Task, method: str, opts: dict[str, Any],
            lr: float | None = None) -> tuple[nn.Module, Any, torch.optim.Optimizer]:
    """A fresh copy of the decoder set up for ``method`` (``"full"``: every parameter trains)."""
    lr = lr or LR[method]
    model = copy.deepcopy(task.base).train()
    if method == "full":
        return model, None, torch.optim.Adam(model.parameters(), lr=lr)
    adapter = apply(model, method, within=WITHIN, **opts)
    names = {id(p): n for n, p in model.named_parameters()}
    params = adapter.trainable_parameters()
    scores = [p for p in params if "score" in names[id(p)]]
    rest = [p for p in params if "score" not in names[id(p)]]
    groups = [{"params": rest, "lr": lr}] + ([{"params": scores, "lr": SCORE_LR}] if scores else [])
    opt = torch.optim.Adam(groups)
    adapter.attach(opt)
    return model, adapter, opt


def train_step(model: nn.Module, adapter: Any, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> float:
    loss = loss_of(model, x, y)
    (loss + (adapter.regularizer() if adapter else 0.0)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def finetune(task: Task, label: str, method: str, opts: dict[str, Any], steps: int,
             lr: float | None = None) -> tuple[dict[str, Any], nn.Module]:
    """Train ``steps`` steps, merge, evaluate; returns the result row and the merged model."""
    model, adapter, opt = prepare(task, method, opts, lr)
    trainable = sum(p.numel() for g in opt.param_groups for p in g["params"])
    t0 = time.perf_counter()
    losses = []
    for step in range(1, steps + 1):
        losses.append(train_step(model, adapter, opt, *task.batch(step)))
        if adapter:
            adapter.step(step, steps)
    seconds = time.perf_counter() - t0
    merged = adapter.merge() if adapter else model
    last = losses[-max(1, steps // 10):]
    row = {"run": label, "method": method, "lr": lr or LR[method], "train_loss": sum(last) / len(last),
           "trainable": trainable,
           "trainable_pct": 100 * trainable / sum(p.numel() for p in task.base.parameters()),
           "train_s": seconds, **task.perplexities(merged)}
    if adapter is not None and adapter.sparsifier is not None:
        row["sparsity"] = adapter.sparsifier.sparsity()
    print(row, flush=True)
    return row, merged


def step_times(task: Task, rounds: int) -> dict[str, float]:
    """Seconds of one training step (forward, backward, Adam) per method, interleaved rounds (min)."""
    x, y = task.batch(0)
    setups = {"full": prepare(task, "full", {}), "lora": prepare(task, "lora", LORA),
              "s2ft": prepare(task, "s2ft", S2FT), "sara": prepare(task, "sara", SARA)}
    fns = {k: (lambda s=s: train_step(s[0], s[1], s[2], x, y)) for k, s in setups.items()}
    return compare(fns, rounds=rounds, warmup=2)


def memories(task: Task) -> list[dict[str, Any]]:
    """Training memory of one step per method (same batch)."""
    x, y = task.batch(0)
    rows = []
    for label, method, opts in (("full FT", "full", {}), ("LoRA r=8", "lora", LORA), ("S2FT", "s2ft", S2FT),
                                ("SaRA", "sara", SARA), ("PST 90%", "pst", {"sparsity": 0.9, "rank": 4,
                                                                             "score_rank": 4}),
                                ("movement 90%", "movement", {"sparsity": 0.9})):
        model, adapter, opt = prepare(task, method, opts)
        if adapter:
            adapter.step(1, 1)  # final sparsity: the masks are in use
        mem = training_memory(model, lambda: loss_of(model, x, y) + (adapter.regularizer() if adapter else 0.0), opt)
        rows.append({"run": label, "activations_kib": mem.activations / 1024, "grads_kib": mem.gradients / 1024,
                     "adam_kib": mem.optimizer / 1024, "weights_kib": mem.parameters / 1024,
                     "training_state_kib": mem.training_state / 1024, "total_kib": mem.total / 1024})
    return rows


def inference_cost(task: Task, merged: dict[str, nn.Module], rounds: int) -> dict[str, float]:
    """Forward time of each merged model (and of LoRA left unmerged) over the original, interleaved."""
    x = task.code[0][:BATCH]
    unmerged, adapter, _ = prepare(task, "lora", LORA)
    models = {"original": task.base, **merged, "lora unmerged": unmerged.eval()}
    with torch.no_grad():
        times = compare({k: (lambda m=m: m(x)) for k, m in models.items()}, rounds=rounds, warmup=2)
    return {k: times[k] / times["original"] for k in models if k != "original"}


def smallest_zeroed(task: Task, fraction: float) -> float:
    """Pydoc perplexity of the decoder with the smallest ``fraction`` of each block Linear weight zeroed."""
    from sparsecraft.efficient.sara import smallest_indices

    model = copy.deepcopy(task.base)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and name.startswith(WITHIN + "."):
                m.weight.view(-1)[smallest_indices(m.weight, fraction)] = 0
    return task.perplexities(model)["pydoc_ppl"]


def magnitude_oneshot(task: Task, sparsity: float) -> dict[str, float]:
    import sparsecraft

    model = copy.deepcopy(task.base)
    sparsecraft.prune(model, sparsity=sparsity, criterion="magnitude", allocation="uniform", layers=[WITHIN])
    return task.perplexities(model)


def claim(text: str, measured: str, held: bool | str) -> dict[str, str]:
    verdict = "not held (a tie within 1%)" if held == "tie" else ("held" if held else "not held")
    return {"claim": text, "measured": measured, "verdict": verdict}


def main(steps: int, quick: bool) -> None:
    torch.set_num_threads(1)
    load_before, t_start = os.getloadavg(), time.perf_counter()
    task = Task(eval_windows=64 if quick else 384)
    base_ppl = task.perplexities(task.base)
    print("base", base_ppl, flush=True)

    # 1. S2FT vs full FT vs LoRA
    row, _ = finetune(task, "full FT", "full", {}, steps)
    rows, merged, chosen = [row], {}, {"full FT": row}
    for name, method, opts in (("LoRA r=8", "lora", LORA), ("S2FT", "s2ft", S2FT), ("SaRA", "sara", SARA)):
        runs = [finetune(task, f"{name}, lr {lr:g}", method, opts, steps, lr) for lr in PEFT_LRS]
        best_row, merged[name] = min(runs, key=lambda r: r[0]["train_loss"])
        best_row["chosen"] = "yes"
        chosen[name] = best_row
        rows += [r for r, _ in runs]
    for name, method, opts in (("S2FT, norm-selected", "s2ft", {**S2FT, "select": "norm"}),
                               ("SaRA, fixed set, no nuclear", "sara", {**SARA, "phases": 1, "nuclear": 0.0})):
        base_name = name.split(",")[0]
        lr = chosen[base_name]["lr"]
        rows.append(finetune(task, f"{name}, lr {lr:g}", method, opts, steps, lr)[0])
    times = step_times(task, rounds=3 if quick else 12)
    for r in rows:
        if r["method"] in times:
            r["step_vs_full"] = times[r["method"]] / times["full"]
    mem = memories(task)
    infer = inference_cost(task, {"S2FT merged": merged["S2FT"], "LoRA merged": merged["LoRA r=8"],
                                  "SaRA merged": merged["SaRA"]}, rounds=5 if quick else 20)

    # 2. PST vs movement pruning
    prune_rows = []
    for s in SPARSITIES[:1] if quick else SPARSITIES:
        prune_rows.append({"run": f"magnitude one-shot {s:.0%}", "method": "magnitude", "sparsity": s,
                           "trainable": 0, **magnitude_oneshot(task, s)})
        for label, method, opts in ((f"movement {s:.0%}", "movement", {"sparsity": s}),
                                    (f"PST {s:.0%}", "pst", {"sparsity": s, "rank": 4, "score_rank": 4})):
            prune_rows.append(finetune(task, label, method, opts, steps)[0])

    # 3. do the smallest weights matter?
    small = [{"zeroed": f, "pydoc_ppl": smallest_zeroed(task, f)} for f in (0.1, 0.2)]
    load_after, wall = os.getloadavg(), time.perf_counter() - t_start

    payload = {"steps": steps, "base": base_ppl, "rows": rows, "prune_rows": prune_rows, "memory": mem,
               "inference": infer, "smallest_zeroed": small, "step_times_s": times, "load_before": load_before,
               "load_after": load_after, "wall_s": wall, "measured": machine_info(),
               "eval_windows": {"code": len(task.code[0]), "pydoc": len(task.prose[0])}}
    if quick:
        print(markdown_table(claims_of(payload), ["claim", "measured", "verdict"]))
        return
    render(payload)


def better(a: float, b: float, margin: float = 0.01) -> bool | str:
    """``True`` when ``a`` is lower than ``b`` by more than ``margin`` (relative); "tie" within it."""
    if abs(a - b) <= margin * b:
        return "tie"
    return a < b


def claims_of(p: dict[str, Any]) -> list[dict[str, str]]:
    """Claim rows from the measurements (lower perplexity is better; 1% counts as a tie)."""
    rows, prune_rows, base = p["rows"], p["prune_rows"], p["base"]
    chosen = {r["method"]: r for r in rows if r.get("chosen") or r["method"] == "full"}
    full, lora, s2ft, sara = chosen["full"], chosen["lora"], chosen["s2ft"], chosen["sara"]
    low = {r["method"]: r for r in rows if r.get("lr") == min(PEFT_LRS) and "," not in r["run"].split(", lr")[0]}
    memo = {r["run"]: r for r in p["memory"]}
    infer = p["inference"]
    mvt = {r["sparsity"]: r for r in prune_rows if r["method"] == "movement"}
    pst = {r["sparsity"]: r for r in prune_rows if r["method"] == "pst"}
    state = {k: memo[k]["training_state_kib"] for k in ("full FT", "LoRA r=8", "S2FT")}
    at_low = (f"; at lr {min(PEFT_LRS):g}: " + ", ".join(f"{k} {low[m]['code_ppl']:.3f} / {low[m]['pydoc_ppl']:.3f}"
                                                     for k, m in (("LoRA", "lora"), ("S2FT", "s2ft"), ("SaRA", "sara"))
                                                     if m in low) + " (code / pydoc)") if low else ""
    claims = [
        claim("S2FT: better in-domain quality than LoRA (paper: +4.6 / +1.3 points on reasoning)",
              f"code ppl S2FT {s2ft['code_ppl']:.3f} vs LoRA {lora['code_ppl']:.3f} (full FT {full['code_ppl']:.3f})",
              better(s2ft["code_ppl"], lora["code_ppl"])),
        claim("S2FT: generalises better than full FT away from the fine-tuning data (paper: +11.5%)",
              f"pydoc ppl after code FT: S2FT {s2ft['pydoc_ppl']:.3f} vs full FT {full['pydoc_ppl']:.3f} "
              f"vs LoRA {lora['pydoc_ppl']:.3f} (before {base['pydoc_ppl']:.3f})" + at_low,
              better(s2ft["pydoc_ppl"], full["pydoc_ppl"])),
        claim("S2FT: less training memory than full FT (paper: up to 3x) and than LoRA",
              f"activations+grads+Adam: full {state['full FT']:.0f} KiB, LoRA {state['LoRA r=8']:.0f} KiB, S2FT "
              f"{state['S2FT']:.0f} KiB ({state['full FT'] / state['S2FT']:.2f}x less than full)",
              state["S2FT"] < state["LoRA r=8"] and state["full FT"] / state["S2FT"] >= 1.5),
        claim("S2FT: training step 1.5-2.7x faster than full FT, faster than LoRA",
              f"step time vs full FT: S2FT {s2ft['step_vs_full']:.2f}, LoRA {lora['step_vs_full']:.2f}",
              1 / s2ft["step_vs_full"] >= 1.5 and s2ft["step_vs_full"] < lora["step_vs_full"]),
        claim("S2FT/LoRA/SaRA merged: no extra inference cost (same architecture)",
              ", ".join(f"{k} {v:.2f}x" for k, v in infer.items()) + " forward time of the original (same "
              "nn.Linear shapes; ratios below 1 are load noise)",
              all(infer[k] <= 1.1 for k in ("S2FT merged", "LoRA merged", "SaRA merged"))),
    ]
    for s in sorted(pst):
        claims.append(claim(f"PST at {s:.0%}: on par with movement pruning with far fewer trainable parameters "
                            "(paper: 1.5% of them on BERT)",
                            f"code ppl PST {pst[s]['code_ppl']:.3f} vs movement {mvt[s]['code_ppl']:.3f}; trainable "
                            f"{pst[s]['trainable']:,} vs {mvt[s]['trainable']:,} "
                            f"({100 * pst[s]['trainable'] / mvt[s]['trainable']:.1f}%)",
                            pst[s]["code_ppl"] <= 1.05 * mvt[s]["code_ppl"]))
    claims += [
        claim("SaRA: the smallest 10-20% of pretrained weights do not contribute",
              f"pydoc ppl {base['pydoc_ppl']:.3f} dense, " + ", ".join(
                  f"{r['pydoc_ppl']:.3f} with the smallest {r['zeroed']:.0%} zeroed" for r in p["smallest_zeroed"]),
              all(r["pydoc_ppl"] <= 1.02 * base["pydoc_ppl"] for r in p["smallest_zeroed"])),
        claim("SaRA: better adaptation than LoRA at equal trainable parameters",
              f"code ppl SaRA {sara['code_ppl']:.3f} vs LoRA {lora['code_ppl']:.3f} "
              f"({sara['trainable']:,} vs {lora['trainable']:,} parameters)",
              better(sara["code_ppl"], lora["code_ppl"])),
        claim("SaRA: keeps the pretrained model's generalisation better than LoRA (less forgetting)",
              f"pydoc ppl SaRA {sara['pydoc_ppl']:.3f} vs LoRA {lora['pydoc_ppl']:.3f} "
              f"(before {base['pydoc_ppl']:.3f})", better(sara["pydoc_ppl"], lora["pydoc_ppl"])),
    ]
    return claims


def render(p: dict[str, Any]) -> None:
    """Write efficient.{json,md,png} from the measurements ``p`` (also re-run by ``--render``)."""
    claims = claims_of(p)
    info, before, after = p["measured"], p["load_before"], p["load_after"]
    rows, prune_rows, mem = p["rows"], p["prune_rows"], p["memory"]
    wall = f"Whole run {p['wall_s'] / 60:.1f} min." if p.get("wall_s") else ""
    md = [
        "# Parameter-efficient fine-tuning: S2FT, PST, SaRA (bench/efficient.py)", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, 1 thread, commit {info['commit']}, "
        f"{info['date']}. Load average (1/5/15 min) {before[0]:.1f}/{before[1]:.1f}/{before[2]:.1f} before, "
        f"{after[0]:.1f}/{after[1]:.1f}/{after[2]:.1f} after: the 2 cores were shared with other agents' jobs, so "
        f"absolute times are noisy; speed is only read as ratios from interleaved rounds. {wall}", "",
        f"Scale: the cached tiny decoder LM (0.87 M parameters, 4 blocks, d=128, byte-level, pydoc perplexity "
        f"{p['base']['pydoc_ppl']:.3f}, code perplexity {p['base']['code_ppl']:.3f} before fine-tuning), "
        f"{p['steps']} Adam steps of {BATCH} x 64-byte windows of Python stdlib source, identical batches for every "
        f"run; {p['eval_windows']['code']} held-out code windows (6 other modules) and {p['eval_windows']['pydoc']} "
        "held-out pydoc windows. Learning rates: full FT and movement-pruned weights 3e-4, PST's LoRA 3e-3, "
        f"importance scores {SCORE_LR:g} (fixed by hand, not tuned); LoRA, S2FT and SaRA at two rates (below). "
        "One seed, so differences of a few percent are within run-to-run noise; a perplexity within 1% of the "
        "other's is reported as a tie.", "",
        "## Claims", "", markdown_table(claims, ["claim", "measured", "verdict"]), "",
        "## 1. Fine-tuning to a new domain (code), equal trainable parameters for LoRA / S2FT / SaRA", "",
        markdown_table(rows, ["run", "trainable", "trainable_pct", "train_loss", "chosen", "code_ppl", "pydoc_ppl",
                             "step_vs_full", "train_s"]),
        "", "LoRA, S2FT and SaRA each ran at learning rates " + ", ".join(f"{lr:g}" for lr in PEFT_LRS) + "; the "
        "claims use the run with the lower training loss over the last 10% of steps (`chosen`: no test data "
        "picks it). `step_vs_full`: one training step over full fine-tuning's, minimum of interleaved rounds "
        "(`sparsecraft.timing.compare`). `train_s`: wall seconds of the whole run (busy machine).", "",
        "### Training memory of one step (KiB, counted from the tensors: saved activations, gradients, Adam state)",
        "", markdown_table([{k: round(v) if isinstance(v, float) else v for k, v in r.items()} for r in mem],
                           ["run", "activations_kib", "grads_kib", "adam_kib", "training_state_kib",
                                 "weights_kib", "total_kib"]), "",
        "SaRA and PST save their effective weight (W + ΔW, W ⊙ M) per layer for the backward pass, counted as "
        "activations above; the dense gradient of SaRA's ΔW exists only transiently during a layer's backward "
        "and is not counted. S2FT keeps only the selected input features of its two trainable layers.", "",
        "### Inference time after merging (forward of 16 x 64 bytes, ratio to the original model)", "",
        markdown_table([{"model": k, "time_vs_original": v} for k, v in p["inference"].items()],
                       ["model", "time_vs_original"]),
        "", "## 2. Sparsity-aware fine-tuning: PST vs movement pruning", "",
        markdown_table(prune_rows, ["run", "sparsity", "trainable", "code_ppl", "pydoc_ppl", "train_s"]), "",
        "PST: LoRA rank 4 for the weights, importance |W| + A B (rank 4) + row + column terms; movement: full "
        "weights and a full score matrix. Both prune the 24 block Linears with a cubic ramp from 10% to 70% of "
        "the steps; the masks end in a `Sparsifier`. Magnitude one-shot: the same layers pruned by |W| at once, "
        "no training.", "",
        "## 3. SaRA", "",
        markdown_table(p["smallest_zeroed"], ["zeroed", "pydoc_ppl"]), "",
        "See section 1 for SaRA vs LoRA (same 73,728 trainable parameters) and the ablation without progressive "
        "re-selection and nuclear norm.",
    ]
    extra = {k: v for k, v in p.items() if k not in ("rows", "prune_rows")}
    write_results("efficient", rows + prune_rows, "\n".join(md), extra={**extra, "claims": claims})
    plot(rows, prune_rows, mem, p["base"])


def rerender() -> None:
    """Rewrite the markdown and plot from bench/results/efficient.json (no measuring)."""
    import json

    saved = json.loads((RESULTS / "efficient.json").read_text())
    rows = saved.pop("rows")
    saved["prune_rows"] = [r for r in rows if r["method"] in ("magnitude", "movement", "pst")]
    saved["rows"] = [r for r in rows if r["method"] not in ("magnitude", "movement", "pst")]
    saved.setdefault("measured", saved.pop("machine"))
    saved.setdefault("eval_windows", {"code": 384, "pydoc": 384})
    render(saved)


def plot(rows: list[dict], prune_rows: list[dict], mem: list[dict], base: dict[str, float]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    rows = [r for r in rows if r["method"] == "full" or r.get("chosen") or "," in r["run"].split(", lr")[0]]
    labels = [r["run"] for r in rows]
    xs = range(len(rows))
    ax.bar([i - 0.2 for i in xs], [r["code_ppl"] for r in rows], 0.4, label="code (new domain)")
    ax.bar([i + 0.2 for i in xs], [r["pydoc_ppl"] for r in rows], 0.4, label="pydoc (old domain)")
    ax.axhline(base["pydoc_ppl"], color="gray", ls="--", lw=1, label="pydoc before")
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("perplexity")
    ax.set_title("fine-tuning on code")
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax = axes[1]
    for method in ("magnitude", "movement", "pst"):
        pts = sorted((r["sparsity"], r["code_ppl"]) for r in prune_rows if r["method"] == method)
        ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("code perplexity")
    ax.set_title("PST vs movement pruning")
    ax.legend(fontsize=8)
    ax = axes[2]
    bottom = [0.0] * len(mem)
    for key in ("activations_kib", "grads_kib", "adam_kib"):
        vals = [r[key] for r in mem]
        ax.bar([r["run"] for r in mem], vals, bottom=bottom, label=key.replace("_kib", ""))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.tick_params(axis="x", rotation=20, labelsize=8)
    ax.set_ylabel("KiB per training step")
    ax.set_title("training memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "efficient.png", dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown and plot from the json")
    args = parser.parse_args()
    if args.render:
        rerender()
    else:
        main(20 if args.quick else args.steps, args.quick)
