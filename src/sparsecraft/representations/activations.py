"""Activation sparsity: measure it, and enforce it with top-k.

Li et al. 2023, "The Lazy Neuron Phenomenon: On Emergence of Activation Sparsity in Transformers"
(ICLR), find that the MLP hidden activations of trained transformers are very sparse (a few percent
of ReLU outputs are non-zero) and that enforcing it with top-k thresholding keeps accuracy.

* :func:`measure_activation_sparsity` runs a model on inputs with forward hooks on every activation
  module (``nn.ReLU``, ``nn.GELU``, ...) and reports, per layer, the fraction of entries with
  ``|a| <= eps``.
* :class:`TopKActivation` keeps the ``k`` largest entries of every row (token) along the last axis.
* :func:`sparsify_activations` puts a :class:`TopKActivation` after each MLP hidden activation (an
  activation module registered right after an ``nn.Linear`` sibling: ``MLP.layers`` and the
  transformer's ``FeedForward.act``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int

#: Module types whose outputs count as "activations".
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Tanh, nn.Sigmoid,
    nn.Mish, nn.Hardswish,
)


@dataclass
class LayerActivationSparsity:
    """One activation module's statistics over all inputs seen.

    Attributes
    ----------
    name : str
        Module name in the model.
    kind : str
        Module class, e.g. ``"ReLU"``.
    width : int
        Size of the channel axis (the last, by default).
    entries, zeros, rows : int
        Activations seen, those with ``|a| <= eps``, and rows (tokens or examples) seen.
    zero_fraction : float
        ``zeros / entries``, in [0, 1].
    mean_active : float
        Mean count of entries with ``|a| > eps`` per row.
    """

    name: str
    kind: str
    width: int
    entries: int
    zeros: int
    rows: int

    @property
    def zero_fraction(self) -> float:
        """Share of entries with ``|a| <= eps``."""
        return self.zeros / self.entries if self.entries else 0.0

    @property
    def mean_active(self) -> float:
        """Mean count of entries with ``|a| > eps`` per row."""
        return (self.entries - self.zeros) / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, object]:
        """The fields plus ``zero_fraction`` and ``mean_active``, for tables and JSON."""
        return {**asdict(self), "zero_fraction": self.zero_fraction, "mean_active": self.mean_active}


class ActivationMonitor:
    """Context manager counting near-zero activations of every activation module of ``model``.

    ``with ActivationMonitor(model, eps=0.0) as mon: model(x)`` then ``mon.table()`` gives one
    :class:`LayerActivationSparsity` per module, in module order. Counts accumulate over all forwards
    inside the ``with``; hooks are removed on exit.

    Parameters
    ----------
    model : nn.Module
        Must contain activation modules (``ACTIVATION_TYPES`` or :class:`TopKActivation`).
    eps : float, default=0.0
        Entries with ``|a| <= eps`` count as zero (>= 0).
    channel_dim : int, default=-1
        Axis of the activation that holds the channels (its size is ``width``).
    """

    def __init__(self, model: nn.Module, eps: float = 0.0, channel_dim: int = -1) -> None:
        if not eps >= 0:
            raise SparsecraftError(f"eps must be >= 0, got {eps!r}")
        self.model = model
        self.eps = float(eps)
        self.channel_dim = channel_dim
        self.stats: dict[str, LayerActivationSparsity] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "ActivationMonitor":
        for name, module in self.model.named_modules():
            if isinstance(module, ACTIVATION_TYPES + (TopKActivation,)):
                self._handles.append(module.register_forward_hook(self._hook(name or "<model>")))
        if not self._handles:
            raise SparsecraftError(
                "model has no activation modules (nn.ReLU, nn.GELU, ...) to measure; use activation "
                "modules instead of functional calls"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            a = output.detach()
            zeros = int((a.abs() <= self.eps).sum())
            width = a.shape[self.channel_dim] if a.dim() else 1
            rows = a.numel() // max(width, 1)
            if name not in self.stats:
                self.stats[name] = LayerActivationSparsity(name, type(module).__name__, width, 0, 0, 0)
            s = self.stats[name]
            s.entries += a.numel()
            s.zeros += zeros
            s.rows += rows

        return hook

    def table(self) -> list[LayerActivationSparsity]:
        """Per-layer statistics.

        Returns
        -------
        list of LayerActivationSparsity
            In the order the layers first ran.
        """
        return list(self.stats.values())


@torch.no_grad()
def measure_activation_sparsity(
    model: nn.Module, inputs: torch.Tensor, eps: float = 0.0, batch_size: int = 256
) -> list[LayerActivationSparsity]:
    """Near-zero activation statistics of every activation module of a model.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (its training flag is restored).
    inputs : torch.Tensor of shape (N, ...)
        Model inputs.
    eps : float, default=0.0
        Entries with ``|a| <= eps`` count as zero.
    batch_size : int, default=256
        Inputs per forward.

    Returns
    -------
    list of LayerActivationSparsity
        One per activation module, in the order they ran (see :class:`ActivationMonitor`).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    try:
        with ActivationMonitor(model, eps) as monitor:
            for start in range(0, len(inputs), batch_size):
                model(inputs[start : start + batch_size])
    finally:
        model.train(was_training)
    return monitor.table()


