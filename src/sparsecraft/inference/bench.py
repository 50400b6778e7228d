"""Layer benchmarks shared by ``sparsecraft bench-kernels`` and ``bench/kernels``.

Every workload is a pruned Linear weight (magnitude pruning with the library's patterns, packed
into the matching format) timed against torch dense ``F.linear`` and torch CSR
(``torch.sparse.mm``) with :func:`sparsecraft.timing.compare`: the candidates run in turn, round
after round, so a busy machine slows them alike (``cold=True`` evicts the caches before every call
by streaming through a buffer larger than the last-level cache).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import SparsecraftError, check_sparsity
from ..formats import pack
from ..patterns import get_pattern
from ..timing import Clock, compare
from .linear import SparseLinear

# benchmark pattern -> (sparsecraft.patterns name, format, format params)
PATTERNS: dict[str, tuple[str, str, dict[str, int]]] = {
    "unstructured": ("unstructured", "csr16", {}), "2:4": ("2:4", "nm", {"N": 2, "M": 4}),
    "4x1": ("block4x1", "block", {"R": 4, "C": 1}), "8x1": ("block8x1", "block", {"R": 8, "C": 1}),
    "1x4": ("block1x4", "block", {"R": 1, "C": 4})}


def pruned_weight(out: int, inp: int, sparsity: float, pattern: str = "unstructured", seed: int = 0) -> torch.Tensor:
    """A random weight magnitude-pruned with one of the benchmark patterns.

    Parameters
    ----------
    out, inp : int
        Weight shape (out_features, in_features).
    sparsity : float
        Fraction of zeros in [0, 1) (ignored by 2:4, which is always 50%).
    pattern : str
        A key of :data:`PATTERNS`.
    seed : int
        Seed of the standard-normal weight.

    Returns
    -------
    torch.Tensor
        float32 (out, inp), zero where pruned.
    """
    if pattern not in PATTERNS:
        raise SparsecraftError(f"unknown pattern {pattern!r}; choose one of: {', '.join(PATTERNS)}")
    check_sparsity(sparsity)
    w = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed))
    pat = get_pattern(PATTERNS[pattern][0])
    groups = pat.group_scores(w.abs()).numel()
    return w * pat.mask(w.abs(), int(round(sparsity * groups)))


def parse_shape(text: str) -> tuple[int, int]:
    """Parse a weight shape written ``OUTxIN``.

    Parameters
    ----------
    text : str
        E.g. ``'4096x11008'``.

    Returns
    -------
    tuple[int, int]
        (out_features, in_features), both >= 1; a one-line SparsecraftError otherwise.
    """
    try:
        out, inp = (int(v) for v in text.lower().split("x"))
        if out < 1 or inp < 1:
            raise ValueError
    except ValueError:
        raise SparsecraftError("shape must look like OUTxIN with positive sizes (e.g. 4096x4096), "
                               f"got {text!r}") from None
    return out, inp


class CacheFlusher:
    """A callable that streams through ``mbytes`` MiB so the next call starts with cold caches.

    Parameters
    ----------
    mbytes : int
        Buffer size in MiB; larger than the last-level cache.
    """

    def __init__(self, mbytes: int = 512) -> None:
        self.buf = torch.empty(mbytes * (1 << 18), dtype=torch.float32).fill_(1.0)

    def __call__(self) -> None:
        self.buf.add_(1.0)


@dataclass
class LayerWorkload:
    """One benchmark case: y = x W^T with W (out, inp) pruned to ``sparsity`` with ``pattern``,
    x (batch, inp); ``cold`` evicts the caches before every call."""

    out: int
    inp: int
    sparsity: float
    pattern: str
    batch: int
    cold: bool = False


def bench_layer(w: LayerWorkload, rounds: int = 15, flusher: Optional[CacheFlusher] = None,
                torch_csr: bool = True, seed: int = 0, stat: str = "min", min_time: float = 0.0,
                clock: Clock = time.perf_counter) -> dict[str, Any]:
    """Time torch dense, torch CSR, the packed kernel and the dispatched SparseLinear on one workload.

    Parameters
    ----------
    w : LayerWorkload
        The case to run.
    rounds, stat, min_time, clock
        As for :func:`sparsecraft.timing.compare`.
    flusher : CacheFlusher, optional
        Run before every timed call when ``w.cold``; a fresh 512 MiB one if needed and not given.
    torch_csr : bool
        Also time ``torch.sparse.mm`` on the weight in torch's CSR layout.
    seed : int
        Seed of the weight (``seed``) and of x (``seed + 1``).

    Returns
    -------
    dict[str, Any]
        ``shape``, ``pattern``, ``sparsity`` (measured), ``batch``, ``cache`` ('warm'/'cold'),
        ``format``; milliseconds per call ``dense_ms``, ``kernel_ms``, ``dispatch_ms``
        (and ``torch_csr_ms``); speed ratios ``kernel_vs_dense``, ``dispatch_vs_dense``
        (and ``torch_csr_vs_dense``, ``kernel_vs_torch_csr``), higher is faster;
        ``dispatch_choice`` ('sparse'/'dense') and ``bytes_vs_dense`` (packed / dense float32 bytes).
    """
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
    before = (flusher or CacheFlusher()) if w.cold else None
    with torch.no_grad():
        layer(x)  # dispatch measures once here
        fns["dispatch"] = lambda: layer(x)
        t = compare(fns, rounds=rounds, before=before, stat=stat, min_time=min_time, clock=clock)
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
