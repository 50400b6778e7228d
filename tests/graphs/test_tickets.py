import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.graphs import Graph, L0Projection, karate_club, make_model, prune_edges, teddy, teddy_scores, ugs
from sparsecraft.graphs.data import canonical_edges


def tiny_graph(edges: list[tuple[int, int]], n: int) -> Graph:
    e = torch.tensor(edges).T
    ei = canonical_edges(e[0], e[1], n)
    mask = torch.ones(n, dtype=torch.bool)
    return Graph(torch.eye(n), torch.zeros(n, dtype=torch.long), ei, mask, mask, mask, 1)


def test_teddy_scores_match_the_formula():
    g = karate_club()
    deg = g.degrees()
    nbrs = {i: [] for i in range(g.num_nodes)}
    for a, b in g.edge_index.T.tolist():
        nbrs[a].append(b)
        nbrs[b].append(a)
    gl = [sum(deg[j] ** -0.5 for j in nbrs[i]) / deg[i] for i in range(g.num_nodes)]
    expected = torch.tensor([(gl[a] / deg[a]) * (gl[b] / deg[b]) for a, b in g.edge_index.T.tolist()])
    assert torch.allclose(teddy_scores(g), expected, rtol=1e-5)


def test_teddy_drops_hub_to_hub_edges_and_keeps_leaf_edges():
    # a 5-clique (hubs 0..4) with two leaves on each hub
    edges = [(a, b) for a in range(5) for b in range(a + 1, 5)]
    edges += [(h, 5 + 2 * h + i) for h in range(5) for i in range(2)]
    g = tiny_graph(edges, 15)
    keep = prune_edges(g, 0.5, "teddy")
    assert int((~keep).sum()) == 10
    src, dst = g.edge_index
    assert bool((~keep == (dst < 5)).all())  # exactly the 10 clique edges are removed


@pytest.mark.parametrize("method", ["teddy", "random"])
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.9])
def test_prune_edges_removes_the_rounded_count(method, sparsity):
    g = karate_club()
    keep = prune_edges(g, sparsity, method, seed=1)
    assert keep.dtype == torch.bool and int((~keep).sum()) == round(sparsity * 78)


def test_l0_projection_keeps_the_largest_weights_and_lets_them_regrow():
    g = karate_club()
    model = make_model(g, "gcn", hidden=8)
    weights = [model.layers[0].lin.weight, model.layers[1].lin.weight]
    total = sum(w.numel() for w in weights)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    proj = L0Projection(model, 0.75)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.75 * total)
    kept = torch.cat([w.detach().abs().flatten() for w in weights]) > 0
    assert magnitudes[kept].min() >= magnitudes[~kept].max()
    # a dense step moves pruned weights; projecting again may bring one back
    pruned = (weights[1] == 0).nonzero()[0]
    with torch.no_grad():
        weights[1][tuple(pruned)] = 100.0
    proj.project()
    assert float(weights[1].detach()[tuple(pruned)]) == 100.0
    assert sum(int((w == 0).sum()) for w in weights) == round(0.75 * total)


def test_teddy_ticket_has_the_requested_sparsities():
    g = karate_club()
    ticket = teddy(g, 0.4, 0.6, hidden=8, epochs=30, distill_weight=1.0)
    assert int((~ticket.edge_mask).sum()) == round(0.4 * 78)
    assert ticket.weight_sparsity == pytest.approx(0.6, abs=1e-3)
    weights = [ticket.model.layers[i].lin.weight for i in range(2)]
    assert sum(int((w == 0).sum()) for w in weights) == round(0.6 * sum(w.numel() for w in weights))
    assert 0.0 <= ticket.test_acc <= 1.0 and ticket.seconds > 0


def test_ugs_prunes_in_rounds_with_fixed_masks():
    g = karate_club()
    tickets = ugs(g, 2, edge_rate=0.2, weight_rate=0.5, hidden=8, epochs=10, kind="gin")
    e1 = 78 - round(0.2 * 78)
    assert int(tickets[0].edge_mask.sum()) == e1
    assert int(tickets[1].edge_mask.sum()) == e1 - round(0.2 * e1)
    assert bool((tickets[1].edge_mask <= tickets[0].edge_mask).all())  # nested: pruned edges stay pruned
    assert tickets[0].weight_sparsity == pytest.approx(0.5, abs=1e-2)
    assert tickets[1].weight_sparsity == pytest.approx(0.75, abs=1e-2)
    for name, mask in tickets[1].weight_masks.items():
        assert bool((mask <= tickets[0].weight_masks[name]).all())
        assert torch.equal(dict(tickets[1].model.named_parameters())[name] != 0, mask)
    assert tickets[1].seconds > tickets[0].seconds * 0.5


@pytest.mark.parametrize("call, message", [
    (lambda g: prune_edges(g, 1.5), r"graph sparsity must be a fraction in \[0, 1\)"),
    (lambda g: prune_edges(g, 0.5, "jaccard"), "unknown edge score 'jaccard'"),
    (lambda g: teddy(g, 0.5, 0.5, distill_weight=-1), "distill_weight must be >= 0"),
    (lambda g: ugs(g, 0), "rounds must be >= 1"),
    (lambda g: L0Projection(make_model(g), 90), r"weight sparsity must be a fraction in \[0, 1\)"),
])
def test_bad_input_is_one_line(call, message):
    with pytest.raises(SparsecraftError, match=message) as err:
        call(karate_club())
    assert "\n" not in str(err.value)
