"""Run by test_ddp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU) and in-process for the
single-process reference: RigL on a tiny MLP, recording at every mask update whether all ranks
hold identical masks; with a third argument ``sparse``, on the sparse kernels (the updater is
attached and the layers packed before the model is wrapped in DDP)."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from sparsecraft.training import SparsityConfig, fit, make_updater
from sparsecraft.training.distributed import masks_equal_across_ranks
from sparsecraft.training.fit import default_optimizer, steps_per_epoch
from sparsecraft.training.sparse_kernels import wrap_ddp

STEPS_EPOCHS, BATCH = 3, 16


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (64,), generator=g)
    return torch.randn(4, 12, generator=g)[y] * 2 + torch.randn(64, 12, generator=g), y


def run(distributed: bool, sparse_kernels: bool = False) -> dict:
    torch.manual_seed(0)
    model: nn.Module = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    x, y = make_data()
    u = make_updater("rigl", SparsityConfig(0.7, allocation="erk"), update_every=2, drop_fraction=0.5,
                     end_fraction=1.0, seed=5, sparse_kernels=sparse_kernels,
                     total_steps=STEPS_EPOCHS * steps_per_epoch(len(x), BATCH))
    equal: list[bool] = []
    snapshots: list[dict] = []

    def on_event(upd, event):
        equal.append(masks_equal_across_ranks(upd.masks()))
        snapshots.append({n: m.clone() for n, m in upd.masks().items()})

    u.listeners.append(on_event)
    optimizer = None
    if sparse_kernels:  # masks (broadcast from rank 0) and packed layers first, then DDP over the packed values
        optimizer = default_optimizer(model, 1e-2)
        u.attach(model, optimizer)
    if distributed:
        model = wrap_ddp(model) if sparse_kernels else nn.parallel.DistributedDataParallel(model)
    result = fit(model, (x, y), u, epochs=STEPS_EPOCHS, batch_size=BATCH, lr=1e-2, optimizer=optimizer,
                 progress=False)
    return {"losses": result.losses, "equal": equal, "masks": snapshots,
            "kinds": [e["kind"] for e in u.events]}


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = run(distributed=True, sparse_kernels=sys.argv[2:] == ["sparse"])
    if dist.get_rank() == 0:
        torch.save(out, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
