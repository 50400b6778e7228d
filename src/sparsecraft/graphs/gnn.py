"""A small GNN stack in plain torch: GCN and GIN layers over a sparse adjacency, full-batch training.

Message passing is one ``torch.sparse.mm`` of a COO adjacency ``(N, N)`` by the node features
``(N, F)``: ``O(E F)`` work instead of the dense ``O(N^2 F)``. The adjacency's values are an
ordinary differentiable tensor, so a learned edge mask (UGS) gets gradients through it.
Layers (``LAYERS``): ``gcn`` (Kipf & Welling 2017, symmetric normalization with self-loops) and
``gin`` (Xu et al. 2019, sum aggregation plus ``(1 + eps)`` times the node itself, then an MLP).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..registry import Registry
from .data import Graph

LAYERS: Registry[type["GraphLayer"]] = Registry("GNN layer")


def adjacency(edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None = None, *,
              normalize: bool = True, self_loops: bool = True) -> torch.Tensor:
    """The symmetric adjacency of undirected edges as a coalesced sparse COO tensor.

    Parameters
    ----------
    edge_index : torch.Tensor of shape (2, E)
        Undirected edges, each once (both directions are added here).
    num_nodes : int
        N.
    edge_weight : torch.Tensor of shape (E,), optional
        Weight of each edge (default 1); gradients flow to it.
    normalize : bool
        Return ``D^-1/2 A D^-1/2`` with ``D`` the weighted degrees (after self-loops).
    self_loops : bool
        Add the identity (weight 1) first.

    Returns
    -------
    torch.Tensor of shape (N, N)
        Sparse COO, coalesced, float32.
    """
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise SparsecraftError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    e = edge_index.shape[1]
    w = torch.ones(e) if edge_weight is None else edge_weight.float()
    if w.shape != (e,):
        raise SparsecraftError(f"edge_weight must have shape ({e},), got {tuple(w.shape)}")
    rows = torch.cat([edge_index[0], edge_index[1]])
    cols = torch.cat([edge_index[1], edge_index[0]])
    vals = torch.cat([w, w])
    if self_loops:
        loop = torch.arange(num_nodes)
        rows, cols = torch.cat([rows, loop]), torch.cat([cols, loop])
        vals = torch.cat([vals, torch.ones(num_nodes)])
    if normalize:
        deg = torch.zeros(num_nodes).index_add(0, rows, vals)
        inv_sqrt = deg.clamp_min(1e-12).rsqrt() * (deg > 0)
        vals = vals * inv_sqrt[rows] * inv_sqrt[cols]
    order = torch.argsort(rows * num_nodes + cols)
    return torch.sparse_coo_tensor(torch.stack([rows[order], cols[order]]), vals[order], (num_nodes, num_nodes),
                                   is_coalesced=True, check_invariants=False)


def propagate(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``adj @ h`` for a sparse COO or a dense adjacency.

    Parameters
    ----------
    adj : torch.Tensor of shape (N, N)
    h : torch.Tensor of shape (N, F)

    Returns
    -------
    torch.Tensor of shape (N, F)
    """
    return torch.sparse.mm(adj, h) if adj.is_sparse else adj @ h


class GraphLayer(nn.Module):
    """One message-passing layer; ``normalize`` / ``self_loops`` say which adjacency it expects."""

    normalize = True
    self_loops = True

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@LAYERS.register("gcn")
class GCNLayer(GraphLayer):
    """``H' = D^-1/2 (A + I) D^-1/2 H W + b`` (Kipf & Welling, ICLR 2017)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return propagate(adj, self.lin(h)) + self.bias


@LAYERS.register("gin")
class GINLayer(GraphLayer):
    """``H' = MLP((1 + eps) H + A H)`` with a two-layer MLP and a learned eps (Xu et al., ICLR 2019)."""

    normalize = False
    self_loops = False

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(()))
        self.lin1 = nn.Linear(in_features, out_features)
        self.lin2 = nn.Linear(out_features, out_features)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        z = (1 + self.eps) * h + propagate(adj, h)
        return self.lin2(F.relu(self.lin1(z)))


