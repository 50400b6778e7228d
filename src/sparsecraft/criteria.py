"""Importance criteria: a score per weight, higher means more important.

Every criterion has one signature::

    criterion(model, targets, calib=None, loss_fn=None) -> {target.name: scores}

``scores`` has the parameter's shape and is a float32 tensor of its own (one-shot pruning changes
it in place rather than copying it). Patterns sum element scores over a group, so with the
``channel`` pattern ``magnitude`` ranks filters by L1 norm. ``calib`` is a calibration batch:
``x`` or ``(x, y)`` (or a list of them). Each registered :class:`Criterion` declares whether it
needs data and labels, so callers (the CLI, the training updaters) supply what it needs without
knowing any criterion by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .calibration import InputRecorder, wanda_scores
from .errors import SparsecraftError
from .losses import token_cross_entropy
from .registry import Registry
from .target import Target

Scores = dict[str, torch.Tensor]
Calib = torch.Tensor | tuple | list | None


@dataclass(frozen=True)
class Criterion:
    """A registered importance criterion and what it needs.

    Parameters
    ----------
    name : str
    fn : callable ``(model, targets, calib=None, loss_fn=None, **kw) -> Scores``
    needs_data : bool
        Needs calibration inputs ``x``.
    needs_labels : bool
        Needs labelled calibration data ``(x, y)`` (gradient criteria).
    """

    name: str
    fn: Callable[..., Scores]
    needs_data: bool = False
    needs_labels: bool = False

    def __call__(self, model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None,
                 **kwargs: Any) -> Scores:
        return self.fn(model, targets, calib=calib, loss_fn=loss_fn, **kwargs)


CRITERIA: Registry[Criterion] = Registry("criterion")


def criterion(name: str, needs_data: bool = False,
              needs_labels: bool = False) -> Callable[[Callable[..., Scores]], Callable[..., Scores]]:
    """Decorator registering a score function as criterion ``name`` (see :class:`Criterion`)."""
    def decorator(fn: Callable[..., Scores]) -> Callable[..., Scores]:
        CRITERIA.register(name)(Criterion(name, fn, needs_data or needs_labels, needs_labels))
        return fn

    return decorator


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


@criterion("magnitude")
def magnitude(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w|. With the channel pattern: the L1 norm of each filter (Li et al. 2017)."""
    return {t.name: t.param.detach().to(torch.float32, copy=True).abs_() for t in targets}


@criterion("random")
def random(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None,
           generator: torch.Generator | None = None) -> Scores:
    """Uniform random scores (Liu et al. 2022, 'The Unreasonable Effectiveness of Random Pruning')."""
    return {t.name: torch.rand(t.param.shape, generator=generator) for t in targets}


@criterion("snip", needs_labels=True)
def snip(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w * dL/dw| summed over the calibration batches (Lee et al. 2019, SNIP)."""
    return {k: v.abs() for k, v in _weight_times_grad(model, targets, calib, loss_fn, "snip").items()}


@criterion("taylor", needs_labels=True)
def taylor(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """First-order Taylor estimate of the loss change, (w * dL/dw)^2 (Molchanov et al. 2019)."""
    return {k: v.square() for k, v in _weight_times_grad(model, targets, calib, loss_fn, "taylor").items()}


@criterion("movement", needs_labels=True)
def movement(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """-w * dL/dw summed over batches: weights moving away from zero score high (Sanh et al. 2020).

    During training the movement updater accumulates the same quantity step by step.
    """
    return {k: -v for k, v in _weight_times_grad(model, targets, calib, loss_fn, "movement").items()}


@criterion("wanda", needs_data=True)
def wanda(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """|w_ij| * ||x_j||_2 from calibration activations (Sun et al. 2024, Wanda).

    The paper compares scores within each output row; use ``allocation="uniform"`` with the
    ``unstructured`` pattern per layer, or ``sparsecraft.posttrain`` for the exact per-row variant.
    Both use :func:`sparsecraft.calibration.wanda_scores`.
    """
    batches = _batches(calib, need_labels=False, who="wanda")
    with InputRecorder({t.name: t.module for t in targets}, diag_only=True) as recorder, torch.no_grad():
        for x, _ in batches:
            model(x)
    missing = recorder.missing()
    if missing:
        raise SparsecraftError(f"layer {missing[0].rpartition('.')[0]!r} was not reached by the calibration data")
    return {t.name: wanda_scores(t.param, recorder.stats[t.name]) for t in targets}


def _row_broadcast(t: Target, row_score: torch.Tensor) -> torch.Tensor:
    """Spread a per-output-row score evenly over the row, so a row's elements sum to it."""
    w = t.param.detach()
    per_elem = row_score.float() / (w[0].numel() if w.dim() > 1 else 1)
    return per_elem.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()


@criterion("l1_norm")
def l1_norm(model: nn.Module, targets: Sequence[Target], calib: Calib = None, loss_fn=None) -> Scores:
    """Each output channel's L1 norm, spread over its weights (for channel/filter pruning)."""
    return {t.name: _row_broadcast(t, t.param.detach().abs().reshape(t.param.shape[0], -1).sum(1)) for t in targets}


@criterion("l2_norm")
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


@criterion("bn_scale")
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
    """Run the named criterion; unknown names give a one-line error listing valid ones.

    Returns
    -------
    dict
        ``{target.name: scores}``, each of its parameter's shape (higher = more important).
    """
    return CRITERIA.get(criterion)(model, targets, calib=calib, loss_fn=loss_fn, **kwargs)
