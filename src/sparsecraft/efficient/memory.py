"""Training memory of one step, counted from the tensors themselves (CPU torch has no allocator
statistics): what autograd keeps for the backward pass, the gradients and the optimizer state.

Saved tensors are collected with ``torch.autograd.graph.saved_tensors_hooks`` and counted once per
underlying storage (a saved view keeps its whole storage alive, so the whole storage counts);
storages of the model's own parameters and buffers are not counted as activations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of one training step: ``activations`` (kept for backward), ``gradients``, ``optimizer``
    state, and the model's ``parameters`` and buffers."""

    activations: int
    gradients: int
    optimizer: int
    parameters: int

    @property
    def total(self) -> int:
        return self.activations + self.gradients + self.optimizer + self.parameters

    @property
    def training_state(self) -> int:
        """What fine-tuning adds to inference: activations + gradients + optimizer state."""
        return self.activations + self.gradients + self.optimizer


def _storage(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def training_memory(model: nn.Module, loss_fn: Callable[[], torch.Tensor],
                    optimizer: torch.optim.Optimizer) -> TrainingMemory:
    """Run one training step (``loss_fn()``, backward, ``optimizer.step()``) and count its memory.

    Parameters
    ----------
    model : nn.Module
        The model ``loss_fn`` runs (its parameters and buffers are not activations).
    loss_fn : callable
        Runs the forward pass and returns the scalar loss.
    optimizer : torch.optim.Optimizer
        Over the trainable parameters; stepped once (so its state exists), then its grads are zeroed.

    Returns
    -------
    TrainingMemory
    """
    owned = {_storage(t)[0] for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage(t)
        if ptr not in owned and nbytes:
            saved[ptr] = nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grads = sum(p.grad.nbytes for p in params if p.grad is not None)
    optimizer.step()
    state = sum(v.nbytes for s in optimizer.state.values() for v in s.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0)
    optimizer.zero_grad(set_to_none=True)
    weights = sum(_storage(t)[1] for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values())
    return TrainingMemory(sum(saved.values()), grads, state, weights)
