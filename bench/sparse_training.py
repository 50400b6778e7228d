"""Sparse-training reproduction benchmark (not a test).

Datasets MNIST-1D and digits, the in-project MLP and CNN. Unstructured sparsity 0.8 / 0.9 / 0.95:
dense, static random (uniform with every layer sparse and with the first layer dense, as RigL; ERK),
SNIP, GMP, SET, RigL, IMP with rewinding (one trajectory of (rounds + 1) x epochs, and
compute-matched runs of the others' epochs), Sparse Model Soups (uniform + greedy, and the best
single ingredient) and their paper's baseline, prune-and-retrain without rewinding with the same
total epochs. 2:4: one-shot magnitude + fine-tune, SR-STE, progressive gradient flow, bidirectional
N:M. Mean and std of test accuracy over seeds, and time per training step as a ratio to dense
measured in the same run (one thread each).

    .venv/bin/python -m bench.sparse_training            # full: 3 seeds, ~60-65 min on 2 cores
    .venv/bin/python -m bench.sparse_training --quick    # 1 seed, sparsity 0.9, few epochs

Writes bench/results/sparse_training{.json,.md,_accuracy.png,_nm.png}.
"""
from __future__ import annotations

import argparse
import copy
import math
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import torch

from bench.common import RESULTS, markdown_table, pyplot, write_results

SPARSITIES = (0.8, 0.9, 0.95)
EPOCHS = {"digits": 10, "mnist1d": 6}
LR, BATCH = 3e-3, 64
UNSTRUCTURED = ["dense", "static-uniform", "static-uniform-dense-first", "static-erk", "snip", "gmp", "set", "rigl",
                "imp", "imp-matched", "prune-retrain", "soup-best-ingredient", "soup-uniform", "soup-greedy"]
NM_METHODS = ["dense", "oneshot+ft", "srste", "gradflow", "bidirectional"]
#: method -> (updater name, allocation, layers kept dense, hyper-parameters); allocations follow each
#: paper; every layer is sparse (the library default) except where a method keeps the first dense
SPEC = {
    "static-uniform": ("static", "uniform", (), {"criterion": "random"}),
    "static-uniform-dense-first": ("static", "uniform", ("first",), {"criterion": "random"}),
    "static-erk": ("static", "erk", (), {"criterion": "random"}),
    "snip": ("snip", "global", (), {}),
    "gmp": ("gmp", "global", (), {}),
    "set": ("set", "erk", (), {"drop_fraction": 0.3}),
    "rigl": ("rigl", "erk", (), {"drop_fraction": 0.3}),
    "imp-matched": ("imp", "global", (), {"rounds": 3}),
}
SOUP_INGREDIENTS = 3


# --------------------------------------------------------------------------- data and training
_DATA: dict[str, Any] = {}


def data_for(name: str):
    """(train, val, test) with a fixed split: 10% of the training set held out for greedy soups."""
    if name not in _DATA:
        from sparsecraft.data import load_dataset

        d = load_dataset(name, seed=0, **({"cache": True, "num_samples": 4000} if name == "mnist1d" else {}))
        perm = torch.randperm(len(d.train_x), generator=torch.Generator().manual_seed(0))
        n_val = len(d.train_x) // 10
        val, tr = perm[:n_val], perm[n_val:]
        _DATA[name] = (d, (d.train_x[tr], d.train_y[tr]), (d.train_x[val], d.train_y[val]))
    return _DATA[name]


def new_model(data_name: str, model_name: str, seed: int):
    from sparsecraft.models import model_for_data

    torch.manual_seed(seed)
    return model_for_data(model_name, data_for(data_name)[0])


def test_acc(model, data_name: str) -> float:
    from sparsecraft.models import evaluate

    d = data_for(data_name)[0]
    return evaluate(model, d.test_x, d.test_y)


def train(model, data_name: str, updater=None, epochs: int = 1, seed: int = 0, lr: float = LR, **kw):
    from sparsecraft.training import fit

    return fit(model, data_for(data_name)[1], updater, epochs=epochs, batch_size=BATCH, lr=lr, seed=seed,
               progress=False, **kw)


