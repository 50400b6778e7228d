"""PST (Li et al. 2022, "Parameter-Efficient Sparsity for Large Language Models Fine-Tuning") and the
movement-pruning baseline it is compared with (Sanh et al. 2020, "Movement Pruning").

Both prune a weight while fine-tuning it: the forward pass uses ``W ⊙ M`` with ``M`` the mask of the
current sparsity (a cubic ramp, Zhu & Gupta) cut from an importance score ``S`` by the layer's
sparsity pattern (``sparsecraft.patterns``); ``S`` learns through the straight-through estimator
``dL/dS = dL/d(W ⊙ M) ⊙ W`` (the movement score: a weight moving away from zero gains importance).

* movement pruning: ``S`` is a full trainable ``(out, in)`` matrix and ``W`` trains fully, so twice the
  layer's parameters train;
* PST: ``S = |W| + A B + r 1^T + 1 c^T``: the data-free magnitude plus a data-driven part that the paper
  found low-rank (``A`` ``(out, r)``, ``B`` ``(r, in)``) and structured (row ``r`` ``(out,)`` and column
  ``c`` ``(in,)`` terms); ``W = W_0 + U V`` trains as LoRA. Only ``A, B, r, c, U, V`` train.

Merging keeps ``W ⊙ M`` at the final sparsity and hands the masks to a :class:`~sparsecraft.Sparsifier`
(``adapter.sparsifier``), like every other way of getting zeros into a model here.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_sparsity
from ..options import Option
from ..patterns import get_pattern
from ..sparsifier import Sparsifier
from ..training.schedules import cubic_sparsity
from .base import METHODS, Adapter, linear_targets, plain_linear, replace_module


class MaskedLinear(nn.Module):
    """``y = x (W ⊙ M)^T + b``, ``M`` = the top of the importance ``S`` at ``self.sparsity``.

    ``importance``: ``"full"`` (a trainable ``(out, in)`` score, movement pruning) or ``"factored"``
    (PST: ``|W| + A B + r + c``); ``rank`` > 0 makes the weight ``W_0 + U V`` (LoRA), else ``W`` trains.
    """

    def __init__(self, base: nn.Linear, pattern: Any, importance: str, rank: int, score_rank: int) -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        self.pattern = get_pattern(pattern)
        self.sparsity = 0.0
        self.importance = importance
        w = base.weight.detach().clone()
        self.register_buffer("bias", None if base.bias is None else base.bias.detach().clone())
        if rank:
            self.register_buffer("weight", w)
            self.lora_u = nn.Parameter(torch.zeros(out_f, rank))
            self.lora_v = nn.Parameter(torch.empty(rank, in_f))
            nn.init.kaiming_uniform_(self.lora_v, a=math.sqrt(5))
        else:
            self.weight = nn.Parameter(w)
            self.lora_u = self.lora_v = None
        if importance == "full":
            self.score = nn.Parameter(torch.zeros(out_f, in_f))
        else:
            self.score_a = nn.Parameter(torch.zeros(out_f, score_rank))
            self.score_b = nn.Parameter(torch.randn(score_rank, in_f) / math.sqrt(in_f))
            self.score_row = nn.Parameter(torch.zeros(out_f))
            self.score_col = nn.Parameter(torch.zeros(in_f))

    def current_weight(self) -> torch.Tensor:
        """``W`` (``W_0 + U V`` under LoRA), shape ``(out, in)``."""
        if self.lora_u is None:
            return self.weight
        return self.weight + self.lora_u @ self.lora_v

    def scores(self, w: torch.Tensor) -> torch.Tensor:
        """Importance ``S`` ``(out, in)``; higher = kept."""
        if self.importance == "full":
            return self.score
        return (w.detach().abs() + self.score_a @ self.score_b + self.score_row[:, None]
                + self.score_col[None, :])

    def mask(self) -> torch.Tensor:
        """The bool mask at the current sparsity."""
        with torch.no_grad():
            return self._mask(self.scores(self.current_weight()))

    def _mask(self, s: torch.Tensor) -> torch.Tensor:
        if self.sparsity == 0 and self.pattern.fixed_density is None:
            return torch.ones_like(s, dtype=torch.bool)
        return self.pattern.mask_for_sparsity(s.detach(), self.sparsity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.current_weight()
        s = self.scores(w)
        m = self._mask(s).to(w.dtype) + (s - s.detach())  # value M, gradient to S (straight-through)
        return F.linear(x, w * m, self.bias)

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            w = self.current_weight()
            return plain_linear(w * self._mask(self.scores(w)), self.bias)


class _Pruning(Adapter):
    """Shared by PST and movement pruning: wrap the layers, ramp the sparsity, merge into a Sparsifier."""

    importance = "factored"

    def __init__(self, model: nn.Module, layers: Any = None, keep_dense: Any = (), within: Any = None,
                 sparsity: float = 0.5, pattern: str = "unstructured", warmup: float = 0.1, ramp: float = 0.7,
                 rank: int = 0, score_rank: int = 0) -> None:
        super().__init__(model)
        self.final = check_sparsity(sparsity)
        self.pattern = get_pattern(pattern)
        self.warmup, self.ramp = warmup, max(ramp, warmup)
        self.layers: dict[str, MaskedLinear] = {}
        for t in linear_targets(model, layers, keep_dense, within):
            self.pattern.n_groups(t.module.weight.shape)  # a pattern that does not fit the layer fails here
            wrapped = MaskedLinear(t.module, self.pattern, self.importance, min(rank, *t.module.weight.shape),
                                   min(score_rank, *t.module.weight.shape))
            replace_module(model, t.module_name, wrapped)
            self.layers[t.module_name] = wrapped

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.layers.values() for p in m.parameters() if p.requires_grad]

    def step(self, step: int, total: int) -> None:
        s = cubic_sparsity(step, self.final, start=round(self.warmup * total), end=max(1, round(self.ramp * total)))
        for m in self.layers.values():
            m.sparsity = s

    def _merge(self) -> None:
        masks, patterns = {}, {}
        for name, m in self.layers.items():
            m.sparsity = self.final
            replace_module(self.model, name, m.merged())
            masks[f"{name}.weight"] = self.model.get_submodule(name).weight != 0
            patterns[f"{name}.weight"] = str(self.pattern)
        self.sparsifier = Sparsifier(self.model, masks, patterns)


_COMMON = (
    Option("sparsity", float, 0.5, "final fraction of zeros in every adapted layer", bounds="[0, 1)"),
    Option("pattern", str, "unstructured", "sparsity pattern of the masks (sparsecraft.patterns spec)"),
    Option("warmup", float, 0.1, "fraction of the steps before pruning starts", bounds="[0, 1]"),
    Option("ramp", float, 0.7, "fraction of the steps at which the final sparsity is reached", bounds="(0, 1]"),
)


@METHODS.register("pst")
class PST(_Pruning):
    """Parameter-efficient sparse training: factored importance, LoRA weight update."""

    importance = "factored"
    options = _COMMON + (
        Option("rank", int, 8, "LoRA rank of the weight update", bounds="[1, inf)"),
        Option("score_rank", int, 8, "rank of the data-driven importance A B", bounds="[1, inf)"),
    )

    def __init__(self, model: nn.Module, rank: int = 8, score_rank: int = 8, **kwargs: Any) -> None:
        super().__init__(model, rank=rank, score_rank=score_rank, **kwargs)


@METHODS.register("movement")
class Movement(_Pruning):
    """Movement pruning: a full score matrix per layer and full weight training."""

    importance = "full"
    options = _COMMON
