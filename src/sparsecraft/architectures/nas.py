"""Architecture search for sparse networks: DASS and random search, over one small cell space.

* DASS (Mousavi, Loni, Alibeigi and Daneshtalab 2022, "DASS: Differentiable Architecture Search
  for Sparse Neural Networks"): DARTS (Liu, Simonyan and Yang 2019, first-order) whose search space
  also holds parametric sparse operations, :class:`SparseConv2d` / :class:`SparseLinear` (a weight
  whose forward pass keeps its largest-magnitude ``1 - s`` fraction, straight-through gradient),
  and whose architecture objective is sparsity-aware: validation loss of the supernet plus
  ``lam * max(0, E_alpha[density] - (1 - s))``, the expected density of the chosen parametric
  operations above the target (a dense convolution has density 1, a sparse one ``1 - s``,
  parameter-free operations none), so the search prefers operations that work when sparse.
* Random search (Rahul et al. 2021, "Random Search as a Baseline for Sparse Neural Network
  Architecture Search"): sample configurations (an operation per edge, hence which nodes are
  connected, and the sparse-training seed) of the over-parameterised cell network, train each
  briefly at the target sparsity, keep the best on validation accuracy.

The cell network: stem conv, ``cells`` cells of ``nodes`` intermediate nodes (node ``i`` sums one
operation on each earlier state, the cell input included; the cell's output is the sum of its
nodes), global average pooling, a hidden Linear (``linear`` or ``sparse_linear``), ReLU, head.
Inputs are images ``(N, C, H, W)`` (digits: 8x8). A found :class:`Architecture` is built as a
:class:`CellNet` whose sparse operations are plain layers, so every final network is pruned to the
target sparsity the same way (:func:`train_pruned`: gradual magnitude pruning, the ``gmp`` updater).
"""
from __future__ import annotations

import math
import random as _random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..registry import Registry
from ..training import SparsityConfig, evaluate, fit, make_updater
from .flops import forward_macs


