"""The common return type of every dataset loader, plus small shared helpers."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import check_positive_int  # noqa: F401  (re-exported for older importers)


@dataclass
class DataSplits:
    """Train/test tensors of one dataset, ready for a model.

    ``task`` is ``"classification"`` (``*_y`` has shape ``(N,)``, class ids) or ``"lm"``
    (``*_x`` and ``*_y`` are ``(N, T)`` token ids, ``*_y`` being ``*_x`` shifted left by one).
    ``input_shape`` is the shape of one example without the batch dimension. ``calib_x`` is a
    small, fixed set of inputs for calibrated pruning (Wanda, SparseGPT); for classification it is
    a seeded subset of ``train_x``, for text it comes from paragraphs disjoint from train and test.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: str = "classification"
    calib_x: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __repr__(self) -> str:
        return (
            f"DataSplits({self.name!r}, task={self.task}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, calib={tuple(self.calib_x.shape)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Shift and scale every tensor by the scalar mean/std of ``train`` (no test-set leakage)."""
    mean = train.mean()
    std = train.std().clamp_min(1e-8)
    return tuple((t - mean) / std for t in (train, *others))


def seeded_subset(x: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Return ``min(count, len(x))`` rows of ``x`` chosen by a permutation seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(x), generator=gen)[: min(count, len(x))]
    return x[index.sort().values].clone()
