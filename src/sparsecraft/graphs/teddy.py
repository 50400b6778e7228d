"""TEDDY: one-shot graph lottery tickets from edge degrees, then l0-ball projected gradient descent.

Seo et al., "TEDDY: Trimming Edges with Degree-based Discrimination strategY", ICLR 2024.

1. Edge sparsification, once, before training and from the graph structure only. With ``d_i``
   the degree of node ``i`` and ``N(i)`` its neighbours, the multi-level degree
   ``g_i = (1 / d_i) sum_{j in N(i)} d_j^{-1/2}`` is the mean inverse-sqrt degree of the neighbours
   and the edge score is ``T_ij = (g_i / d_i) (g_j / d_j)``. Edges with the lowest scores (those
   between high-degree nodes, whose neighbours are themselves well connected) are removed; edges
   incident to low-degree nodes, which carry their only messages, are kept.
2. Weight sparsification during one training run: after every optimizer step the weights are
   projected onto the l0 ball ``{w : ||w||_0 <= (1 - s) |w|}`` by keeping the largest magnitudes
   over all target weights (a global threshold), pruned weights being free to grow back at the
   next step (the gradients stay dense).
3. The loss adds ``distill_weight * KL(dense teacher || student)`` on every node, the teacher
   being the same GNN trained on the full graph.

Edge scorers share one interface in ``EDGE_SCORES``: ``scorer(graph, seed) -> (E,)`` scores,
higher = keep (``teddy``, ``random``: the random-edge-drop baseline).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..oneshot import plan_masks
from ..patterns import Pattern, get_pattern
from ..registry import Registry
from ..selection import lowest
from ..sparsifier import Sparsifier
from ..target import find_targets
from .data import Graph
from .gnn import GNN, train_node_classifier

EDGE_SCORES: Registry[Callable[[Graph, int], torch.Tensor]] = Registry("edge score")


@EDGE_SCORES.register("teddy")
def teddy_scores(graph: Graph, seed: int = 0) -> torch.Tensor:
    """TEDDY's degree-based edge scores ``T_ij = (g_i / d_i)(g_j / d_j)`` (module docstring).

    Parameters
    ----------
    graph : Graph
    seed : int
        Unused (the score is deterministic); part of the scorer interface.

    Returns
    -------
    torch.Tensor of shape (E,)
        Higher = keep.
    """
    src, dst = graph.edge_index
    deg = graph.degrees()
    inv = torch.where(deg > 0, 1.0 / deg.clamp_min(1.0), torch.zeros_like(deg))
    inv_sqrt = inv.sqrt()
    neighbour_sum = torch.zeros_like(deg).index_add(0, src, inv_sqrt[dst]).index_add(0, dst, inv_sqrt[src])
    g = neighbour_sum * inv
    node = g * inv
    return node[src] * node[dst]


@EDGE_SCORES.register("random")
def random_scores(graph: Graph, seed: int = 0) -> torch.Tensor:
    """Uniform random scores: dropping the lowest is the random-edge-drop baseline.

    Parameters
    ----------
    graph : Graph
    seed : int

    Returns
    -------
    torch.Tensor of shape (E,)
    """
    return torch.rand(graph.num_edges, generator=torch.Generator().manual_seed(seed))


def prune_edges(graph: Graph, sparsity: float, method: str = "teddy", seed: int = 0) -> torch.Tensor:
    """Which edges to keep so that ``round(sparsity * E)`` edges are removed, lowest scores first.

    Parameters
    ----------
    graph : Graph
    sparsity : float
        Fraction of undirected edges to remove, in [0, 1).
    method : str
        A name in ``EDGE_SCORES``.
    seed : int

    Returns
    -------
    torch.Tensor of shape (E,), bool
        True = kept.
    """
    sparsity = check_sparsity(sparsity, "graph sparsity")
    scores = EDGE_SCORES.get(method)(graph, seed)
    return lowest(scores, round(sparsity * graph.num_edges))


class L0Projection:
    """Projection of a model's target weights onto the l0 ball, held as a :class:`Sparsifier`.

    Gradients are left dense (``mask_grads=False``) and no optimizer is attached, so a pruned weight
    moves with its gradient and comes back if it then ranks among the largest: projected gradient
    descent, not a fixed mask.

    Parameters
    ----------
    model : nn.Module
    sparsity : float
        Fraction of zeros over all target weights, in [0, 1).
    pattern : str or Pattern, default="unstructured"
        Shape of the zeros (any ``sparsecraft.patterns`` spec).
    layers, keep_dense
        As for :func:`sparsecraft.target.find_targets`.
    """

    def __init__(self, model: nn.Module, sparsity: float, pattern: str | Pattern = "unstructured",
                 layers: list[str] | None = None, keep_dense: tuple[str, ...] = ()) -> None:
        self.sparsity = check_sparsity(sparsity, "weight sparsity")
        self.pattern = get_pattern(pattern)
        names = [t.name for t in find_targets(model, layers, keep_dense)]
        params = dict(model.named_parameters())
        self.sparsifier = Sparsifier(model, {n: torch.ones_like(params[n], dtype=torch.bool) for n in names},
                                     {n: self.pattern for n in names}, mask_grads=False)
        self.project()

    @torch.no_grad()
    def project(self) -> None:
        """Keep the largest-magnitude weights (global threshold), zero the rest."""
        scores = {n: t.param.abs() for n, t in self.sparsifier.targets.items()}
        for name, mask in plan_masks(self.sparsity, self.pattern, scores, "global").items():
            self.sparsifier.set_mask(name, mask)


@dataclass
class Ticket:
    """A graph lottery ticket: the kept edges, the weight masks and how well it trains.

    Attributes
    ----------
    edge_mask : torch.Tensor of shape (E,), bool
        Kept edges of the original graph.
    weight_masks : dict
        ``{param name: bool mask}``.
    graph_sparsity, weight_sparsity : float
        Fractions of removed edges and of zero target weights.
    test_acc, val_acc : float
        Of the trained sparse model at its best-validation epoch.
    seconds : float
        Wall time to find and train the ticket (teacher and every round included).
    model : GNN
        The trained sparse model (best-validation weights).
    """

    edge_mask: torch.Tensor
    weight_masks: dict[str, torch.Tensor]
    graph_sparsity: float
    weight_sparsity: float
    test_acc: float
    val_acc: float
    seconds: float
    model: GNN


def make_model(graph: Graph, kind: str = "gcn", hidden: int = 64, num_layers: int = 2, dropout: float = 0.5,
               seed: int = 0) -> GNN:
    """A freshly initialised :class:`GNN` for ``graph`` (seeded).

    Parameters
    ----------
    graph : Graph
    kind, hidden, num_layers, dropout
        As for :class:`GNN`.
    seed : int

    Returns
    -------
    GNN
    """
    torch.manual_seed(seed)
    return GNN(graph.x.shape[1], hidden, graph.num_classes, num_layers, kind, dropout)


def train_dense(graph: Graph, kind: str = "gcn", hidden: int = 64, epochs: int = 200, seed: int = 0,
                **train_kwargs: float) -> tuple[GNN, torch.Tensor, float]:
    """Train the dense GNN on the full graph: TEDDY's teacher and the accuracy every ticket is held to.

    Parameters
    ----------
    graph : Graph
    kind, hidden : as for :class:`GNN`
    epochs : int
    seed : int
    **train_kwargs
        ``lr``, ``weight_decay`` for :func:`train_node_classifier`.

    Returns
    -------
    model : GNN
        Best-validation weights loaded.
    logits : torch.Tensor of shape (N, C)
    test_acc : float
    """
    model = make_model(graph, kind, hidden, seed=seed)
    result = train_node_classifier(model, graph, model.adjacency(graph), epochs=epochs, **train_kwargs)
    model.load_state_dict(result.state)
    return model, result.logits, result.test_acc


def teddy(graph: Graph, graph_sparsity: float, weight_sparsity: float, *, kind: str = "gcn", hidden: int = 64,
          epochs: int = 200, edge_method: str = "teddy", distill_weight: float = 1.0,
          teacher: torch.Tensor | None = None, pattern: str = "unstructured", seed: int = 0,
          lr: float = 0.01, weight_decay: float = 5e-4) -> Ticket:
    """Find a graph lottery ticket in one shot: prune edges by score, then train with l0-ball PGD.

    Parameters
    ----------
    graph : Graph
    graph_sparsity : float
        Fraction of edges to remove, in [0, 1).
    weight_sparsity : float
        Fraction of target (Linear) weights to zero, in [0, 1).
    kind, hidden : as for :class:`GNN`
    epochs : int
        Of the one sparse training run (and of the teacher's, if it is trained here).
    edge_method : str
        A name in ``EDGE_SCORES`` (``random`` gives the random-edge-drop baseline).
    distill_weight : float
        Weight of the distillation KL; 0 trains on labels only.
    teacher : torch.Tensor of shape (N, C), optional
        Dense-model logits; trained here (and timed) when ``distill_weight > 0`` and none is given.
    pattern : str
        Weight sparsity pattern (``sparsecraft.patterns`` spec).
    seed : int
    lr, weight_decay : float

    Returns
    -------
    Ticket
    """
    if distill_weight < 0:
        raise SparsecraftError(f"distill_weight must be >= 0, got {distill_weight}")
    start = time.perf_counter()
    if distill_weight and teacher is None:
        _, teacher, _ = train_dense(graph, kind, hidden, epochs, seed, lr=lr, weight_decay=weight_decay)
    keep = prune_edges(graph, graph_sparsity, edge_method, seed)
    sparse_graph = graph.with_edges(keep)
    model = make_model(graph, kind, hidden, seed=seed)
    projection = L0Projection(model, weight_sparsity, pattern)
    result = train_node_classifier(model, sparse_graph, model.adjacency(sparse_graph), epochs=epochs, lr=lr,
                                   weight_decay=weight_decay, teacher=teacher, distill_weight=distill_weight,
                                   after_step=projection.project)
    model.load_state_dict(result.state)
    projection.project()  # the masks of the best epoch: its zeros are the smallest magnitudes
    masks = {n: m.clone() for n, m in projection.sparsifier.masks.items()}
    seconds = time.perf_counter() - start
    return Ticket(keep, masks, 1.0 - sparse_graph.num_edges / max(graph.num_edges, 1),
                  projection.sparsifier.sparsity(), result.test_acc, result.val_acc, seconds, model)
