"""Importance criteria: a score per weight, higher means more important.

Every criterion has one signature::

    criterion(model, targets, calib=None, loss_fn=None) -> {target.name: scores}

``scores`` has the parameter's shape. Patterns sum element scores over a group, so with the
``channel`` pattern ``magnitude`` ranks filters by L1 norm. ``calib`` is a calibration batch:
``x`` or ``(x, y)`` (or a list of them); criteria that need data say so in a one-line error.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SparsecraftError
from .registry import Registry
from .target import Target

Scores = dict[str, torch.Tensor]
Calib = torch.Tensor | tuple | list | None
CRITERIA: Registry[Callable[..., Scores]] = Registry("criterion")


def _batches(calib: Calib, need_labels: bool, who: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalise ``calib`` to a list of (x, y) batches."""
    if calib is None:
        raise SparsecraftError(f"criterion {who!r} needs calibration data: pass calib=(x, y)")
    if isinstance(calib, torch.Tensor):
        batches = [(calib, None)]
    elif isinstance(calib, tuple) and len(calib) == 2 and isinstance(calib[0], torch.Tensor):
        batches = [calib]
    else:
        batches = [(b, None) if isinstance(b, torch.Tensor) else tuple(b) for b in calib]
    if need_labels and any(y is None for _, y in batches):
        raise SparsecraftError(f"criterion {who!r} needs labelled calibration data: pass calib=(x, y)")
    return batches


def token_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for ``(N, C)`` logits and ``(N,)`` labels, or ``(N, T, C)`` and ``(N, T)`` (language models)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _weight_times_grad(model: nn.Module, targets: Sequence[Target], calib: Calib, loss_fn, who: str) -> Scores:
    """Sum over calibration batches of ``w * dL/dw`` for every target (signed)."""
    loss_fn = loss_fn or token_cross_entropy
    acc = {t.name: torch.zeros_like(t.param, dtype=torch.float32) for t in targets}
    saved = [t.param.grad for t in targets]
    for t in targets:
        t.param.grad = None
    for x, y in _batches(calib, need_labels=True, who=who):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for t in targets:
            if t.param.grad is not None:
                acc[t.name] += (t.param.detach() * t.param.grad).float()
    model.zero_grad(set_to_none=True)
    for t, g in zip(targets, saved):
        t.param.grad = g
    return acc


