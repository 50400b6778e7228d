"""Sparsity of graphs and graph neural networks: graph lottery tickets (TEDDY, UGS) on a plain-torch GNN.

``data``: offline node-classification graphs (networkx's karate club, contextual stochastic block
models); ``gnn``: GCN / GIN layers over a sparse adjacency and full-batch training; ``teddy``: the
one-shot degree-based edge pruning plus l0-ball projected gradient descent; ``ugs``: the iterative
baseline.
"""
from .data import GRAPHS, Graph, csbm, from_networkx, karate_club, load_graph
from .gnn import GNN, LAYERS, accuracy, adjacency, propagate, train_node_classifier
from .teddy import EDGE_SCORES, L0Projection, Ticket, make_model, prune_edges, teddy, teddy_scores, train_dense
from .ugs import ugs

__all__ = [
    "EDGE_SCORES",
    "GNN",
    "GRAPHS",
    "Graph",
    "L0Projection",
    "LAYERS",
    "Ticket",
    "accuracy",
    "adjacency",
    "csbm",
    "from_networkx",
    "karate_club",
    "load_graph",
    "make_model",
    "propagate",
    "prune_edges",
    "teddy",
    "teddy_scores",
    "train_dense",
    "train_node_classifier",
    "ugs",
]
