"""``fit``: the common training loop with updater hooks, any optimizer / LR scheduler, DDP and a
progress bar. Your own loop needs only the two calls shown in :mod:`.base`."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..models.train import default_optimizer, token_cross_entropy, training_pairs
from . import distributed as dist_util
from .base import Updater

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    """Per-step mean training loss (over the global batch), steps taken, seconds per step."""

    losses: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)

    @property
    def median_step_seconds(self) -> float:
        s = sorted(self.step_seconds)
        return s[len(s) // 2] if s else float("nan")


def steps_per_epoch(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def make_scheduler(name: str | None, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """``None`` / ``"constant"`` (no scheduler) or ``"cosine"`` (cosine annealing to 0 per step)."""
    if name in (None, "constant"):
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise SparsecraftError(f"unknown scheduler {name!r}; choose one of: constant, cosine")


def fit(model: nn.Module, data: Any, updater: Updater | None = None, epochs: int = 1, batch_size: int = 64,
        lr: float = 3e-3, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = "cosine",
        seed: int = 0, progress: bool = True, loss_fn: LossFn | None = None, weight_decay: float = 0.0,
        on_step: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``model`` in place on ``data`` (a ``DataSplits`` or ``(x, y)``) with ``updater``'s hooks.

    ``batch_size`` is the *global* batch: under DDP (``model`` wrapped in
    ``DistributedDataParallel``, process group initialised) each rank takes its contiguous
    ``batch_size / world`` slice of every batch (it must divide evenly; a last partial batch is cut
    to a multiple of the world size), so the run matches a single process with the same
    ``batch_size``. Batch order is a permutation seeded with ``seed`` per epoch, identical on every
    rank. ``optimizer`` defaults to ``AdamW(lr, weight_decay)``; ``scheduler`` is an LR scheduler
    stepped once per step, or ``"cosine"`` / ``"constant"``. The updater is attached here (with the
    first batch as its calibration batch) unless already attached. ``on_step(step, loss)`` runs after
    each step.
    """
    x, y = training_pairs(data)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    world, rank = dist_util.world_size(), dist_util.rank()
    if batch_size % world:
        raise SparsecraftError(f"batch_size {batch_size} must be divisible by the number of ranks ({world})")
    loss_fn = loss_fn or token_cross_entropy
    per_epoch = steps_per_epoch(len(x), batch_size)
    total = epochs * per_epoch
    if updater is not None and updater.model is not None and updater.optimizer is not optimizer:
        raise SparsecraftError("this updater is attached to another optimizer; pass that optimizer to fit() "
                               "or let fit() attach a fresh updater")
    if optimizer is None:
        optimizer = default_optimizer(model, lr, weight_decay)
    if isinstance(scheduler, str) or scheduler is None:
        scheduler = make_scheduler(scheduler, optimizer, total)
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(x), generator=gen) for _ in range(epochs)]
    if updater is not None and updater.model is None:
        if updater.total_steps is None:
            updater.total_steps = total
        first = orders[0][:batch_size]
        updater.attach(model, optimizer, scheduler, calib=(x[first], y[first]))
    result = FitResult()
    model.train()
    columns = (TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    show = progress and rank == 0
    with Progress(*columns, disable=not show, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("", total=total)
        for epoch in range(epochs):
            epoch_total = 0.0
            for i in range(per_epoch):
                idx = orders[epoch][i * batch_size:(i + 1) * batch_size]
                idx = idx[: len(idx) - len(idx) % world] if world > 1 else idx
                if len(idx) == 0:
                    continue
                local = idx.chunk(world)[rank] if world > 1 else idx
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[local]), y[local])
                loss.backward()
                if updater is not None:
                    updater.before_step()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if updater is not None:
                    updater.after_step()
                result.step_seconds.append(time.perf_counter() - t0)
                value = dist_util.mean_over_ranks(float(loss.detach()))
                result.losses.append(value)
                result.steps += 1
                epoch_total += value * len(idx)
                if on_step is not None:
                    on_step(result.steps, value)
                bar.update(task, advance=1, description=f"epoch {epoch + 1}/{epochs} loss {value:.3f}")
            result.epoch_loss.append(epoch_total / len(x))
    return result