@CRITERIA.register("magnitude")
def magnitude(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w|. With the channel pattern: the L1 norm of each filter (Li et al. 2017)."""
    return {t.name: t.param.detach().abs().float() for t in targets}


@CRITERIA.register("random")
def random(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None,
           generator: torch.Generator | None = None) -> Scores:
    """Uniform random scores (Liu et al. 2022, 'The Unreasonable Effectiveness of Random Pruning')."""
    return {t.name: torch.rand(t.param.shape, generator=generator) for t in targets}


@CRITERIA.register("snip")
def snip(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w * dL/dw| summed over the calibration batches (Lee et al. 2019, SNIP)."""
    return {k: v.abs() for k, v in _weight_times_grad(model, targets, calib, loss_fn, "snip").items()}


@CRITERIA.register("taylor")
def taylor(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """First-order Taylor estimate of the loss change, (w * dL/dw)^2 (Molchanov et al. 2019)."""
    return {k: v.square() for k, v in _weight_times_grad(model, targets, calib, loss_fn, "taylor").items()}


@CRITERIA.register("movement")
def movement(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """-w * dL/dw summed over batches: weights moving away from zero score high (Sanh et al. 2020).

    During training the movement updater accumulates the same quantity step by step.
    """
    return {k: -v for k, v in _weight_times_grad(model, targets, calib, loss_fn, "movement").items()}


@contextmanager
def _input_norms(targets: Sequence[Target]) -> Iterator[dict[str, torch.Tensor]]:
    """Accumulate the squared L2 norm of every input feature of each target layer during forwards.

    Linear: per in_feature over all tokens. Conv: per input channel over batch and positions,
    broadcast over the kernel. Embedding inputs are indices, so their rows are counted instead.
    """
    sq: dict[str, torch.Tensor] = {}

    def hook(target: Target):
        def fn(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0].detach()
            if isinstance(module, nn.Embedding):
                v = torch.bincount(x.reshape(-1), minlength=module.num_embeddings).float()
            elif isinstance(module, nn.Linear):
                v = x.reshape(-1, x.shape[-1]).float().square().sum(0)
            else:
                v = x.float().square().transpose(0, 1).reshape(x.shape[1], -1).sum(1)
            sq[target.name] = sq.get(target.name, 0) + v
        return fn

    handles = [t.module.register_forward_pre_hook(hook(t)) for t in targets]
    try:
        yield sq
    finally:
        for h in handles:
            h.remove()


@CRITERIA.register("wanda")
def wanda(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w_ij| * ||x_j||_2 from calibration activations (Sun et al. 2024, Wanda).

    The paper compares scores within each output row; use ``allocation="uniform"`` with the
    ``unstructured`` pattern per layer, or ``sparsecraft.posttrain`` for the exact per-row variant.
    """
    batches = _batches(calib, need_labels=False, who="wanda")
    with _input_norms(targets) as sq, torch.no_grad():
        for x, _ in batches:
            model(x)
    scores = {}
    for t in targets:
        if t.name not in sq:
            raise SparsecraftError(f"layer {t.module_name!r} was not reached by the calibration data")
        norm = sq[t.name].sqrt()
        w = t.param.detach().abs().float()
        if isinstance(t.module, nn.Embedding):
            scores[t.name] = w * norm[:, None]
        elif isinstance(t.module, nn.Linear):
            scores[t.name] = w * norm[None, :]
        else:  # conv: output channel o of group g sees input channels g * (in / groups) + j
            groups = t.module.groups
            per_out = norm.reshape(groups, -1).repeat_interleave(w.shape[0] // groups, dim=0)
            scores[t.name] = w * per_out.reshape(*per_out.shape, *([1] * (w.dim() - 2)))
    return scores


def _row_broadcast(t: Target, row_score: torch.Tensor) -> torch.Tensor:
    """Spread a per-output-row score evenly over the row, so a row's elements sum to it."""
    w = t.param.detach()
    per_elem = row_score.float() / (w[0].numel() if w.dim() > 1 else 1)
    return per_elem.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()


@CRITERIA.register("l1_norm")
def l1_norm(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """Each output channel's L1 norm, spread over its weights (for channel/filter pruning)."""
    return {t.name: _row_broadcast(t, t.param.detach().abs().reshape(t.param.shape[0], -1).sum(1)) for t in targets}


@CRITERIA.register("l2_norm")
def l2_norm(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """Each output channel's L2 norm, spread over its weights (for channel/filter pruning)."""
    return {t.name: _row_broadcast(t, t.param.detach().reshape(t.param.shape[0], -1).norm(dim=1)) for t in targets}


def batchnorm_after(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Map each Conv/Linear module name to the BatchNorm that normalises its outputs.

    Pairs a BatchNorm with the latest preceding Conv/Linear (in module order) whose number of
    outputs equals the BatchNorm's ``num_features``: the Conv -> BN layout of ResNets and VGGs.
    """
    pairs: dict[str, nn.modules.batchnorm._BatchNorm] = {}
    last: tuple[str, int] | None = None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            last = (name, m.out_channels)
        elif isinstance(m, nn.Linear):
            last = (name, m.out_features)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and last and last[1] == m.num_features:
            pairs[last[0]] = m
            last = None
    return pairs


@CRITERIA.register("bn_scale")
def bn_scale(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|gamma| of the BatchNorm after each layer (Liu et al. 2017, network slimming).

    Layers without a following BatchNorm get a score above every gamma, so they are pruned last.
    """
    bns = batchnorm_after(model)
    top = max((float(bn.weight.detach().abs().max()) for bn in bns.values()), default=1.0) + 1.0
    out = {}
    for t in targets:
        bn = bns.get(t.module_name)
        gamma = bn.weight.detach().abs() if bn is not None else torch.full((t.param.shape[0],), top)
        out[t.name] = _row_broadcast(t, gamma)
    return out


def compute_scores(criterion: str, model: nn.Module, targets: Sequence[Target], calib: Calib = None,
                   loss_fn=None, **kwargs) -> Scores:
    """Run the named criterion; unknown names give a one-line error listing valid ones."""
    return CRITERIA.get(criterion)(model, targets, calib=calib, loss_fn=loss_fn, **kwargs)
