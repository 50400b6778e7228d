"""A small ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition") for tiny inputs.

One class handles 2-D images (``dims=2``: Conv2d + BatchNorm2d) and 1-D signals (``dims=1``:
Conv1d + BatchNorm1d); :class:`ResNet1d` is the 1-D default.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from .base import MODELS, DataSpec, require_task

_LAYERS = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
}
_SHAPES = {1: "(C, L)", 2: "(C, H, W)"}


def _layers(dims: int) -> tuple[type, type, type]:
    if dims not in _LAYERS:
        raise SparsecraftError(f"dims must be 1 (signals) or 2 (images), got {dims!r}")
    return _LAYERS[dims]


def _input_dims(spec: DataSpec, who: str, allowed: tuple[int, ...]) -> int:
    """Spatial dimensions of ``spec``'s inputs: 1 for ``(C, L)``, 2 for ``(C, H, W)``; raise unless
    ``spec`` is a classification task with one of the ``allowed`` input ranks."""
    require_task("cnn", spec, "classification")
    dims = len(spec.input_shape) - 1
    if dims not in allowed:
        shapes = " or ".join(_SHAPES[d] for d in allowed)
        raise SparsecraftError(f"{who} needs inputs shaped {shapes}, got {spec.input_shape}")
    return dims


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is a strided 1x1
    conv + BN when the channel count or stride changes, identity otherwise."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, norm, _ = _layers(dims)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = norm(out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, stride=stride, bias=False), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("cnn")
class ResNetCNN(nn.Module):
    """Stem conv -> stages of :class:`BasicBlock` (stride 2 from the second stage) -> global
    average pool -> Linear ``head``.

    Input ``(N, in_channels, H, W)`` for ``dims=2`` or ``(N, in_channels, L)`` for ``dims=1``;
    output logits ``(N, num_classes)``. ``channels[i]`` is the width of stage ``i``;
    ``blocks_per_stage`` residual blocks per stage.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        blocks_per_stage: int = 1,
        dims: int = 2,
    ) -> None:
        super().__init__()
        conv, norm, pool = _layers(dims)
        widths = [check_positive_int(c, "channels") for c in channels]
        if not widths:
            raise SparsecraftError("channels must name at least one stage width, e.g. (16, 32)")
        check_positive_int(blocks_per_stage, "blocks_per_stage")
        self.dims = dims
        self.stem = nn.Sequential(
            conv(check_positive_int(in_channels, "in_channels"), widths[0], 3, padding=1, bias=False),
            norm(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        prev = widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(prev, width, stride, dims))
                prev = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = pool(1)
        self.head = nn.Linear(prev, check_positive_int(num_classes, "num_classes"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> "ResNetCNN":
        kwargs.setdefault("dims", _input_dims(spec, "model 'cnn'", (1, 2)))
        return cls(spec.input_shape[0], spec.num_classes, **kwargs)


class ResNet1d(ResNetCNN):
    """:class:`ResNetCNN` for 1-D signals ``(N, in_channels, L)`` (Conv1d + BatchNorm1d); ``channels``
    and ``blocks_per_stage`` (keywords) as there."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, **kwargs: Any) -> None:
        super().__init__(in_channels, num_classes, dims=1, **kwargs)

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> "ResNet1d":
        _input_dims(spec, "ResNet1d", (1,))
        return cls(spec.input_shape[0], spec.num_classes, **kwargs)
