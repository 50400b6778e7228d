"""Per-layer dispatch: time dense against the sparse kernel once per (layer kind, batch bucket).

A sparse kernel only pays above some sparsity, and where that point lies depends on the shape,
the pattern, the batch and the CPU (for convolutions also the spatial size and the kernel:
:meth:`Dispatcher.choose_conv`). Rather than guess, the first call of a layer in a new batch
bucket times both paths on that layer's real weights with :func:`sparsecraft.timing.compare`
(interleaved rounds, minimum time, thread CPU time when single-threaded, so a busy machine biases
neither side) and keeps the faster. Sparse must win by ``margin`` (2%) to be
chosen, so a converted model is never meaningfully slower than dense. Results are cached in memory
under a key of (format, params, shape, density to 1%, batch bucket, ISA, threads) so identical
layers (the six blocks of a transformer) are measured once; set ``SPARSECRAFT_DISPATCH_CACHE`` to a
JSON file to keep them across processes.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..formats.base import PackedWeight
from ..timing import compare, default_clock

MARGIN = 0.02
BUDGET_S, MIN_REPS, MAX_REPS = 0.2, 5, 200  # one measurement: 5 to 200 rounds, up to 0.2 s of wall time
_BUCKETS = (1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def batch_bucket(rows: int) -> int:
    """The dispatch bucket of a call.

    Parameters
    ----------
    rows : int
        Input rows of the call (batch x sequence).

    Returns
    -------
    int
        1, 2, 3 or 4 exactly, then the next power of two up to 1024; 2048 for anything larger.
    """
    for b in _BUCKETS:
        if rows <= b:
            return b
    return _BUCKETS[-1] * 2


class Dispatcher:
    """Chooses 'sparse' or 'dense' per layer kind and batch bucket; caches measurements.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A JSON file to load measurements from and save them to (written atomically; a missing
        or unreadable file starts empty).
    margin : float
        Sparse is chosen only when faster than ``(1 - margin)`` times dense.
    """

    def __init__(self, path: Optional[str | os.PathLike] = None, margin: float = MARGIN) -> None:
        self.margin = margin
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.table: dict[str, dict[str, float | str]] = {}
        if self.path and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                if isinstance(loaded, dict):
                    self.table = {k: v for k, v in loaded.items()
                                  if isinstance(v, dict) and v.get("choice") in ("dense", "sparse")}
            except (OSError, json.JSONDecodeError):
                self.table = {}

    @staticmethod
    def key(packed: PackedWeight, bucket: int) -> str:
        """The cache key: JSON of format, params, shape, density to 1%, bucket, ISA and threads."""
        from .. import kernels

        density = packed.stored_values / max(1, packed.shape[0] * packed.shape[1])
        return json.dumps([packed.format, packed.params(), list(packed.shape), round(density, 2), bucket,
                           kernels.get_isa(), torch.get_num_threads()])

    def choose(self, packed: PackedWeight, bias: Optional[torch.Tensor], rows: int) -> str:
        """The faster path for a layer, measuring on first use of the key.

        Parameters
        ----------
        packed : PackedWeight
            The layer's weight.
        bias : torch.Tensor, optional
            Its bias (out_features,).
        rows : int
            Input rows of the call; a random float32 (rows, in_features) input is timed.

        Returns
        -------
        str
            'sparse' or 'dense' ('dense' without the native kernels).
        """
        from .. import kernels

        if not kernels.available():
            return "dense"
        bucket = batch_bucket(rows)
        key = self.key(packed, bucket)
        hit = self.table.get(key)
        if hit is not None:
            return str(hit["choice"])
        x = torch.randn(rows, packed.shape[1])
        dense_w = packed.dense_cached()
        t = compare({"sparse": lambda: packed.linear(x, bias), "dense": lambda: F.linear(x, dense_w, bias)},
                    rounds=MIN_REPS, warmup=1, min_time=BUDGET_S, max_rounds=MAX_REPS, clock=default_clock())
        t_sparse, t_dense = t["sparse"], t["dense"]
        choice = "sparse" if t_sparse < (1.0 - self.margin) * t_dense else "dense"
        with self._lock:
            self.table[key] = {"choice": choice, "sparse_s": t_sparse, "dense_s": t_dense, "rows": rows}
            if self.path:
                self._save()
        return choice

    def choose_conv(self, layer: Any, x: torch.Tensor) -> str:
        """The faster path for a :class:`~sparsecraft.inference.SparseConv` on inputs shaped like ``x``.

        Parameters
        ----------
        layer : SparseConv
        x : torch.Tensor
            float32 (N, in_channels, *spatial); a random input of its shape is timed (the batch is
            rounded up to its bucket, the spatial size kept exact).

        Returns
        -------
        str
            'sparse' (the direct sparse kernel) or 'dense' (torch's convolution on the unpacked weight);
            'dense' without the native kernels.
        """
        from .. import kernels

        if not kernels.available():
            return "dense"
        bucket = batch_bucket(int(x.shape[0]))
        packed = layer.packed
        density = packed.stored_values / max(1, packed.shape[0] * packed.shape[1])
        key = json.dumps(["conv", packed.format, packed.params(), list(layer.weight_shape), list(layer.stride),
                          list(layer.padding), round(density, 2), [bucket, *x.shape[2:]], kernels.get_isa(),
                          torch.get_num_threads()])
        hit = self.table.get(key)
        if hit is not None:
            return str(hit["choice"])
        probe = torch.randn(bucket, *x.shape[1:])
        w = layer.dense_weight()  # (out, in, *kernel)
        conv = F.conv2d if w.dim() == 4 else F.conv1d

        def sparse() -> torch.Tensor:
            flat, geo = layer.lower(probe)
            return layer.run_lowered(flat, geo, layer.w_vals, layer.bias)

        with torch.no_grad():
            t = compare({"sparse": sparse, "dense": lambda: conv(probe, w, layer.bias, layer.stride, layer.padding)},
                        rounds=MIN_REPS, warmup=1, min_time=BUDGET_S, max_rounds=MAX_REPS, clock=default_clock())
        choice = "sparse" if t["sparse"] < (1.0 - self.margin) * t["dense"] else "dense"
        with self._lock:
            self.table[key] = {"choice": choice, "sparse_s": t["sparse"], "dense_s": t["dense"],
                               "rows": bucket * int(torch.tensor(x.shape[2:]).prod())}
            if self.path:
                self._save()
        return choice

    def _save(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.table, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs a re-measurement


_default: Optional[Dispatcher] = None


def default_dispatcher() -> Dispatcher:
    """The process-wide dispatcher.

    Returns
    -------
    Dispatcher
        One instance per process, persisted to ``$SPARSECRAFT_DISPATCH_CACHE`` when that is set.
    """
    global _default
    if _default is None:
        _default = Dispatcher(os.environ.get("SPARSECRAFT_DISPATCH_CACHE"))
    return _default