def _straight_through_sparse(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """``weight`` with its ``round(s n)`` smallest magnitudes zeroed in the forward pass; the
    gradient reaches every weight (straight-through), so pruned weights may come back."""
    k = round(sparsity * weight.numel())
    if k == 0:
        return weight
    # one small kthvalue per call: selection.lowest's chunked radix select is built for whole models
    magnitude = weight.detach().abs()
    kept = weight * (magnitude > magnitude.flatten().kthvalue(k).values)
    return weight + (kept - weight).detach()


class SparseConv2d(nn.Conv2d):
    """A Conv2d whose weight is used at ``sparsity`` (largest magnitudes kept, recomputed each call)."""

    def __init__(self, *args: Any, sparsity: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sparsity = check_sparsity(sparsity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _straight_through_sparse(self.weight, self.sparsity), self.bias)


class SparseLinear(nn.Linear):
    """A Linear whose weight is used at ``sparsity`` (largest magnitudes kept, recomputed each call)."""

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.sparsity = check_sparsity(sparsity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _straight_through_sparse(self.weight, self.sparsity), self.bias)


class Zero(nn.Module):
    """The ``none`` operation: no connection (zeros of the input's shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


@dataclass(frozen=True)
class Operation:
    """One candidate operation: how to build it and how dense its weights are.

    Attributes
    ----------
    build : callable
        ``build(channels, sparsity, search)`` -> module mapping ``(N, C, H, W)`` to the same shape
        (``search=False``: sparse operations become plain layers, pruned later like the rest).
    weights : callable
        ``weights(channels)``: weights of its Conv/Linear layers.
    sparse : bool
        Whether its weights are used at the target sparsity during the search.
    """

    build: Callable[[int, float, bool], nn.Module]
    weights: Callable[[int], int]
    sparse: bool = False


def _conv(kernel: int, sparse: bool) -> Operation:
    def build(channels: int, sparsity: float, search: bool) -> nn.Module:
        if sparse and search:
            conv: nn.Conv2d = SparseConv2d(channels, channels, kernel, padding=kernel // 2, bias=False,
                                           sparsity=sparsity)
        else:
            conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, bias=False)
        return nn.Sequential(nn.ReLU(), conv, nn.BatchNorm2d(channels))

    return Operation(build, lambda c: c * c * kernel * kernel, sparse)


def _free(factory: Callable[[], nn.Module]) -> Operation:
    return Operation(lambda c, s, search: factory(), lambda c: 0)


#: The operations an edge may take; ``sparse_*`` are DASS's parametric sparse operations.
OPERATIONS: Registry[Operation] = Registry("search operation")
for _name, _op in {
    "none": _free(Zero), "skip": _free(nn.Identity),
    "avg_pool_3": _free(lambda: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)),
    "max_pool_3": _free(lambda: nn.MaxPool2d(3, stride=1, padding=1)),
    "conv_3": _conv(3, False), "conv_5": _conv(5, False),
    "sparse_conv_3": _conv(3, True), "sparse_conv_5": _conv(5, True),
}.items():
    OPERATIONS.register(_name)(_op)

#: The classic (dense) DARTS-style operations, and DASS's space: the same plus the sparse ones.
DENSE_SPACE = ("none", "skip", "avg_pool_3", "max_pool_3", "conv_3", "conv_5")
SPARSE_SPACE = DENSE_SPACE + ("sparse_conv_3", "sparse_conv_5")
FC_CHOICES = ("linear", "sparse_linear")


@dataclass(frozen=True)
class SearchSpace:
    """The cell network's shape and the operations its edges may take.

    Attributes
    ----------
    operations : tuple of str
        Names in :data:`OPERATIONS`.
    fc_choices : tuple of str
        ``"linear"`` and/or ``"sparse_linear"`` for the hidden layer.
    in_channels, num_classes : int
    channels : int
        Width of every cell.
    cells, nodes : int
        Cells, and intermediate nodes per cell (``nodes (nodes + 1) / 2`` edges per cell).
    hidden : int
        Width of the hidden Linear.
    sparsity : float
        The target sparsity (of the sparse operations during search, and of every final network).
    """

    operations: tuple[str, ...] = SPARSE_SPACE
    fc_choices: tuple[str, ...] = FC_CHOICES
    in_channels: int = 1
    num_classes: int = 10
    channels: int = 16
    cells: int = 2
    nodes: int = 2
    hidden: int = 32
    sparsity: float = 0.9

    def __post_init__(self) -> None:
        if not self.operations or not self.fc_choices:
            raise SparsecraftError("a search space needs at least one operation and one fc choice")
        for name in self.operations:
            OPERATIONS.get(name)
        for name in self.fc_choices:
            if name not in FC_CHOICES:
                raise SparsecraftError(f"unknown fc choice {name!r}; choose one of: {', '.join(FC_CHOICES)}")
        for name in ("in_channels", "num_classes", "channels", "cells", "nodes", "hidden"):
            check_positive_int(getattr(self, name), name)
        check_sparsity(self.sparsity)

    @property
    def edges_per_cell(self) -> int:
        return self.nodes * (self.nodes + 1) // 2


@dataclass(frozen=True)
class Architecture:
    """A discrete choice: an operation name per edge of each cell, and the hidden layer's kind.

    ``edges[c][e]``: edge ``e`` of cell ``c``, edges ordered node by node (node ``i`` has inputs
    ``0..i``: the cell input, then earlier nodes).
    """

    edges: tuple[tuple[str, ...], ...]
    fc: str

    def __str__(self) -> str:
        return " | ".join(",".join(cell) for cell in self.edges) + f" | fc={self.fc}"


def _check_architecture(space: SearchSpace, arch: Architecture) -> None:
    if len(arch.edges) != space.cells or any(len(c) != space.edges_per_cell for c in arch.edges):
        raise SparsecraftError(f"architecture needs {space.cells} cells of {space.edges_per_cell} edges, got "
                               f"{[len(c) for c in arch.edges]}")
    for name in (n for cell in arch.edges for n in cell):
        if name not in space.operations:
            raise SparsecraftError(f"operation {name!r} is not in the search space ({', '.join(space.operations)})")
    if arch.fc not in space.fc_choices:
        raise SparsecraftError(f"fc {arch.fc!r} is not in the search space ({', '.join(space.fc_choices)})")


class _Cell(nn.Module):
    """Node ``i`` = sum over its inputs ``j`` of ``edge(i, j)(state_j)``; output = sum of the nodes."""

    def __init__(self, edges: Sequence[nn.Module], nodes: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(edges)
        self.nodes = nodes

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        states, e = [x], 0
        for _ in range(self.nodes):
            total = 0
            for state in list(states):
                edge = self.edges[e]
                total = total + (edge(state, weights[e]) if weights is not None else edge(state))
                e += 1
            states.append(total)
        return sum(states[1:])


class _Mixed(nn.Module):
    """``sum_o w_o op_o(x)`` over the candidate operations (the DARTS relaxation)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


def _stem(space: SearchSpace) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(space.in_channels, space.channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(space.channels))


def _fc(space: SearchSpace, kind: str, search: bool) -> nn.Linear:
    if kind == "sparse_linear" and search:
        return SparseLinear(space.channels, space.hidden, space.sparsity)
    return nn.Linear(space.channels, space.hidden)


class SuperNet(nn.Module):
    """Every candidate on every edge, mixed by softmax(architecture parameters).

    Input ``(N, in_channels, H, W)``, output logits ``(N, num_classes)``. ``alpha`` has shape
    ``(cells, edges_per_cell, len(operations))``, ``alpha_fc`` ``(len(fc_choices),)``.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = _stem(space)
        self.cells = nn.ModuleList(
            _Cell([_Mixed([OPERATIONS.get(n).build(space.channels, space.sparsity, True) for n in space.operations])
                   for _ in range(space.edges_per_cell)], space.nodes) for _ in range(space.cells))
        self.fcs = nn.ModuleList(_fc(space, k, True) for k in space.fc_choices)
        self.head = nn.Linear(space.hidden, space.num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(space.cells, space.edges_per_cell, len(space.operations)))
        self.alpha_fc = nn.Parameter(torch.zeros(len(space.fc_choices)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.alpha_fc]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        weights = self.alpha.softmax(-1)
        for cell, w in zip(self.cells, weights):
            h = cell(h, w)
        pooled = h.mean(dim=(2, 3))
        fc_w = self.alpha_fc.softmax(-1)
        hidden = sum(w * fc(pooled) for w, fc in zip(fc_w, self.fcs))
        return self.head(F.relu(hidden))

    def expected_density(self) -> torch.Tensor:
        """Expected kept fraction of the parametric weights of the derived network under softmax(alpha)."""
        space, c = self.space, self.space.channels
        ops = [OPERATIONS.get(n) for n in space.operations]
        weights = torch.tensor([float(op.weights(c)) for op in ops])
        density = torch.tensor([1.0 - space.sparsity if op.sparse else 1.0 for op in ops])
        p = self.alpha.softmax(-1)
        kept, total = (p * weights * density).sum(), (p * weights).sum()
        fc_weights = float(space.channels * space.hidden)
        fc_density = torch.tensor([1.0 - space.sparsity if k == "sparse_linear" else 1.0 for k in space.fc_choices])
        pf = self.alpha_fc.softmax(-1)
        kept = kept + fc_weights * (pf * fc_density).sum()
        return kept / (total + fc_weights)

    def derive(self) -> Architecture:
        """The strongest operation on each edge (``none`` excluded, as DARTS) and hidden layer."""
        names = self.space.operations
        allowed = torch.tensor([n != "none" for n in names]) if len(names) > 1 else torch.ones(1, dtype=torch.bool)
        scores = self.alpha.detach().masked_fill(~allowed, float("-inf"))
        edges = tuple(tuple(names[int(i)] for i in cell.argmax(-1)) for cell in scores)
        return Architecture(edges, self.space.fc_choices[int(self.alpha_fc.detach().argmax())])


class CellNet(nn.Module):
    """The network of one :class:`Architecture`; sparse operations are built as plain layers.

    Input ``(N, in_channels, H, W)``, output logits ``(N, num_classes)``.
    """

    def __init__(self, space: SearchSpace, arch: Architecture) -> None:
        super().__init__()
        _check_architecture(space, arch)
        self.stem = _stem(space)
        self.cells = nn.ModuleList(
            _Cell([OPERATIONS.get(n).build(space.channels, space.sparsity, False) for n in cell], space.nodes)
            for cell in arch.edges)
        self.fc = _fc(space, arch.fc, False)
        self.head = nn.Linear(space.hidden, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        return self.head(F.relu(self.fc(h.mean(dim=(2, 3)))))


def prunable_layers(model: nn.Module) -> list[str]:
    """The cell convolutions and the hidden Linear of a :class:`CellNet` (stem and head stay dense)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and (n.startswith("cells.") or n == "fc")]


def train_pruned(model: CellNet, data: Any, sparsity: float, epochs: int, lr: float = 3e-3, batch_size: int = 64,
                 seed: int = 0) -> CellNet:
    """Train ``model`` in place while pruning its cells and hidden layer to ``sparsity`` (global
    gradual magnitude pruning, ``gmp``); a network without prunable layers is trained dense.

    Parameters
    ----------
    model : CellNet
    data : DataSplits or (Tensor, Tensor)
    sparsity : float
    epochs, lr, batch_size, seed
        As :func:`sparsecraft.training.fit`.

    Returns
    -------
    CellNet
        ``model``, with its pruned weights exact zeros.
    """
    layers = prunable_layers(model)
    updater = None
    if layers and sparsity > 0:
        updater = make_updater("gmp", SparsityConfig(sparsity, allocation="global", layers=layers), seed=seed)
    fit(model, data, updater, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False)
    if updater is not None:
        updater.finalize()
    return model


@dataclass
class SearchResult:
    """The outcome of a search.

    Attributes
    ----------
    architecture : Architecture
    budget_macs : float
        Training multiply-accumulates spent (3x forward per example seen, forward-only for
        validation scoring), comparable across methods.
    history : list of dict
        Per epoch (DARTS) or per candidate (random search): what was measured.
    """

    architecture: Architecture
    budget_macs: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def differentiable_search(space: SearchSpace, train: tuple[torch.Tensor, torch.Tensor],
                          val: tuple[torch.Tensor, torch.Tensor], epochs: int = 5, sparsity_weight: float = 1.0,
                          lr: float = 3e-3, arch_lr: float = 3e-2, batch_size: int = 64,
                          seed: int = 0) -> SearchResult:
    """First-order DARTS over ``space``; with ``sparsity_weight > 0`` the DASS objective.

    Each step trains the supernet weights on a training batch, then the architecture parameters
    on a validation batch with ``loss + sparsity_weight * max(0, expected_density - (1 - s))``.

    Parameters
    ----------
    space : SearchSpace
        ``SPARSE_SPACE`` operations for DASS; ``DENSE_SPACE`` and ``sparsity_weight=0`` for DARTS.
    train, val : (Tensor, Tensor)
        Images ``(N, C, H, W)`` and labels ``(N,)``: weights learn on ``train``, architecture on ``val``.
    epochs : int
    sparsity_weight : float
        ``>= 0``.
    lr, arch_lr : float
        Adam learning rates of the weights and of the architecture parameters.
    batch_size, seed : int

    Returns
    -------
    SearchResult
        ``history``: per epoch, the expected density and the derived architecture.
    """
    if not sparsity_weight >= 0 or math.isinf(sparsity_weight):
        raise SparsecraftError(f"sparsity_weight must be a finite number >= 0, got {sparsity_weight!r}")
    check_positive_int(epochs, "epochs")
    torch.manual_seed(seed)
    net = SuperNet(space)
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=lr)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=arch_lr)
    macs = forward_macs(net, train[0][:2])
    gen = torch.Generator().manual_seed(seed)
    seen = 0
    history = []
    net.train()
    for epoch in range(epochs):
        val_batches = _batches(len(val[0]), batch_size, gen)
        for i, idx in enumerate(_batches(len(train[0]), batch_size, gen)):
            w_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(train[0][idx]), train[1][idx]).backward()
            w_opt.step()
            vidx = val_batches[i % len(val_batches)]
            a_opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(val[0][vidx]), val[1][vidx])
            if sparsity_weight > 0:
                loss = loss + sparsity_weight * F.relu(net.expected_density() - (1.0 - space.sparsity))
            loss.backward()
            a_opt.step()
            seen += len(idx) + len(vidx)
        history.append({"epoch": epoch + 1, "expected_density": float(net.expected_density().detach()),
                        "architecture": str(net.derive())})
    return SearchResult(net.derive(), 3.0 * macs * seen, history)