def steps_per_epoch(data_name: str) -> int:
    return math.ceil(len(data_for(data_name)[1][0]) / BATCH)


def row(ds: str, model: str, method: str, sparsity: float | str, seed: int, acc: float, **extra) -> dict:
    return {"dataset": ds, "model": model, "method": method, "sparsity": sparsity, "seed": seed, "acc": acc, **extra}


# --------------------------------------------------------------------------------------- jobs
def job_mask_method(ds: str, model_name: str, seed: int, method: str, sparsity: float, epochs: int) -> list[dict]:
    """One run of a SPEC method at ``sparsity`` for ``epochs`` (IMP compute-matched: all its rounds in them)."""
    from sparsecraft.training import SparsityConfig, make_updater

    name, alloc, keep_dense, hp = SPEC[method]
    if name in ("set", "rigl"):
        hp = {**hp, "update_every": max(1, epochs * steps_per_epoch(ds) // 30)}
    if name == "imp":
        hp = {**hp, "rewind_step": max(1, steps_per_epoch(ds) // 2)}
    model = new_model(ds, model_name, seed)
    u = make_updater(name, SparsityConfig(sparsity, allocation=alloc, keep_dense=keep_dense), seed=seed, **hp)
    train(model, ds, u, epochs, seed)
    u.finalize()
    return [row(ds, model_name, method, sparsity, seed, test_acc(model, ds), actual_sparsity=u.sparsity())]


def job_imp(ds: str, model_name: str, seed: int, sparsities: tuple[float, ...], epochs: int) -> list[dict]:
    """One IMP trajectory through all sparsities: (rounds + 1) x ``epochs`` in all, each round its own
    cosine schedule, rewinding to 1/2 epoch."""
    from sparsecraft.training import SparsityConfig, make_updater

    model = new_model(ds, model_name, seed)
    rounds = len(sparsities)
    u = make_updater("imp", SparsityConfig(sparsities[-1], allocation="global"), seed=seed,
                     round_sparsities=list(sparsities), rewind_step=max(1, steps_per_epoch(ds) // 2))
    out = []

    def at_round_end(upd, event):
        if event["kind"] == "round_end" and event["round"] >= 1:
            out.append(row(ds, model_name, "imp", sparsities[event["round"] - 1], seed, test_acc(upd.model, ds),
                           actual_sparsity=upd.sparsity()))

    u.listeners.append(at_round_end)
    train(model, ds, u, epochs * (rounds + 1), seed)
    u.finalize()
    out.append(row(ds, model_name, "imp", sparsities[-1], seed, test_acc(model, ds), actual_sparsity=u.sparsity()))
    return out


def job_dense_chain(ds: str, model_name: str, seed: int, sparsities: tuple[float, ...], epochs: int,
                    ingredients: int) -> list[dict]:
    """Dense baseline, then from it: Sparse Model Soups, their baseline (prune and retrain one model
    ``ingredients`` times as long per phase, no rewinding: equal total epochs) and one-shot 2:4 + fine-tune."""
    from sparsecraft.models import evaluate
    from sparsecraft.training import SparsityConfig, average_state_dicts, greedy_soup, make_updater, sparse_model_soup

    model = new_model(ds, model_name, seed)
    train(model, ds, None, epochs, seed)
    out = [row(ds, model_name, "dense", 0.0, seed, test_acc(model, ds))]
    retrain = max(1, epochs // 2)

    # one-shot 2:4 magnitude pruning of the dense model + fine-tuning
    ft = copy.deepcopy(model)
    u = make_updater("static", SparsityConfig(pattern="2:4"), criterion="magnitude", seed=seed)
    train(ft, ds, u, retrain, seed + 7, lr=LR / 3)
    out.append(row(ds, model_name, "oneshot+ft", "2:4", seed, test_acc(ft, ds), actual_sparsity=u.sparsity(),
                   left_dense=u.skipped))

    # Sparse Model Soups: uniform soup carried forward; greedy soup and best ingredient per phase
    vx, vy = data_for(ds)[2]

    def val(m) -> float:
        return evaluate(m, vx, vy)

    def retrain_for(epochs_per_phase: int):
        def retrain_one(m, sp, s):
            opt = torch.optim.AdamW(m.parameters(), lr=LR / 3)
            sp.attach(opt)
            train(m, ds, None, epochs_per_phase, s, optimizer=opt)
        return retrain_one

    def phase(s, copies):
        best = max(copies, key=val)
        out.append(row(ds, model_name, "soup-best-ingredient", s, seed, test_acc(best, ds)))
        probe = copy.deepcopy(copies[0])
        probe.load_state_dict(average_state_dicts([c.state_dict() for c in copies]))
        out.append(row(ds, model_name, "soup-uniform", s, seed, test_acc(probe, ds)))
        state, used = greedy_soup(copies, val)
        probe.load_state_dict(state)
        out.append(row(ds, model_name, "soup-greedy", s, seed, test_acc(probe, ds), used=used))

    config = SparsityConfig(sparsities[-1], allocation="global")
    sparse_model_soup(copy.deepcopy(model), config, retrain_for(retrain), val,
                      sparsities=list(sparsities), ingredients=ingredients, seed=seed, on_phase=phase)

    def baseline_phase(s, copies):
        out.append(row(ds, model_name, "prune-retrain", s, seed, test_acc(copies[0], ds)))

    sparse_model_soup(copy.deepcopy(model), config, retrain_for(retrain * ingredients), val,
                      sparsities=list(sparsities), ingredients=1, seed=seed, on_phase=baseline_phase)
    return out


def job_nm(ds: str, model_name: str, seed: int, method: str, epochs: int) -> list[dict]:
    """2:4 from scratch with dense weights and a masked forward (SR-STE, gradient flow, BDWP)."""
    from sparsecraft.training import SparsityConfig, make_updater

    model = new_model(ds, model_name, seed)
    u = make_updater(method, SparsityConfig(pattern="2:4"), seed=seed)
    train(model, ds, u, epochs, seed)
    u.finalize()
    return [row(ds, model_name, method, "2:4", seed, test_acc(model, ds), actual_sparsity=u.sparsity(),
                left_dense=u.skipped)]


def _worker_init() -> None:
    """One intra-op thread per worker (the workers run side by side on the cores)."""
    torch.set_num_threads(1)


def run_job(job: tuple) -> list[dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    rows = JOBS[job[0]](*job[1:])
    for r in rows:
        r["job_seconds"] = time.perf_counter() - t0
        r["job_cpu_seconds"] = time.process_time() - c0
    return rows


JOBS = {"mask": job_mask_method, "imp": job_imp, "dense": job_dense_chain, "nm": job_nm}


# ------------------------------------------------------------------------------------ timing
TIMED = ["dense", "static-erk", "snip", "gmp", "set", "rigl", "srste", "gradflow", "bidirectional"]


def time_steps(ds: str, model_name: str, method: str, steps: int = 40, warmup: int = 8) -> float:
    """Median seconds per training step (forward, backward, updater hooks, optimizer) at sparsity 0.9."""
    from sparsecraft.training import SparsityConfig, make_updater

    model = new_model(ds, model_name, 0)
    x, y = data_for(ds)[1]
    n = (steps + warmup) * BATCH
    reps = math.ceil(n / len(x))
    sub = (x.repeat(reps, *[1] * (x.dim() - 1))[:n], y.repeat(reps)[:n])
    if method == "dense":
        u = None
    elif method in ("srste", "gradflow", "bidirectional"):
        u = make_updater(method, SparsityConfig(pattern="2:4"))
    else:
        name, alloc, keep_dense, hp = SPEC[method]
        if name in ("set", "rigl"):
            hp = {**hp, "update_every": 10}
        if name == "gmp":
            hp = {"frequency": 10}
        u = make_updater(name, SparsityConfig(0.9, allocation=alloc, keep_dense=keep_dense), **hp)
    from sparsecraft.training import fit

    res = fit(model, sub, u, epochs=1, batch_size=BATCH, progress=False)
    return statistics.median(res.step_seconds[warmup:])


def timing_rows(datasets: list[str], models: list[str], repeats: int) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for ds in datasets:
        for m in models:
            best = {k: float("inf") for k in TIMED}
            for _ in range(repeats):          # round-robin, best of repeats: robust to a busy machine
                for k in TIMED:
                    best[k] = min(best[k], time_steps(ds, m, k))
            for k in TIMED:
                rows.append({"dataset": ds, "model": m, "method": k, "ms_per_step": 1e3 * best[k],
                             "dense_ms_per_step": 1e3 * best["dense"], "time_ratio": best[k] / best["dense"]})
    return rows


# ------------------------------------------------------------------------------ aggregation
def aggregate(raw: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in raw:
        groups.setdefault((r["dataset"], r["model"], r["method"], r["sparsity"]), []).append(r)
    dense = {(k[0], k[1]): statistics.mean(x["acc"] for x in v) for k, v in groups.items() if k[2] == "dense"}
    out = []
    for (ds, m, meth, s), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        accs = [r["acc"] for r in sorted(rs, key=lambda r: r["seed"])]
        mean = statistics.mean(accs)
        out.append({"dataset": ds, "model": m, "method": meth, "sparsity": s, "acc_mean": mean,
                    "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": len(accs),
                    "accs": accs, "dense_acc_mean": dense.get((ds, m)),
                    "acc_ratio_to_dense": mean / dense[(ds, m)] if dense.get((ds, m)) else None})
    return out


def _get(agg: list[dict], ds: str, m: str, meth: str, s) -> dict | None:
    for r in agg:
        if (r["dataset"], r["model"], r["method"], r["sparsity"]) == (ds, m, meth, s):
            return r
    return None


def _cell(r: dict | None) -> str:
    return "" if r is None else f"{100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f}"


CLAIMS = [
    ("RigL >= SET (Evci et al. 2020)", "rigl", "set"),
    ("SET >= static random ERK (Mocanu et al. 2018; Evci et al. 2020)", "set", "static-erk"),
    ("RigL >= static random ERK (Evci et al. 2020)", "rigl", "static-erk"),
    ("random ERK > random uniform, every layer sparse (Liu et al. 2022)", "static-erk", "static-uniform"),
    ("random ERK > random uniform, first layer dense (Evci et al. 2020 setting)", "static-erk",
     "static-uniform-dense-first"),
    ("SNIP >= static random uniform (Lee et al. 2019)", "snip", "static-uniform"),
    ("GMP >= static random ERK (Gale et al. 2019: dense-to-sparse beats sparse-from-scratch)", "gmp", "static-erk"),
    ("IMP (rewind) >= static random ERK (Frankle et al. 2020)", "imp", "static-erk"),
    ("IMP (rewind), compute-matched >= static random ERK (Frankle et al. 2020)", "imp-matched", "static-erk"),
    ("IMP, compute-matched >= GMP (same epochs)", "imp-matched", "gmp"),
    ("uniform soup >= best single ingredient (Zimmer et al. 2024)", "soup-uniform", "soup-best-ingredient"),
    ("greedy soup >= best single ingredient (Wortsman et al. 2022)", "soup-greedy", "soup-best-ingredient"),
    ("uniform soup >= prune-retrain without rewinding, equal epochs (Zimmer et al. 2024)", "soup-uniform",
     "prune-retrain"),
]
NM_CLAIMS = [
    ("gradient flow >= SR-STE (Bambhaniya et al. 2024)", "gradflow", "srste"),
    ("SR-STE >= one-shot + fine-tune (Zhou et al. 2021)", "srste", "oneshot+ft"),
    ("bidirectional ~ SR-STE, within 1 point (Fang et al. 2023)", "bidirectional", "srste"),
]


def verdict(within: int, total: int, seeds: int) -> str:
    """Whether the seeds resolve a claim: most of its cells differ by more than one std, or not."""
    if seeds < 2:
        return "one seed: no std"
    if within == total:
        return "not resolved: every cell within 1 std"
    return "mostly within 1 std" if 2 * within >= total else "resolved"


def claim_lines(agg, combos, sparsities) -> list[str]:
    lines = ["| claim | holds (mean acc, a >= b) | largest gap b - a (points) | within 1 std | verdict |",
             "|---|---|---|---|---|"]
    for title, a, b in CLAIMS + NM_CLAIMS:
        levels = ["2:4"] if (title, a, b) in NM_CLAIMS else list(sparsities)
        held = total = within = 0
        seeds = math.inf
        worst = -math.inf
        for ds, m in combos:
            for s in levels:
                ra, rb = _get(agg, ds, m, a, s), _get(agg, ds, m, b, s)
                if ra is None or rb is None:
                    continue
                total += 1
                seeds = min(seeds, ra["seeds"], rb["seeds"])
                gap = rb["acc_mean"] - ra["acc_mean"]
                if "within 1 point" in title:
                    held += abs(gap) <= 0.01
                else:
                    held += gap <= 0
                within += abs(gap) <= max(ra["acc_std"], rb["acc_std"])
                worst = max(worst, gap)
        if total:
            lines.append(f"| {title} | {held}/{total} | {100 * worst:+.1f} | {within}/{total} | "
                         f"{verdict(within, total, seeds)} |")
    return lines


def markdown(agg, timing, combos, sparsities, seeds, epochs, elapsed, cpu_s: float | None = None) -> str:
    cpu_note = f" (training jobs: {cpu_s / 60:.1f} CPU-min over the workers)" if cpu_s else \
        " on a machine shared with other jobs"
    md = ["# Sparse training benchmark", "",
          f"Test accuracy (%) mean ± std over {len(seeds)} seeds (seeds {list(seeds)}); epochs per run "
          f"{epochs}; AdamW lr {LR}, cosine schedule, batch {BATCH}; 10% of the training set held out (greedy "
          f"soups only). Wall time {elapsed / 60:.1f} min{cpu_note}. "
          "Allocations: static-uniform uniform, static-erk / SET / "
          "RigL ERK, SNIP / GMP / IMP / soups global. Every layer is sparse (the library default), the 1-channel "
          "stem and the head included, except static-uniform-dense-first, which keeps the first layer dense as "
          "RigL does. SET and RigL stop rewiring at 75% of training (the library default; the SET paper rewires "
          "until the end). IMP: one trajectory 0.8 -> 0.9 -> 0.95 of (rounds + 1) x epochs, each round its own "
          "cosine schedule retrained from the rewind point (half an epoch), so the 0.8 / 0.9 / 0.95 cells have "
          "had 2x / 3x / 4x the epochs of the from-scratch methods; imp-matched: one IMP run per sparsity with 3 "
          "geometric prune rounds inside the same epochs as the others. Soups: from the dense model, "
          f"{SOUP_INGREDIENTS} ingredients per phase retrained epochs/2 with different data orders; the uniform "
          "soup starts the next phase; greedy soup and best ingredient are computed from the same ingredients. "
          f"prune-retrain (the soups paper's baseline): the same phases from the same dense model, one model "
          f"retrained {SOUP_INGREDIENTS} x epochs/2 per phase without rewinding, so it has the soups' total "
          "epochs.", ""]
    for ds, m in combos:
        md += [f"## {ds} / {m}", ""]
        rows = []
        for meth in UNSTRUCTURED:
            r = {"method": meth}
            for s in ([0.0] if meth == "dense" else sparsities):
                r[str(s) if meth != "dense" else str(sparsities[0])] = _cell(_get(agg, ds, m, meth, s))
            rows.append(r)
        md += [markdown_table(rows, ["method", *map(str, sparsities)]), ""]
        nm_rows = [{"method": meth, "2:4": _cell(_get(agg, ds, m, meth, 0.0 if meth == "dense" else "2:4"))}
                   for meth in NM_METHODS]
        md += ["2:4 (dense row: the dense baseline):", "", markdown_table(nm_rows, ["method", "2:4"]), ""]
    md += ["## Time per training step (ratio to dense, same run, one thread, sparsity 0.9 or 2:4)", "",
           "Masks are applied to dense tensors during training, so no method is faster than dense on the CPU; "
           "the ratio is the overhead of the method (mask hooks, score computation, masked forward, custom "
           "backward).", ""]
    trows = []
    for ds, m in combos:
        r = {"workload": f"{ds}/{m}"}
        for t in timing:
            if (t["dataset"], t["model"]) == (ds, m):
                r[t["method"]] = f"{t['time_ratio']:.2f}"
                if t["method"] == "dense":
                    r["dense ms/step"] = f"{t['ms_per_step']:.2f}"
        trows.append(r)
    md += [markdown_table(trows, ["workload", "dense ms/step", *TIMED[1:]]), ""]
    md += ["## Caveats", "",
           "* Compute: from-scratch methods, GMP and imp-matched train `epochs` once; imp trains (rounds + 1) x "
           "epochs along one trajectory; soups and prune-retrain each train the dense model once plus phases x "
           f"{SOUP_INGREDIENTS} x epochs/2. IMP and GMP also start from (or pass through) a dense model.",
           "* The models are tiny (the CNN has ~19k prunable weights), so at 0.95 some layers keep a few dozen "
           "weights; ERK leaves the smallest layers (stem conv, head) nearly dense, uniform does not.",
           "* Greedy soups and the best ingredient are chosen on the held-out 10% and scored on the test set, so "
           "'greedy >= best ingredient' need not hold on test.",
           "* Step times are medians of ~40 steps with one thread, best of the round-robin repeats; the machine "
           "was shared with other jobs (see `loadavg` in the JSON when recorded), so ratios are approximate.",
           ""]
    md += ["## Papers' claims vs. what we measured", "",
           "Counted over every dataset/model/sparsity cell; 'within 1 std' counts cells where the two means "
           "differ by less than the larger seed std (i.e. the comparison is not resolved by our seeds).", ""]
    md += claim_lines(agg, combos, sparsities)
    return "\n".join(md) + "\n"


def plot(agg, combos, sparsities, path_acc, path_nm) -> None:
    plt = pyplot()
    cols = 2 if len(combos) > 1 else 1
    nrows = math.ceil(len(combos) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.2 * nrows), squeeze=False)
    for ax, (ds, m) in zip(axes.flat, combos):
        for meth in UNSTRUCTURED[1:]:
            pts = [(s, _get(agg, ds, m, meth, s)) for s in sparsities]
            pts = [(s, r) for s, r in pts if r]
            if pts:
                ax.errorbar([s for s, _ in pts], [100 * r["acc_mean"] for _, r in pts],
                            yerr=[100 * r["acc_std"] for _, r in pts], label=meth, marker="o", capsize=2, lw=1)
        d = _get(agg, ds, m, "dense", 0.0)
        if d:
            ax.axhline(100 * d["acc_mean"], color="k", ls="--", lw=1, label="dense")
        ax.set_title(f"{ds} / {m}")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks(list(sparsities))
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path_acc, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(NM_METHODS)
    for i, meth in enumerate(NM_METHODS):
        vals = [_get(agg, ds, m, meth, 0.0 if meth == "dense" else "2:4") for ds, m in combos]
        ax.bar([j + i * width for j in range(len(combos))], [100 * v["acc_mean"] if v else 0 for v in vals], width,
               yerr=[100 * v["acc_std"] if v else 0 for v in vals], label=meth, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(combos))], [f"{ds}/{m}" for ds, m in combos])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("2:4 sparsity")
    ax.legend(fontsize=7)
    lo = min((100 * r["acc_mean"] for r in agg if r["sparsity"] in ("2:4", 0.0)), default=0)
    ax.set_ylim(max(0, lo - 10), 100)
    fig.tight_layout()
    fig.savefig(path_nm, dpi=110)
    plt.close(fig)


def render(name: str, agg: list[dict], timing: list[dict], config: dict, raw: list[dict]) -> str:
    combos = [(d, m) for d in ("mnist1d", "digits") for m in ("mlp", "cnn")]
    sparsities = tuple(config["sparsities"])
    md = markdown(agg, timing, combos, sparsities, config["seeds"], config["epochs"], config["elapsed_s"],
                  config.get("training_cpu_s"))
    plot(agg, combos, sparsities, RESULTS / f"{name}_accuracy.png", RESULTS / f"{name}_nm.png")
    md += f"\nPlots: `{name}_accuracy.png` (accuracy vs sparsity), `{name}_nm.png` (2:4).\n"
    write_results(name, agg + timing, md, extra={"config": config, "raw": raw})
    return md


def replot(name: str) -> None:
    import json

    data = json.loads((RESULTS / f"{name}.json").read_text())
    agg = [r for r in data["rows"] if "acc_mean" in r]
    timing = [r for r in data["rows"] if "time_ratio" in r]
    print(render(name, agg, timing, data["config"], data["raw"]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, sparsity 0.9, few epochs (minutes)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--name", default=None, help="results name (default sparse_training, or _quick)")
    p.add_argument("--replot", action="store_true", help="only re-render markdown and plots from the JSON")
    args = p.parse_args(argv)
    if args.replot:
        return replot(args.name or ("sparse_training_quick" if args.quick else "sparse_training"))
    sparsities = (0.9,) if args.quick else SPARSITIES
    seeds = range(1 if args.quick else args.seeds)
    epochs = {k: (max(2, v // 4) if args.quick else v) for k, v in EPOCHS.items()}
    datasets, models = ["mnist1d", "digits"], ["mlp", "cnn"]
    combos = [(d, m) for d in datasets for m in models]
    name = args.name or ("sparse_training_quick" if args.quick else "sparse_training")
    for d in datasets:
        data_for(d)   # generate and cache MNIST-1D once; spawned workers read the cache
    jobs = []
    for ds, m in combos:
        e = epochs[ds]
        for seed in seeds:
            jobs.append(("dense", ds, m, seed, sparsities, e, SOUP_INGREDIENTS))
            jobs.append(("imp", ds, m, seed, sparsities, e))
            jobs += [("nm", ds, m, seed, meth, e) for meth in ("srste", "gradflow", "bidirectional")]
            jobs += [("mask", ds, m, seed, meth, s, e) for meth in SPEC for s in sparsities]
    # longest first keeps both workers busy to the end
    cost = {"dense": 10, "imp": 4, "nm": 1.2, "mask": 1}
    jobs.sort(key=lambda j: -cost[j[0]] * (3 if j[2] == "cnn" else 1))
    start = time.perf_counter()
    raw: list[dict] = []
    cpu = 0.0
    with mp.get_context("spawn").Pool(args.workers, initializer=_worker_init) as pool:
        for i, rows in enumerate(pool.imap_unordered(run_job, jobs)):
            raw += rows
            cpu += rows[0]["job_cpu_seconds"]
            print(f"[{i + 1}/{len(jobs)}] {time.perf_counter() - start:6.0f}s {rows[0]['dataset']}/{rows[0]['model']} "
                  f"{rows[0]['method']} {rows[0]['sparsity']}: {rows[0]['acc']:.3f}", flush=True)
    timing = timing_rows(datasets, models, repeats=1 if args.quick else 3)
    elapsed = time.perf_counter() - start
    agg = aggregate(raw)
    config = {"epochs": epochs, "seeds": list(seeds), "sparsities": list(sparsities), "lr": LR,
              "batch_size": BATCH, "elapsed_s": elapsed, "loadavg_1_5_15min": list(os.getloadavg()),
              "training_cpu_s": cpu}
    print(render(name, agg, timing, config, raw))


if __name__ == "__main__":
    main()
