import pytest
import torch

from sparsecraft.errors import SparsecraftError
from sparsecraft.graphs import csbm, karate_club, load_graph
from sparsecraft.graphs.data import canonical_edges


def test_karate_club_is_zacharys_graph():
    g = karate_club()
    assert (g.num_nodes, g.num_edges, g.num_classes) == (34, 78, 2)
    assert int(g.train_mask.sum()) == 4
    assert not bool((g.train_mask & g.test_mask).any())
    assert bool((g.train_mask | g.val_mask | g.test_mask).all())


def test_canonical_edges_dedupes_orders_and_drops_loops():
    src = torch.tensor([3, 1, 2, 2, 0])
    dst = torch.tensor([1, 3, 2, 0, 2])
    assert canonical_edges(src, dst, 4).tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("h", [0.9, 0.5, 0.1])
def test_csbm_homophily_and_edges(h):
    g = csbm(num_nodes=600, homophily=h, avg_degree=8, num_classes=3, seed=1)
    src, dst = g.edge_index
    assert bool((src < dst).all())
    assert torch.unique(src * g.num_nodes + dst).numel() == g.num_edges
    assert abs(g.homophily() - h) < 0.06
    assert 0.6 * 600 * 8 / 2 < g.num_edges <= 600 * 8 / 2
    assert g.x.shape == (600, 32) and set(g.y.tolist()) == {0, 1, 2}
    assert int(g.train_mask.sum()) == 60


def test_csbm_is_seeded():
    a, b = load_graph("csbm", seed=3, num_nodes=200), load_graph("csbm", seed=3, num_nodes=200)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x)
    assert not torch.equal(a.edge_index, load_graph("csbm", seed=4, num_nodes=200).edge_index)


def test_with_edges_checks_the_mask():
    g = karate_club()
    assert g.with_edges(torch.arange(78) % 2 == 0).num_edges == 39
    with pytest.raises(SparsecraftError, match=r"edge mask must be a bool tensor of shape \(78,\)"):
        g.with_edges(torch.ones(5, dtype=torch.bool))


@pytest.mark.parametrize("kwargs, message", [
    ({"homophily": 1.5}, r"homophily must be in \[0, 1\], got 1.5"),
    ({"num_classes": 1}, "csbm needs num_classes >= 2"),
    ({"degree_exponent": 1.0}, "degree_exponent > 1"),
])
def test_csbm_bad_input(kwargs, message):
    with pytest.raises(SparsecraftError, match=message):
        csbm(num_nodes=100, **kwargs)


def test_unknown_graph_name():
    with pytest.raises(SparsecraftError, match="unknown graph 'cora'"):
        load_graph("cora")
