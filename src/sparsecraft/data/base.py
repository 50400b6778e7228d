"""The common return type of every dataset loader, plus small shared helpers."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DataSplits:
    """Train/test tensors of one dataset, ready for a model.

    Attributes
    ----------
    name : str
        Registry name of the dataset.
    train_x, test_x : torch.Tensor of shape (N, *input_shape)
        Inputs: float32 for classification, int64 token ids ``(N, T)`` for ``"lm"``.
    train_y, test_y : torch.Tensor
        Classification: class ids of shape (N,). LM: ``(N, T)`` token ids, the inputs shifted left
        by one.
    num_classes : int
        Classes, or the vocabulary size for ``"lm"``.
    input_shape : tuple of int
        Shape of one example without the batch dimension.
    task : {"classification", "lm"}, default="classification"
    calib_x : torch.Tensor of shape (n_calib, *input_shape)
        A small, fixed set of inputs for calibrated pruning (Wanda, SparseGPT); for classification
        a seeded subset of ``train_x``, for text windows of paragraphs disjoint from train and test.
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
    """Shift and scale every tensor by the scalar mean and std of ``train`` (no test-set leakage).

    Parameters
    ----------
    train : torch.Tensor
    *others : torch.Tensor
        Tensors standardized with the statistics of ``train``.

    Returns
    -------
    tuple of torch.Tensor
        ``train`` and then ``others``, standardized, same shapes.
    """
    mean = train.mean()
    std = train.std().clamp_min(1e-8)
    return tuple((t - mean) / std for t in (train, *others))


def seeded_subset(x: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """A seeded subset of rows.

    Parameters
    ----------
    x : torch.Tensor of shape (N, ...)
    count : int
    seed : int

    Returns
    -------
    torch.Tensor of shape (min(count, N), ...)
        A copy of the chosen rows, in their original order.
    """
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(x), generator=gen)[: min(count, len(x))]
    return x[index.sort().values].clone()
