"""Minimal, deterministic training and evaluation loops for the in-project models.

Works for classifiers (logits ``(N, C)``, labels ``(N,)``) and LMs (logits ``(N, T, V)``, targets
``(N, T)``). Sparse-training code plugs in through ``optimizer`` and ``on_step``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..errors import SparsecraftError, check_positive_int

StepCallback = Callable[[int, nn.Module, torch.optim.Optimizer], None]


@dataclass
class TrainHistory:
    """Mean training loss of each epoch and the number of optimizer steps taken."""

    epoch_loss: list[float] = field(default_factory=list)
    steps: int = 0


def _xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if hasattr(data, "train_x") and hasattr(data, "train_y"):
        return data.train_x, data.train_y
    raise SparsecraftError("data must be a DataSplits (from load_dataset) or an (inputs, targets) pair")


def training_pairs(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` of a ``DataSplits`` (its training split) or an ``(x, y)`` pair; raise
    unless there are as many targets as inputs, and more than none."""
    x, y = _xy(data)
    if len(x) != len(y) or len(x) == 0:
        raise SparsecraftError(f"need as many targets as inputs (> 0), got {len(x)} and {len(y)}")
    return x, y


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``(N, C)`` vs labels ``(N,)``, or ``(N, T, V)`` vs ``(N, T)``
    (every token counts once)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def default_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``AdamW(model.parameters(), lr, weight_decay)``; raise unless ``lr > 0``."""
    if not lr > 0:
        raise SparsecraftError(f"lr must be > 0, got {lr!r}")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def train_classifier(
    model: nn.Module,
    data: Any,
    epochs: int = 3,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: StepCallback | None = None,
    weight_decay: float = 0.0,
    num_threads: int | None = None,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy on ``data`` (a ``DataSplits`` or ``(x, y)``).

    Batches are drawn by a permutation seeded with ``seed`` each epoch, and dropout runs under
    ``torch.manual_seed(seed)`` inside a forked RNG (the global RNG is left untouched), so the same
    model init, data and seed give bit-identical weights. ``optimizer`` defaults to
    ``AdamW(lr, weight_decay)``; ``on_step(step, model, optimizer)`` runs after every
    ``optimizer.step()`` (``step`` counts from 1), e.g. to re-apply masks or grow/prune weights.
    ``num_threads`` sets torch's intra-op threads during training (restored after); 1 is often the
    fastest for these tiny models and avoids thread contention on a busy machine.
    """
    x, y = training_pairs(data)
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    if optimizer is None:
        optimizer = default_optimizer(model, lr, weight_decay)
    history = TrainHistory()
    gen = torch.Generator().manual_seed(seed)
    batches = (len(x) + batch_size - 1) // batch_size
    was_training = model.training
    model.train()
    columns = (
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # on stderr, so that stdout stays clean for --json reports and pipes
    bar = Progress(*columns, disable=not progress, transient=True, console=Console(stderr=True))
    with _threads(num_threads), torch.random.fork_rng(devices=[]), bar:
        torch.manual_seed(seed)
        task = bar.add_task("", total=epochs * batches)
        try:
            for epoch in range(epochs):
                order = torch.randperm(len(x), generator=gen)
                total = 0.0
                for i in range(batches):
                    idx = order[i * batch_size : (i + 1) * batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = token_cross_entropy(model(x[idx]), y[idx])
                    loss.backward()
                    optimizer.step()
                    history.steps += 1
                    if on_step is not None:
                        on_step(history.steps, model, optimizer)
                    total += loss.item() * len(idx)
                    desc = f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}"
                    bar.update(task, advance=1, description=desc)
                history.epoch_loss.append(total / len(x))
        finally:
            model.train(was_training)
    return history


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None``: leave it)."""
    saved = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_positive_int(num_threads, "num_threads"))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@torch.no_grad()
def _predict_batches(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            yield model(x[start : start + batch_size]), y[start : start + batch_size]
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of correct argmax predictions (per example, or per token for an LM), in eval mode."""
    if len(x) == 0:
        raise SparsecraftError("cannot evaluate on an empty set")
    correct = total = 0
    for logits, target in _predict_batches(model, x, y, batch_size):
        correct += int((logits.argmax(-1) == target).sum())
        total += target.numel()
    return correct / total


def evaluate_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Mean cross-entropy in nats (per example or per token); ``exp`` of it is the perplexity."""
    if len(x) == 0:
        raise SparsecraftError("cannot evaluate on an empty set")
    total = 0.0
    count = 0
    for logits, target in _predict_batches(model, x, y, batch_size):
        total += float(token_cross_entropy(logits, target)) * target.numel()
        count += target.numel()
    return total / count