class GNN(nn.Module):
    """A stack of graph layers of one kind, ReLU and dropout between them, logits out.

    Parameters
    ----------
    in_features : int
        F, the node feature size.
    hidden : int
        Width of every hidden layer.
    num_classes : int
    num_layers : int, default=2
    kind : str, default="gcn"
        A name in ``LAYERS``.
    dropout : float, default=0.5
        On the input of every layer, in [0, 1).
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, num_layers: int = 2, kind: str = "gcn",
                 dropout: float = 0.5) -> None:
        super().__init__()
        layer = LAYERS.get(kind)
        if num_layers < 1 or hidden < 1:
            raise SparsecraftError(f"num_layers and hidden must be >= 1, got {num_layers} and {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise SparsecraftError(f"dropout must be in [0, 1), got {dropout}")
        sizes = [in_features] + [hidden] * (num_layers - 1) + [num_classes]
        self.kind = kind
        self.layers = nn.ModuleList(layer(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = dropout

    def adjacency(self, graph: Graph, edge_weight: torch.Tensor | None = None, dense: bool = False) -> torch.Tensor:
        """The adjacency this model's layers expect for ``graph`` (sparse COO, or dense if asked).

        Parameters
        ----------
        graph : Graph
        edge_weight : torch.Tensor of shape (E,), optional
        dense : bool
            Return a dense ``(N, N)`` tensor (for the dense-vs-sparse comparison).

        Returns
        -------
        torch.Tensor of shape (N, N)
        """
        layer = self.layers[0]
        adj = adjacency(graph.edge_index, graph.num_nodes, edge_weight, normalize=layer.normalize,
                        self_loops=layer.self_loops)
        return adj.to_dense() if dense else adj

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Logits.

        Parameters
        ----------
        x : torch.Tensor of shape (N, F)
        adj : torch.Tensor of shape (N, N)
            From :meth:`adjacency`.

        Returns
        -------
        torch.Tensor of shape (N, num_classes)
        """
        h = x
        for i, layer in enumerate(self.layers):
            if i:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, self.training)
            h = layer(h, adj)
        return h


def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of the nodes in ``mask`` whose arg-max logit is their class."""
    return float((logits[mask].argmax(1) == y[mask]).float().mean())


def distill_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(teacher) || softmax(student))`` summed over classes, averaged over nodes."""
    return F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean")


@dataclass
class TrainResult:
    """Outcome of :func:`train_node_classifier`, at the epoch of best validation accuracy.

    Attributes
    ----------
    val_acc, test_acc : float
    epoch : int
    logits : torch.Tensor of shape (N, C)
        Eval-mode logits at that epoch (the distillation teacher).
    state : dict
        The model's ``state_dict`` at that epoch (a copy).
    """

    val_acc: float
    test_acc: float
    epoch: int
    logits: torch.Tensor
    state: dict


def train_node_classifier(model: nn.Module, graph: Graph, adj: torch.Tensor | Callable[[], torch.Tensor], *,
                          epochs: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
                          teacher: torch.Tensor | None = None, distill_weight: float = 0.0,
                          penalty: Callable[[], torch.Tensor] | None = None,
                          after_step: Callable[[], None] | None = None,
                          extra_params: list[torch.Tensor] | None = None,
                          forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> TrainResult:
    """Full-batch Adam training on the training nodes, keeping the best-validation epoch.

    Parameters
    ----------
    model : nn.Module
        Called as ``model(graph.x, adj)`` unless ``forward`` is given.
    graph : Graph
    adj : torch.Tensor of shape (N, N), or a callable returning one
        A callable is called every step (an adjacency built from learned edge weights).
    epochs : int
    lr, weight_decay : float
        Adam's (weight decay on the model's parameters only).
    teacher : torch.Tensor of shape (N, C), optional
        Logits to distill from on every node (TEDDY's distillation).
    distill_weight : float
        Weight of :func:`distill_kl` against the cross-entropy.
    penalty : callable, optional
        Added to the loss (UGS's l1 on its masks).
    after_step : callable, optional
        Called after every optimizer step (TEDDY's projection onto the l0 ball).
    extra_params : list of torch.Tensor, optional
        Further trainable tensors (UGS's masks), trained without weight decay.
    forward : callable, optional
        ``forward(x, adj) -> logits`` replacing ``model(x, adj)``.

    Returns
    -------
    TrainResult
    """
    if epochs < 1:
        raise SparsecraftError(f"epochs must be >= 1, got {epochs}")
    if teacher is not None and teacher.shape != (graph.num_nodes, graph.num_classes):
        raise SparsecraftError(f"teacher logits must have shape ({graph.num_nodes}, {graph.num_classes}), "
                               f"got {tuple(teacher.shape)}")
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    if extra_params:
        groups.append({"params": extra_params, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups, lr=lr)
    run = forward or model
    best: TrainResult | None = None
    for epoch in range(epochs):
        model.train()
        a = adj() if callable(adj) else adj
        logits = run(graph.x, a)
        loss = F.cross_entropy(logits[graph.train_mask], graph.y[graph.train_mask])
        if teacher is not None and distill_weight:
            loss = loss + distill_weight * distill_kl(logits, teacher)
        if penalty is not None:
            loss = loss + penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        model.eval()
        with torch.no_grad():
            a = adj() if callable(adj) else adj
            logits = run(graph.x, a)
        val = accuracy(logits, graph.y, graph.val_mask)
        if best is None or val >= best.val_acc:
            best = TrainResult(val, accuracy(logits, graph.y, graph.test_mask), epoch, logits.detach(),
                               copy.deepcopy(model.state_dict()))
    assert best is not None
    return best
