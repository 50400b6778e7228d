"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), the baseline of
S2FT, PST and SaRA: a frozen ``W`` plus a trainable ``(alpha / r) * B @ A`` with ``A`` ``(r, in)``
(Kaiming-uniform, as the paper's reference code) and ``B`` ``(out, r)`` starting at zero, so training
starts from the pretrained function; merging adds ``B @ A`` into ``W``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..options import Option
from .base import METHODS, Adapter, linear_targets, plain_linear, replace_module


class LoRALinear(nn.Module):
    """``y = x W^T + b + scale * x A^T B^T``; only ``lora_a`` ``(r, in)`` and ``lora_b`` ``(out, r)`` train."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.register_buffer("weight", base.weight.detach().clone())
        self.register_buffer("bias", None if base.bias is None else base.bias.detach().clone())
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        """The equivalent plain ``nn.Linear``."""
        return plain_linear(self.weight + self.scale * self.lora_b.detach() @ self.lora_a.detach(), self.bias)


@METHODS.register("lora")
class LoRA(Adapter):
    """Low-rank adapters on every selected ``nn.Linear``: ``rank * (in + out)`` trainable scalars each."""

    options = (
        Option("rank", int, 8, "rank r of the update B @ A", bounds="[1, inf)"),
        Option("alpha", float, None, "scale numerator: the update is (alpha / r) B @ A (default alpha = r)",
               bounds="(0, inf)"),
    )

    def __init__(self, model: nn.Module, layers: Any = None, keep_dense: Any = (), within: Any = None,
                 rank: int = 8, alpha: float | None = None) -> None:
        super().__init__(model)
        self.layers: dict[str, LoRALinear] = {}
        for t in linear_targets(model, layers, keep_dense, within):
            wrapped = LoRALinear(t.module, min(rank, *t.module.weight.shape), float(alpha or rank))
            replace_module(model, t.module_name, wrapped)
            self.layers[t.module_name] = wrapped

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.layers.values() for p in (m.lora_a, m.lora_b)]

    def _merge(self) -> None:
        for name, m in self.layers.items():
            replace_module(self.model, name, m.merged())
