"""A plain multi-layer perceptron over flattened inputs."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import check_positive_int
from .base import MODELS, DataSpec, require_task


@MODELS.register("mlp")
class MLP(nn.Module):
    """``Flatten -> [Linear -> ReLU] * len(hidden) -> Linear``.

    Input ``(N, *)`` with ``prod(*) == in_features``; output logits ``(N, num_classes)``. Layers are
    ``self.layers`` (an ``nn.Sequential``); the last Linear is ``self.head``.
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.0
    ) -> None:
        super().__init__()
        sizes = [check_positive_int(in_features, "in_features")]
        sizes += [check_positive_int(h, "hidden size") for h in hidden]
        blocks: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(sizes[-1], check_positive_int(num_classes, "num_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x))

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> "MLP":
        require_task("mlp", spec, "classification")
        return cls(math.prod(spec.input_shape), spec.num_classes, **kwargs)
