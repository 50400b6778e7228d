"""``train_classifier``: the plain-training entry point for the in-project models.

A thin wrapper of :func:`sparsecraft.training.fit` (the one training loop) with a constant learning
rate and an ``on_step(step, model, optimizer)`` hook. Works for classifiers (logits ``(N, C)``,
labels ``(N,)``) and LMs (logits ``(N, T, V)``, targets ``(N, T)``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..training.fit import FitResult, default_optimizer, fit

StepCallback = Callable[[int, nn.Module, torch.optim.Optimizer], None]


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
) -> FitResult:
    """Train ``model`` in place with cross-entropy at a constant learning rate.

    The same model init, data and seed give bit-identical weights: batches follow a permutation
    seeded with ``seed`` each epoch, and dropout runs under ``torch.manual_seed(seed)`` inside a
    forked RNG (the global RNG is left untouched).

    Parameters
    ----------
    model : nn.Module
    data : DataSplits or (Tensor, Tensor)
        Its training split, or an ``(x, y)`` pair.
    epochs : int
        Passes over the data (0: nothing happens).
    lr, weight_decay : float
        Of the default optimizer ``AdamW``.
    batch_size : int
    seed : int
    progress : bool
        Progress bar on stderr.
    optimizer : torch.optim.Optimizer, optional
        Used instead of the default (e.g. one a Sparsifier is attached to).
    on_step : callable, optional
        ``on_step(step, model, optimizer)`` after every ``optimizer.step()`` (``step`` from 1), e.g.
        to re-apply masks or grow/prune weights.
    num_threads : int, optional
        torch intra-op threads during training (restored after); 1 is often the fastest for these
        tiny models and avoids contention on a busy machine.

    Returns
    -------
    FitResult
        ``epoch_loss`` (mean training loss per epoch), ``steps`` and per-step details.
    """
    if optimizer is None:
        optimizer = default_optimizer(model, lr, weight_decay)
    hook = None if on_step is None else (lambda step, _loss: on_step(step, model, optimizer))
    return fit(model, data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, scheduler=None,
               seed=seed, progress=progress, on_step=hook, num_threads=num_threads)