def sample_architecture(space: SearchSpace, rng: _random.Random) -> Architecture:
    """A uniformly random :class:`Architecture` of ``space``."""
    edges = tuple(tuple(rng.choice(space.operations) for _ in range(space.edges_per_cell))
                  for _ in range(space.cells))
    return Architecture(edges, rng.choice(space.fc_choices))


def random_search(space: SearchSpace, train: tuple[torch.Tensor, torch.Tensor],
                  val: tuple[torch.Tensor, torch.Tensor], budget_macs: float, candidates: int = 8,
                  lr: float = 3e-3, batch_size: int = 64, seed: int = 0) -> SearchResult:
    """Random search: ``candidates`` random architectures, each trained at the target sparsity
    (:func:`train_pruned`) on an equal share of ``budget_macs``, the best on ``val`` kept.

    Parameters
    ----------
    space : SearchSpace
    train, val : (Tensor, Tensor)
    budget_macs : float
        Total training MACs (3x forward per example) to spend, e.g. a DARTS run's ``budget_macs``.
    candidates : int
    lr, batch_size, seed

    Returns
    -------
    SearchResult
        ``history``: per candidate, its architecture, examples seen and validation accuracy.
    """
    check_positive_int(candidates, "candidates")
    if not budget_macs > 0:
        raise SparsecraftError(f"budget_macs must be > 0, got {budget_macs!r}")
    rng = _random.Random(seed)
    history, spent = [], 0.0
    best: tuple[float, Architecture] | None = None
    for c in range(candidates):
        arch = sample_architecture(space, rng)
        torch.manual_seed(seed * 1000 + c)
        net = CellNet(space, arch)
        macs = forward_macs(net, train[0][:2])
        examples = int(budget_macs / candidates / (3.0 * max(macs, 1.0)))
        epochs = max(1, round(examples / len(train[0])))
        train_pruned(net, train, space.sparsity, epochs, lr=lr, batch_size=batch_size, seed=seed * 1000 + c)
        acc = evaluate(net, *val)
        spent += 3.0 * macs * epochs * len(train[0])
        history.append({"candidate": c, "architecture": str(arch), "epochs": epochs, "val_acc": acc})
        if best is None or acc > best[0]:
            best = (acc, arch)
    return SearchResult(best[1], spent, history)