def _resolve_k(width: int, k: int | None, fraction: float | None) -> int:
    if (k is None) == (fraction is None):
        raise SparsecraftError("give exactly one of k (entries kept per row) or fraction (share kept)")
    if k is not None:
        return min(check_positive_int(k, "k"), width)
    if not 0.0 < float(fraction) <= 1.0:  # type: ignore[arg-type]
        raise SparsecraftError(f"fraction must be in (0, 1] (share of entries kept), got {fraction!r}")
    return max(1, min(width, math.ceil(float(fraction) * width)))  # type: ignore[arg-type]


def topk_mask(x: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Mask of the largest entries of every slice.

    Parameters
    ----------
    x : torch.Tensor
    k : int
        Entries kept per slice.
    dim : int, default=-1
        Axis along which slices are taken.

    Returns
    -------
    torch.Tensor of bool, the shape of ``x``
        Exactly ``min(k, x.shape[dim])`` True entries per slice: the largest values (ties broken
        by ``torch.topk``).
    """
    k = min(k, x.shape[dim])
    idx = x.topk(k, dim=dim).indices
    return torch.zeros_like(x, dtype=torch.bool).scatter_(dim, idx, True)


class TopKActivation(nn.Module):
    """Keep the ``k`` largest entries of each row along the last axis and zero the rest.

    Gradients flow through the kept entries only. Input and output ``(..., width)``.

    Parameters
    ----------
    k : int, optional
        Entries kept per row.
    fraction : float, optional
        Share kept per row in (0, 1]: ``ceil(fraction * width)`` entries. Give exactly one of
        ``k`` and ``fraction``.
    """

    def __init__(self, k: int | None = None, fraction: float | None = None) -> None:
        super().__init__()
        _resolve_k(1 << 30, k, fraction)  # validate now, not at the first forward
        self.k = k
        self.fraction = fraction

    def kept(self, width: int) -> int:
        """Entries kept per row.

        Parameters
        ----------
        width : int
            Size of the last axis.

        Returns
        -------
        int
            In [1, width].
        """
        return _resolve_k(width, self.k, self.fraction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., width)`` with all but the kept entries of each row zeroed."""
        return x * topk_mask(x.detach(), self.kept(x.shape[-1]))

    def extra_repr(self) -> str:
        return f"k={self.k}" if self.k is not None else f"fraction={self.fraction}"


def _mlp_activations(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(parent, child name) of each activation module registered right after an ``nn.Linear``."""
    for parent in model.modules():
        previous: nn.Module | None = None
        for name, child in parent.named_children():
            if isinstance(child, ACTIVATION_TYPES) and isinstance(previous, nn.Linear):
                yield parent, name
            previous = child


def sparsify_activations(
    model: nn.Module, fraction: float | None = None, k: int | None = None
) -> list[str]:
    """Append a :class:`TopKActivation` to every MLP hidden activation of ``model`` (in place).

    An MLP hidden activation is an activation module registered directly after an ``nn.Linear``
    sibling (``MLP.layers``, ``FeedForward.act`` of ``TinyTransformer``). Each becomes
    ``nn.Sequential(activation, TopKActivation(k, fraction))``.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    fraction : float, optional
        Share of entries kept per row, in (0, 1].
    k : int, optional
        Entries kept per row. Give exactly one of ``fraction`` and ``k``.

    Returns
    -------
    list of str
        Names of the replaced activation modules.
    """
    _resolve_k(1 << 30, k, fraction)
    found = list(_mlp_activations(model))
    if not found:
        raise SparsecraftError(
            "no MLP hidden activation found (an activation module right after an nn.Linear)"
        )
    names = {id(m): n for n, m in model.named_modules()}
    replaced = []
    for parent, name in found:
        act = getattr(parent, name)
        setattr(parent, name, nn.Sequential(act, TopKActivation(k=k, fraction=fraction)))
        prefix = names[id(parent)]
        replaced.append(f"{prefix}.{name}" if prefix else name)
    return replaced


@contextlib.contextmanager
def activation_sparsity(model: nn.Module, eps: float = 0.0) -> Iterator[ActivationMonitor]:
    """``with activation_sparsity(model) as mon: model(x)``; the functional form of :class:`ActivationMonitor`.

    Parameters
    ----------
    model : nn.Module
    eps : float, default=0.0
        Entries with ``|a| <= eps`` count as zero.

    Returns
    -------
    context manager yielding ActivationMonitor
    """
    with ActivationMonitor(model, eps) as monitor:
        yield monitor
