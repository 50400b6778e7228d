"""The one training loop of the project, and evaluation.

:func:`fit` trains with an updater's hooks (or none), any optimizer / LR scheduler, DDP and a
progress bar; ``sparsecraft.models.train_classifier`` is a thin wrapper of it. Your own loop needs
only the two calls shown in :mod:`.base`. :func:`evaluate` and :func:`evaluate_loss` measure a
model in eval mode.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..errors import SparsecraftError, check_learning_rate, check_positive_int
from ..losses import token_cross_entropy
from . import distributed as dist_util

if TYPE_CHECKING:
    from .base import Updater

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    """What a :func:`fit` run did.

    Attributes
    ----------
    losses : list of float
        Mean training loss of each step (over the global batch).
    epoch_loss : list of float
        Mean training loss of each epoch (per example).
    steps : int
        Optimizer steps taken.
    step_seconds : list of float
        Wall-clock seconds of each step (forward, backward, hooks, optimizer).
    """

    losses: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)

    @property
    def median_step_seconds(self) -> float:
        """Median of ``step_seconds`` (NaN when no step was taken)."""
        s = sorted(self.step_seconds)
        return s[len(s) // 2] if s else float("nan")


def training_pairs(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The training inputs and targets of ``data``.

    Parameters
    ----------
    data : DataSplits or (Tensor, Tensor)
        A dataset from ``load_dataset`` (its training split is used) or an ``(x, y)`` pair.

    Returns
    -------
    (Tensor, Tensor)
        ``x`` of shape ``(N, ...)`` and ``y`` of shape ``(N,)`` or ``(N, T)``.

    Raises
    ------
    SparsecraftError
        If ``data`` is neither, or there are not as many targets as inputs (and more than none).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "train_x") and hasattr(data, "train_y"):
        x, y = data.train_x, data.train_y
    else:
        raise SparsecraftError("data must be a DataSplits (from load_dataset) or an (inputs, targets) pair")
    if len(x) != len(y) or len(x) == 0:
        raise SparsecraftError(f"need as many targets as inputs (> 0), got {len(x)} and {len(y)}")
    return x, y


def default_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``AdamW(model.parameters(), lr, weight_decay)``; one-line error unless ``lr`` is finite and > 0."""
    check_learning_rate(lr)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch of ``n`` examples (the last may be partial)."""
    return (n + batch_size - 1) // batch_size


def make_scheduler(name: str | None, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """An LR scheduler by name.

    Parameters
    ----------
    name : {None, "constant", "cosine"}
        ``None`` / ``"constant"``: no scheduler; ``"cosine"``: cosine annealing to 0 over the run.
    optimizer : torch.optim.Optimizer
    total_steps : int
        Scheduler steps of the run (one per optimizer step).

    Returns
    -------
    LRScheduler or None
    """
    if name in (None, "constant"):
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    raise SparsecraftError(f"unknown scheduler {name!r}; choose one of: constant, cosine")


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it); restored on exit."""
    saved = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_positive_int(num_threads, "num_threads"))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def fit(model: nn.Module, data: Any, updater: "Updater | None" = None, epochs: int = 1, batch_size: int = 64,
        lr: float = 3e-3, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = "cosine",
        seed: int = 0, progress: bool = True, loss_fn: LossFn | None = None, weight_decay: float = 0.0,
        on_step: Callable[[int, float], None] | None = None, num_threads: int | None = None) -> FitResult:
    """Train ``model`` in place on ``data`` with ``updater``'s hooks; deterministic for a given ``seed``.

    Parameters
    ----------
    model : nn.Module
        Plain or wrapped in ``DistributedDataParallel`` (process group initialised).
    data : DataSplits or (Tensor, Tensor)
        Training data; see :func:`training_pairs`.
    updater : Updater, optional
        Attached here (its calibration batch is the first batch) unless already attached to
        ``optimizer``; ``before_step`` runs between backward and the optimizer step,
        ``after_step`` after it.
    epochs : int
        Passes over the data (0: nothing happens).
    batch_size : int
        The *global* batch: under DDP each rank takes its contiguous ``batch_size / world`` slice
        of every batch (it must divide evenly; a last partial batch is cut to a multiple of the
        world size), so the run matches one process with the same ``batch_size``.
    lr, weight_decay : float
        Of the default optimizer ``AdamW``.
    optimizer : torch.optim.Optimizer, optional
    scheduler : LRScheduler, "cosine", "constant" or None
        Stepped once per optimizer step; a named one spans ``updater.schedule_steps()`` (the whole
        run, or one round for IMP).
    seed : int
        Seeds the batch order (one permutation per epoch, identical on every rank) and, inside a
        forked RNG that leaves the global one untouched, dropout and other random layers.
    progress : bool
        Progress bar on stderr (rank 0 only), so stdout stays clean for reports.
    loss_fn : callable, optional
        ``loss_fn(logits, targets) -> scalar``; default :func:`sparsecraft.losses.token_cross_entropy`.
    on_step : callable, optional
        ``on_step(step, loss)`` after each step (``step`` counts from 1).
    num_threads : int, optional
        torch intra-op threads during training (restored after).

    Returns
    -------
    FitResult
    """
    x, y = training_pairs(data)
    epochs = check_positive_int(epochs, "epochs", minimum=0)
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
    result = FitResult()
    if total == 0:
        return result
    if updater is not None and updater.model is None and updater.total_steps is None:
        updater.total_steps = total
    if isinstance(scheduler, str) or scheduler is None:
        span = updater.schedule_steps() if updater is not None else total
        scheduler = make_scheduler(scheduler, optimizer, span)
    gen = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(x), generator=gen) for _ in range(epochs)]
    if updater is not None and updater.model is None:
        first = orders[0][:batch_size]
        updater.attach(model, optimizer, scheduler, calib=(x[first], y[first]))
    was_training = model.training
    columns = (TextColumn("[bold]train[/] {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, disable=not (progress and rank == 0), transient=True, console=Console(stderr=True))
    with torch_threads(num_threads), torch.random.fork_rng(devices=[]), bar:
        torch.manual_seed(seed)
        task = bar.add_task("", total=total)
        try:
            model.train()
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
                    value = dist_util.mean_over_ranks(float(loss.detach()))  # every rank sees a NaN
                    if not math.isfinite(value):
                        raise SparsecraftError(
                            f"training diverged: non-finite loss at step {result.steps + 1} ({value}); "
                            "the model keeps the weights of the last good step: lower the learning rate "
                            "or check the data for NaN/inf")
                    loss.backward()
                    if updater is not None:
                        updater.before_step()
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    if updater is not None:
                        updater.after_step()
                    result.step_seconds.append(time.perf_counter() - t0)
                    result.losses.append(value)
                    result.steps += 1
                    epoch_total += value * len(idx)
                    if on_step is not None:
                        on_step(result.steps, value)
                    bar.update(task, advance=1, description=f"epoch {epoch + 1}/{epochs} loss {value:.3f}")
                result.epoch_loss.append(epoch_total / len(x))
        finally:
            model.train(was_training)
    return result


@torch.no_grad()
def _predict_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            yield model(x[start:start + batch_size]), y[start:start + batch_size]
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy of ``model`` in eval mode (its mode is restored after).

    Parameters
    ----------
    model : nn.Module
    x : Tensor, shape ``(N, ...)``
    y : Tensor of int64, shape ``(N,)`` (classes) or ``(N, T)`` (tokens)
    batch_size : int

    Returns
    -------
    float
        Fraction in [0, 1] of correct argmax predictions, per example or per token.
    """
    if len(x) == 0:
        raise SparsecraftError("cannot evaluate on an empty set")
    correct = total = 0
    for logits, target in _predict_batches(model, x, y, batch_size):
        correct += int((logits.argmax(-1) == target).sum())
        total += target.numel()
    return correct / total


def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Mean cross-entropy of ``model`` in eval mode, in nats per example or per token.

    Parameters
    ----------
    model : nn.Module
    x : Tensor, shape ``(N, ...)``
    y : Tensor of int64, shape ``(N,)`` or ``(N, T)``
    batch_size : int

    Returns
    -------
    float
        ``exp`` of it is the perplexity.
    """
    if len(x) == 0:
        raise SparsecraftError("cannot evaluate on an empty set")
    total = 0.0
    count = 0
    for logits, target in _predict_batches(model, x, y, batch_size):
        total += float(token_cross_entropy(logits, target)) * target.numel()
        count += target.numel()
    return total / count
