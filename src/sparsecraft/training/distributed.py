"""Small helpers for DDP on CPU (``torchrun`` with the gloo backend).

Masks must be identical on every rank. Initial masks are broadcast from rank 0 (a data-driven
criterion such as SNIP could otherwise see different batches); later updates are deterministic
functions of identical inputs (weights synchronised by DDP, all-reduced gradients, generators
seeded from ``(seed, step)``), so they need no communication.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def broadcast_masks(masks: dict[str, torch.Tensor], src: int = 0) -> dict[str, torch.Tensor]:
    """Return ``masks`` as rank ``src`` has them (a no-op outside DDP)."""
    if not active():
        return masks
    out = {}
    for name in sorted(masks):
        t = masks[name].to(torch.uint8).contiguous()
        dist.broadcast(t, src)
        out[name] = t.to(torch.bool)
    return {name: out[name] for name in masks}


def mean_over_ranks(value: float) -> float:
    """The mean of a Python float over ranks (the value itself outside DDP)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def masks_equal_across_ranks(masks: dict[str, torch.Tensor]) -> bool:
    """True when every rank holds exactly the same masks (collective: call on all ranks)."""
    if not active():
        return True
    ok = torch.tensor([1], dtype=torch.int64)
    for name in sorted(masks):
        mine = masks[name].to(torch.uint8).contiguous()
        ref = mine.clone()
        dist.broadcast(ref, 0)
        if not torch.equal(mine, ref):
            ok.zero_()
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())
