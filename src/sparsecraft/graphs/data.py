"""Node-classification graphs available offline: networkx's built-in graphs and contextual SBMs.

A :class:`Graph` stores every undirected edge once (``edge_index[0] < edge_index[1]``), so an edge
mask is one bool per undirected edge and graph sparsity counts undirected edges; message passing
symmetrizes (:func:`sparsecraft.graphs.gnn.adjacency`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import SparsecraftError
from ..registry import Registry

GRAPHS: Registry[Callable[..., "Graph"]] = Registry("graph")


@dataclass
class Graph:
    """One node-classification graph.

    Attributes
    ----------
    x : torch.Tensor of shape (N, F)
        Node features, float32.
    y : torch.Tensor of shape (N,)
        Class id of each node, int64.
    edge_index : torch.Tensor of shape (2, E)
        Undirected edges, each once with ``edge_index[0] < edge_index[1]``, sorted, no self-loops.
    train_mask, val_mask, test_mask : torch.Tensor of shape (N,)
        Disjoint bool node splits.
    num_classes : int
    name : str
    """

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    name: str = "graph"

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        """Undirected edges."""
        return self.edge_index.shape[1]

    def degrees(self) -> torch.Tensor:
        """Degree of every node, shape (N,), float32 (edges counted in both endpoints)."""
        flat = self.edge_index.reshape(-1)
        return torch.bincount(flat, minlength=self.num_nodes).float()

    def homophily(self) -> float:
        """Edge homophily: the fraction of edges joining nodes of the same class."""
        if self.num_edges == 0:
            return float("nan")
        src, dst = self.edge_index
        return float((self.y[src] == self.y[dst]).float().mean())

    def with_edges(self, keep: torch.Tensor) -> "Graph":
        """The same graph keeping only the edges where ``keep`` (bool, shape (E,)) is True."""
        if keep.dtype != torch.bool or keep.shape != (self.num_edges,):
            raise SparsecraftError(f"edge mask must be a bool tensor of shape ({self.num_edges},), "
                                   f"got {keep.dtype} {tuple(keep.shape)}")
        return Graph(self.x, self.y, self.edge_index[:, keep], self.train_mask, self.val_mask, self.test_mask,
                     self.num_classes, self.name)

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
                f"features={self.x.shape[1]}, classes={self.num_classes}, homophily={self.homophily():.2f})")


def canonical_edges(src: torch.Tensor, dst: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Undirected edges ``(2, E)``: each pair once with the smaller id first, self-loops dropped, sorted.

    Parameters
    ----------
    src, dst : torch.Tensor of shape (M,)
        Endpoints (int64), in any order and possibly repeated.
    num_nodes : int

    Returns
    -------
    torch.Tensor of shape (2, E)
    """
    lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
    keep = lo != hi
    key = torch.unique(lo[keep] * num_nodes + hi[keep])
    return torch.stack([key // num_nodes, key % num_nodes])


def split_masks(y: torch.Tensor, num_classes: int, train_per_class: int, val_fraction: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Semi-supervised splits: ``train_per_class`` labelled nodes per class, then validation, then test.

    Parameters
    ----------
    y : torch.Tensor of shape (N,)
    num_classes : int
    train_per_class : int
        Labelled nodes per class (fewer where a class is smaller than that plus one test node).
    val_fraction : float
        Fraction of all nodes in the validation split, in [0, 1).
    seed : int

    Returns
    -------
    train_mask, val_mask, test_mask : torch.Tensor of shape (N,), bool
    """
    gen = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    train = torch.zeros(n, dtype=torch.bool)
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        take = min(train_per_class, max(len(members) - 1, 0))
        train[members[torch.randperm(len(members), generator=gen)[:take]]] = True
    rest = (~train).nonzero().flatten()
    rest = rest[torch.randperm(len(rest), generator=gen)]
    n_val = int(round(val_fraction * n))
    val = torch.zeros(n, dtype=torch.bool)
    val[rest[:n_val]] = True
    test = ~(train | val)
    return train, val, test


def from_networkx(graph: Any, labels: torch.Tensor, features: torch.Tensor | None = None, *,
                  train_per_class: int = 2, val_fraction: float = 0.2, seed: int = 0,
                  name: str = "networkx") -> Graph:
    """A :class:`Graph` from a networkx graph whose nodes are 0..N-1.

    Parameters
    ----------
    graph : networkx.Graph
    labels : torch.Tensor of shape (N,)
        Class ids.
    features : torch.Tensor of shape (N, F), optional
        Default: one-hot node identities (``F = N``), the usual featureless-graph input.
    train_per_class, val_fraction, seed
        As for :func:`split_masks`.
    name : str

    Returns
    -------
    Graph
    """
    n = graph.number_of_nodes()
    if sorted(graph.nodes) != list(range(n)):
        raise SparsecraftError("networkx graph nodes must be the integers 0..N-1; relabel with "
                               "networkx.convert_node_labels_to_integers first")
    if labels.shape != (n,):
        raise SparsecraftError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    x = torch.eye(n) if features is None else features.float()
    if x.shape[0] != n:
        raise SparsecraftError(f"features must have {n} rows (one per node), got {x.shape[0]}")
    pairs = torch.tensor(list(graph.edges), dtype=torch.long).reshape(-1, 2)
    edges = canonical_edges(pairs[:, 0], pairs[:, 1], n)
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    train, val, test = split_masks(labels, num_classes, train_per_class, val_fraction, seed)
    return Graph(x, labels, edges, train, val, test, num_classes, name)


@GRAPHS.register("karate")
def karate_club(seed: int = 0, train_per_class: int = 2) -> Graph:
    """Zachary's karate club (34 nodes, 78 edges) from networkx: two classes, the club each member joined.

    Parameters
    ----------
    seed : int
        Seeds the split.
    train_per_class : int
        Labelled members per club.

    Returns
    -------
    Graph
        One-hot node features (34 x 34).
    """
    import networkx as nx

    g = nx.karate_club_graph()
    labels = torch.tensor([0 if g.nodes[i]["club"] == "Mr. Hi" else 1 for i in range(g.number_of_nodes())])
    return from_networkx(g, labels, train_per_class=train_per_class, seed=seed, name="karate")


@GRAPHS.register("csbm")
def csbm(seed: int = 0, num_nodes: int = 2000, num_classes: int = 4, homophily: float = 0.8,
         avg_degree: float = 10.0, num_features: int = 32, feature_signal: float = 1.0,
         degree_exponent: float = 3.0, train_per_class: int = 20, val_fraction: float = 0.1) -> Graph:
    """A degree-corrected contextual stochastic block model (CSBM).

    Node classes are uniform; features are ``feature_signal * mu_class + N(0, I)`` with class means
    ``mu_c`` drawn once from ``N(0, I / num_features)`` scaled to unit norm; each of the
    ``num_nodes * avg_degree / 2`` edge draws picks a source node with probability proportional to
    its propensity ``theta_i`` (Pareto with tail exponent ``degree_exponent``, so degrees are
    heavy-tailed as in real graphs), then with probability ``homophily`` a target of the same
    class, otherwise of another class, again proportional to ``theta``. Duplicate edges and
    self-loops are dropped, so the edge count and measured homophily come out slightly below the
    requested values.

    Parameters
    ----------
    seed : int
    num_nodes : int
        N, at least 2 * num_classes.
    num_classes : int
        At least 2.
    homophily : float
        Probability that an edge joins two nodes of the same class, in [0, 1].
    avg_degree : float
        Expected degree before deduplication, > 0.
    num_features : int
    feature_signal : float
        Distance of the class means from the origin in units of the noise std (0: features carry
        no label information, only the graph does).
    degree_exponent : float
        Pareto tail exponent of the propensities (> 1; smaller = more skewed degrees).
    train_per_class : int
    val_fraction : float
        As for :func:`split_masks`.

    Returns
    -------
    Graph
    """
    if num_classes < 2 or num_nodes < 2 * num_classes:
        raise SparsecraftError(f"csbm needs num_classes >= 2 and num_nodes >= 2 * num_classes, "
                               f"got {num_classes} classes and {num_nodes} nodes")
    if not 0.0 <= homophily <= 1.0:
        raise SparsecraftError(f"homophily must be in [0, 1], got {homophily}")
    if avg_degree <= 0 or degree_exponent <= 1:
        raise SparsecraftError(f"avg_degree must be > 0 and degree_exponent > 1, "
                               f"got {avg_degree} and {degree_exponent}")
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (num_nodes,), generator=gen)
    y[:num_classes] = torch.arange(num_classes)  # every class present
    means = torch.randn(num_classes, num_features, generator=gen)
    means = means / means.norm(dim=1, keepdim=True)
    x = feature_signal * means[y] + torch.randn(num_nodes, num_features, generator=gen)
    theta = torch.rand(num_nodes, generator=gen).clamp_min(1e-6).pow(-1.0 / (degree_exponent - 1.0))
    n_draws = int(math.ceil(num_nodes * avg_degree / 2))
    src = torch.multinomial(theta, n_draws, replacement=True, generator=gen)
    same = torch.rand(n_draws, generator=gen) < homophily
    # target class: the source's own, or a uniformly chosen other class
    shift = torch.randint(1, num_classes, (n_draws,), generator=gen)
    tgt_class = torch.where(same, y[src], (y[src] + shift) % num_classes)
    dst = torch.empty_like(src)
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        pick = tgt_class == c
        if not bool(pick.any()):
            continue
        dst[pick] = members[torch.multinomial(theta[members], int(pick.sum()), replacement=True, generator=gen)]
    edges = canonical_edges(src, dst, num_nodes)
    train, val, test = split_masks(y, num_classes, train_per_class, val_fraction, seed)
    return Graph(x, y, edges, train, val, test, num_classes, f"csbm(h={homophily:g},n={num_nodes})")


def load_graph(name: str, seed: int = 0, **kwargs: Any) -> Graph:
    """Load a registered graph (``karate``, ``csbm``) by name.

    Parameters
    ----------
    name : str
        A name in ``GRAPHS``.
    seed : int
    **kwargs
        Passed to the graph's builder.

    Returns
    -------
    Graph
    """
    return GRAPHS.get(name)(seed=seed, **kwargs)
