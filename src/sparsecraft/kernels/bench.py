"""Kernel benchmarking shared by ``sparsecraft bench-kernels`` and ``bench/kernels``.

Every workload is a pruned Linear weight (magnitude pruning with the library's patterns) timed
against torch dense ``F.linear`` and torch CSR (``torch.sparse.mm``) in the same loop: the
candidates run in turn, round after round, so a busy machine slows them alike, and the median of
the rounds is reported (``cold=True`` evicts the caches before every call by streaming through a
buffer larger than the last-level cache).
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import SparsecraftError, check_sparsity

PATTERNS = {"unstructured": ("unstructured", "csr16", {}), "2:4": ("2:4", "nm", {"N": 2, "M": 4}),
            "4x1": ("block4x1", "block", {"R": 4, "C": 1}), "8x1": ("block8x1", "block", {"R": 8, "C": 1}),
            "1x4": ("block1x4", "block", {"R": 1, "C": 4})}


def pruned_weight(out: int, inp: int, sparsity: float, pattern: str = "unstructured", seed: int = 0) -> torch.Tensor:
    """A random (out, inp) float32 weight magnitude-pruned to ``sparsity`` with ``pattern``
    (one of :data:`PATTERNS`; 2:4 ignores ``sparsity``)."""
    from ..patterns import get_pattern

    if pattern not in PATTERNS:
        raise SparsecraftError(f"unknown pattern {pattern!r}; choose one of: {', '.join(PATTERNS)}")
    check_sparsity(sparsity)
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))
    pat = get_pattern(PATTERNS[pattern][0])
    groups = pat.group_scores(w.abs()).numel()
    return w * pat.mask(w.abs(), int(round(sparsity * groups)))


def parse_shape(text: str) -> tuple[int, int]:
    """'4096x11008' -> (4096, 11008) as (out_features, in_features)."""
    try:
        out, inp = (int(v) for v in text.lower().split("x"))
        if out < 1 or inp < 1:
            raise ValueError
    except ValueError:
        raise SparsecraftError(f"shape must look like OUTxIN with positive sizes (e.g. 4096x4096), got {text!r}") from None
    return out, inp


class CacheFlusher:
    """Streams through ``mbytes`` MiB so the next call starts with cold caches."""

    def __init__(self, mbytes: int = 512) -> None:
        self.buf = torch.empty(mbytes * (1 << 18), dtype=torch.float32).fill_(1.0)

    def __call__(self) -> None:
        self.buf.add_(1.0)


def compare(fns: dict[str, Callable[[], Any]], rounds: int = 15, warmup: int = 2, min_time: float = 0.0,
            before: Optional[Callable[[], None]] = None, stat: str = "min",
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per call of each function, run in turn for ``rounds`` rounds (at least ``min_time`` s).

    ``stat`` 'min' (best round: on a machine shared with other jobs the least disturbed run is the
    best estimate of each path's own speed) or 'median'. ``clock``: wall time by default;
    ``time.thread_time`` (CPU time of this thread, blind to preemption) is only valid for
    single-threaded runs.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    n = 0
    while n < rounds or time.perf_counter() - start < min_time:
        for k, f in fns.items():
            if before is not None:
                before()
            t0 = clock()
            f()
            times[k].append(clock() - t0)
        n += 1
    agg = min if stat == "min" else statistics.median
    return {k: agg(v) for k, v in times.items()}


@dataclass
class LayerWorkload:
    out: int
    inp: int
    sparsity: float
    pattern: str
    batch: int
    cold: bool = False


def bench_layer(w: LayerWorkload, rounds: int = 15, flusher: Optional[CacheFlusher] = None,
                torch_csr: bool = True, seed: int = 0, stat: str = "min", min_time: float = 0.0,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time dense, torch CSR, our kernel and the dispatched SparseLinear on one workload.

    Returns a row with times (ms), ratios vs dense and vs torch CSR, weight bytes vs dense and
    the dispatcher's choice.
    """
    from ..formats import pack
    from ..inference.linear import SparseLinear

    weight = pruned_weight(w.out, w.inp, w.sparsity, w.pattern, seed)
    _, fmt, params = PATTERNS[w.pattern]
    packed = pack(weight, fmt, **params)
    layer = SparseLinear(packed, None, mode="auto")
    x = torch.randn(w.batch, w.inp, generator=torch.Generator().manual_seed(seed + 1))
    fns: dict[str, Callable[[], Any]] = {
        "dense": lambda: F.linear(x, weight),
        "kernel": lambda: packed.linear(x),
    }
    if torch_csr:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            csr = weight.to_sparse_csr()
        xt = x.t().contiguous()
        fns["torch_csr"] = lambda: torch.sparse.mm(csr, xt).t()
    with torch.no_grad():
        layer(x)  # dispatch measures once here
        fns["dispatch"] = lambda: layer(x)
        t = compare(fns, rounds=rounds, before=flusher if w.cold else None, stat=stat, min_time=min_time,
                    clock=clock)
    real_sparsity = 1.0 - float((weight != 0).sum()) / weight.numel()
    row: dict[str, Any] = {
        "shape": f"{w.out}x{w.inp}", "pattern": w.pattern, "sparsity": round(real_sparsity, 3), "batch": w.batch,
        "cache": "cold" if w.cold else "warm", "format": packed.describe().split(" ")[0],
        "dense_ms": 1e3 * t["dense"], "kernel_ms": 1e3 * t["kernel"], "dispatch_ms": 1e3 * t["dispatch"],
        "kernel_vs_dense": t["dense"] / t["kernel"], "dispatch_vs_dense": t["dense"] / t["dispatch"],
        "dispatch_choice": layer.choices.get(next(iter(layer.choices))) if layer.choices else "sparse",
        "bytes_vs_dense": packed.nbytes / packed.dense_nbytes,
    }
    if torch_csr:
        row["torch_csr_ms"] = 1e3 * t["torch_csr"]
        row["torch_csr_vs_dense"] = t["dense"] / t["torch_csr"]
        row["kernel_vs_torch_csr"] = t["torch_csr"] / t["kernel"]
    return row
