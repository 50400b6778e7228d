"""Run by test_fsdp.py under ``torchrun --nproc_per_node 2`` (gloo, CPU) and in-process for the
single-process reference: one sparse training method on a tiny MLP sharded with FSDP2, recording
the full masks and whether all ranks hold them identically at every mask event; then a sharded
checkpoint written and read back into a freshly sharded model.

Arguments: output file, comma-separated methods, checkpoint directory."""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from sparsecraft.training import SparsityConfig, fit, make_updater
from sparsecraft.training.distributed import masks_equal_across_ranks
from sparsecraft.training.fit import steps_per_epoch

EPOCHS, BATCH = 3, 16
METHODS = {
    "static": ("static", SparsityConfig(0.7, allocation="erk"), {}),
    "gmp": ("gmp", SparsityConfig(0.8, allocation="uniform"), {"frequency": 2}),
    "rigl": ("rigl", SparsityConfig(0.7, allocation="erk"), {"update_every": 2, "drop_fraction": 0.5,
                                                            "end_fraction": 1.0}),
    "set": ("set", SparsityConfig(0.7, allocation="erk"), {"update_every": 2, "end_fraction": 1.0}),
    "srste": ("srste", SparsityConfig(pattern="2:4"), {"mask_every": 2}),
    "gradflow": ("gradflow", SparsityConfig(pattern="2:4"), {}),
    "bidirectional": ("bidirectional", SparsityConfig(pattern="2:4"), {"mask_every": 2}),
}


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (64,), generator=g)
    return torch.randn(4, 12, generator=g)[y] * 2 + torch.randn(64, 12, generator=g), y


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def make(method: str):
    name, config, options = METHODS[method]
    x, _ = make_data()
    return make_updater(name, config, seed=5, total_steps=EPOCHS * steps_per_epoch(len(x), BATCH), **options)


def _full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def run(method: str, distributed: bool, ckpt: str | None = None) -> dict:
    from sparsecraft.training.fsdp import load_sharded, save_sharded, shard

    model = make_model()
    x, y = make_data()
    u = make(method)
    equal: list[bool] = []
    snapshots: list[dict] = []

    def on_event(upd, event):
        equal.append(masks_equal_across_ranks(upd.masks()))
        snapshots.append({n: m.clone() for n, m in upd.masks().items()})

    u.listeners.append(on_event)
    driver = shard(model, u) if distributed else u
    result = fit(model, (x, y), driver, epochs=EPOCHS, batch_size=BATCH, lr=1e-2, progress=False)
    out = {"losses": result.losses, "equal": equal, "masks": snapshots, "kinds": [e["kind"] for e in u.events]}
    if ckpt is not None and u.sparsifier is not None:
        save_sharded(ckpt, driver)
        fresh, u2 = make_model(), make(method)
        restored = shard(fresh, u2)
        load_sharded(ckpt, restored)
        out["restored_masks"] = restored.masks()
        out["restored_weights"] = {k: _full(v) for k, v in fresh.state_dict().items()}
    full = driver.masks() if distributed else u.masks()
    params = dict(model.named_parameters())
    out["exp_avg"] = {n: _full(driver.optimizer.state[params[n]]["exp_avg"]) for n in full}
    weights = {k: _full(v) for k, v in model.state_dict().items()}
    driver.finalize()
    finalized = {k: _full(v) for k, v in model.state_dict().items()}
    out.update(final_masks=full, weights=weights, finalized=finalized)
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    out = {m: run(m, distributed=True, ckpt=os.path.join(sys.argv[3], m)) for m in sys.argv[2].split(",")}
    if dist.get_rank() == 0:
        torch.save(out, sys.argv[1])
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
