"""Sparse fine-tuning by distillation from the dense model, with the sparsity masks kept fixed.

* ``squarehead`` (Kurtic et al., "Sparse Fine-tuning for Inference Acceleration of Large Language
  Models", 2023, arXiv:2310.06927): the mean over transformer blocks of the normalised MSE
  ``||h_t - h_s||^2 / ||h_t||^2`` between teacher and student hidden states (real tokens only);
  the normalisation puts every layer on the same scale.
* ``output``: plain output distillation, the same normalised MSE on the model's final output only
  (last hidden state of an encoder, logits of a decoder LM).

The masks are the :class:`sparsecraft.Sparsifier`'s (from :func:`prune_model`,
``Sparsifier.load`` or any other pruning): it is attached to the optimizer, so pruned weights
stay exactly zero and their optimizer state never accumulates.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError
from ..registry import Registry
from ..sparsifier import Sparsifier
from .metrics import hidden_states
from .pipeline import Batch, block_output, find_blocks

LossFn = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None], torch.Tensor]
DISTILL_LOSSES: Registry[LossFn] = Registry("distillation loss")


def normalized_mse(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``||t - s||^2 / ||t||^2`` over the real tokens (``mask`` ``(B, T)``) of ``(B, T, d)`` tensors."""
    if mask is not None and teacher.dim() == 3:
        teacher, student = teacher[mask], student[mask]
    return (teacher - student).pow(2).sum() / teacher.pow(2).sum().clamp_min(1e-12)


@DISTILL_LOSSES.register("squarehead")
def squarehead_loss(teacher: list[torch.Tensor], student: list[torch.Tensor],
                    mask: torch.Tensor | None) -> torch.Tensor:
    """Mean per-block normalised MSE (all block outputs; the last entry is the model output)."""
    layers = list(zip(teacher[:-1], student[:-1]))
    return torch.stack([normalized_mse(t, s, mask) for t, s in layers]).mean()


@DISTILL_LOSSES.register("output")
def output_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """Normalised MSE of the model outputs only."""
    return normalized_mse(teacher[-1], student[-1], mask)


def features(model: nn.Module, batch: Batch) -> list[torch.Tensor]:
    """Every block's output hidden states, then the model's own output."""
    outs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, o: outs.append(block_output(o))) for b in find_blocks(model)]
    try:
        final = hidden_states(model(**batch))
    finally:
        for h in handles:
            h.remove()
    return [*outs, final]


def distill(
    sparsifier: Sparsifier,
    teacher: nn.Module,
    batches: Sequence[Batch],
    loss: str = "squarehead",
    steps: int = 100,
    lr: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fine-tune the sparse model towards its dense ``teacher``, masks fixed.

    Parameters
    ----------
    sparsifier : Sparsifier
        Holds the student (``sparsifier.model``, changed in place) and its masks.
    teacher : nn.Module
        The dense model, same architecture (not changed).
    batches : sequence of dict
        Keyword batches of ``model.forward``, cycled in a seeded order.
    loss : str
        A name in :data:`DISTILL_LOSSES` (``squarehead`` or ``output``).
    steps : int
        AdamW steps at learning rate ``lr`` (no weight decay).
    seed : int
        Seeds the batch order and dropout.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of float
        The loss of every step.
    """
    from rich.progress import Progress

    loss_fn = DISTILL_LOSSES.get(loss)
    if steps < 1 or not batches:
        raise SparsecraftError(f"distillation needs steps >= 1 and at least one batch, got {steps} and {len(batches)}")
    student = sparsifier.model
    teacher.eval()
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sparsifier.attach(opt)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    history = []
    with torch.random.fork_rng(devices=[]), Progress(disable=not progress, transient=True) as bar:
        torch.manual_seed(seed)
        task = bar.add_task(f"{loss} distillation", total=steps)
        for _ in range(steps):
            if not order:
                order = torch.randperm(len(batches), generator=gen).tolist()
            batch = batches[order.pop()]
            mask = batch.get("attention_mask")
            with torch.no_grad():
                target = features(teacher, batch)
            value = loss_fn(target, features(student, batch), mask.bool() if mask is not None else None)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            history.append(float(value.detach()))
            bar.update(task, advance=1, description=f"{loss} distillation loss {value.item():.4f}")
    student.eval()
    return history
