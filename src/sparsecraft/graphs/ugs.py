"""Iterative graph lottery tickets by unified GNN sparsification (UGS), the baseline TEDDY is measured against.

Chen et al., "A Unified Lottery Ticket Hypothesis for Graph Neural Networks", ICML 2021. Each
round trains, from the same initialisation, a trainable mask on the remaining edges (it multiplies
the edge weights before normalization) and one on every target weight (it multiplies the weight),
with an l1 penalty on both; then the ``edge_rate`` fraction of remaining edges and the
``weight_rate`` fraction of remaining weights with the smallest mask magnitudes are removed, and
the weights are rewound to the initialisation. After round ``r`` the graph sparsity is
``1 - (1 - edge_rate)^r`` and the weight sparsity ``1 - (1 - weight_rate)^r``; the ticket is then
retrained from the initialisation with its masks fixed (held by a :class:`Sparsifier`).
Differences from the paper: masks are taken at the last epoch of each round, not the best one.
"""
from __future__ import annotations

import time

import torch
from torch.func import functional_call

from ..errors import SparsecraftError, check_sparsity
from ..oneshot import plan_masks
from ..patterns import get_pattern
from ..selection import lowest
from ..sparsifier import Sparsifier
from ..target import find_targets
from .data import Graph
from .gnn import train_node_classifier
from .teddy import Ticket, make_model


def ugs(graph: Graph, rounds: int, edge_rate: float = 0.05, weight_rate: float = 0.2, *, kind: str = "gcn",
        hidden: int = 64, epochs: int = 200, l1_edges: float = 1e-4, l1_weights: float = 1e-4,
        pattern: str = "unstructured", seed: int = 0, lr: float = 0.01, weight_decay: float = 5e-4) -> list[Ticket]:
    """Iterative magnitude pruning of learned edge and weight masks, with rewinding.

    Parameters
    ----------
    graph : Graph
    rounds : int
        Pruning rounds, >= 1; one ticket per round is returned.
    edge_rate, weight_rate : float
        Fraction of the remaining edges / weights removed per round, in [0, 1).
    kind, hidden : as for :class:`sparsecraft.graphs.gnn.GNN`
    epochs : int
        Of every mask-training run and of every ticket's retraining.
    l1_edges, l1_weights : float
        Weights of the l1 penalties (sums of mask magnitudes).
    pattern : str
        Weight sparsity pattern (``sparsecraft.patterns`` spec).
    seed : int
        Seeds the initialisation every round rewinds to.
    lr, weight_decay : float

    Returns
    -------
    list of Ticket
        The ticket after each round; its ``seconds`` count every mask-training round up to it
        plus its own retraining.
    """
    if rounds < 1:
        raise SparsecraftError(f"rounds must be >= 1, got {rounds}")
    check_sparsity(edge_rate, "edge_rate")
    check_sparsity(weight_rate, "weight_rate")
    pat = get_pattern(pattern)
    init = make_model(graph, kind, hidden, seed=seed)
    names = [t.name for t in find_targets(init)]
    params = dict(init.named_parameters())
    weight_masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    edge_keep = torch.ones(graph.num_edges, dtype=torch.bool)
    search_seconds = 0.0
    tickets = []
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        sub = graph.with_edges(edge_keep)
        model = make_model(graph, kind, hidden, seed=seed)
        sp = Sparsifier(model, weight_masks, {n: pat for n in names})
        edge_mask = torch.ones(sub.num_edges, requires_grad=True)
        weight_train = {n: torch.ones_like(params[n], requires_grad=True) for n in names}

        def forward(x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
            masked = {n: getattr(sp.targets[n].module, sp.targets[n].param_name) * weight_train[n] for n in names}
            return functional_call(model, masked, (x, adj))

        def penalty() -> torch.Tensor:
            return l1_edges * edge_mask.abs().sum() + l1_weights * sum(m.abs().sum() for m in weight_train.values())

        train_node_classifier(model, sub, lambda: model.adjacency(sub, edge_mask), epochs=epochs, lr=lr,
                              weight_decay=weight_decay, penalty=penalty, after_step=sp.apply,
                              extra_params=[edge_mask, *weight_train.values()], forward=forward)
        with torch.no_grad():
            survive = lowest(edge_mask.abs(), round(edge_rate * sub.num_edges))
            kept_ids = edge_keep.nonzero().flatten()
            edge_keep = edge_keep.clone()
            edge_keep[kept_ids[~survive]] = False
            scores = {n: torch.where(weight_masks[n], weight_train[n].abs(), torch.full_like(weight_train[n], -1.0))
                      for n in names}
            weight_masks = plan_masks(1.0 - (1.0 - weight_rate) ** r, pat, scores, "global")
        search_seconds += time.perf_counter() - start

        start = time.perf_counter()
        ticket_graph = graph.with_edges(edge_keep)
        model = make_model(graph, kind, hidden, seed=seed)
        sp = Sparsifier(model, weight_masks, {n: pat for n in names})
        result = train_node_classifier(model, ticket_graph, model.adjacency(ticket_graph), epochs=epochs, lr=lr,
                                       weight_decay=weight_decay, after_step=sp.apply)
        model.load_state_dict(result.state)
        sp.apply()
        seconds = search_seconds + time.perf_counter() - start
        tickets.append(Ticket(edge_keep.clone(), {n: m.clone() for n, m in weight_masks.items()},
                              1.0 - ticket_graph.num_edges / max(graph.num_edges, 1), sp.sparsity(),
                              result.test_acc, result.val_acc, seconds, model))
        sp.finalize()
    return tickets
