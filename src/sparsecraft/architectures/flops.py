"""Forward multiply-accumulate counts of the Linear and Conv layers of a model, with sparse weights
counted at their density, so architectures can be compared at equal FLOPs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_density(module: nn.Module) -> float:
    """Kept fraction of ``module.weight``: its ``weight_mask`` buffer (a Sparsifier's) when there is
    one, else 1 (a dense layer; exact zeros of a dense layer are not discounted)."""
    mask = getattr(module, "weight_mask", None)
    if isinstance(mask, torch.Tensor):
        return float(mask.float().mean())
    return 1.0


def layer_macs(module: nn.Module, output: torch.Tensor) -> float:
    """Multiply-accumulates of one forward call of a Linear/Conv layer over its whole batch.

    Parameters
    ----------
    module : nn.Linear or nn.Conv1d/2d/3d
    output : Tensor
        What the call returned, shape ``(N, ..., out_features)`` or ``(N, C_out, *spatial)``.

    Returns
    -------
    float
        ``outputs x reduction size x density`` (bias additions not counted).
    """
    if isinstance(module, nn.Linear):
        reduction = module.in_features
    else:
        reduction = module.in_channels // module.groups * math.prod(module.kernel_size)
    return output.numel() * reduction * weight_density(module)


@torch.no_grad()
def macs_by_layer(model: nn.Module, example: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates of each Linear/Conv layer in one forward pass, per example.

    Parameters
    ----------
    model : nn.Module
    example : Tensor, shape ``(N, ...)``
        An input batch (``N >= 1``); counts are divided by ``N``.

    Returns
    -------
    dict of str to float
        ``{module name: MACs per example}`` for every Linear/Conv layer called (summed over calls).
    """
    counts: dict[str, float] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            counts[name] = counts.get(name, 0.0) + layer_macs(module, output) / len(example)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if isinstance(m, _COUNTED)]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def forward_macs(model: nn.Module, example: torch.Tensor) -> float:
    """Multiply-accumulates of the Linear/Conv layers in one forward pass, per example.

    Parameters
    ----------
    model : nn.Module
    example : Tensor, shape ``(N, ...)``

    Returns
    -------
    float
        The sum of :func:`macs_by_layer`; training costs about 3x this per example (forward and the
        two backward products), the same factor for every model, so ratios carry over.
    """
    return sum(macs_by_layer(model, example).values())
