import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.graphs import GNN, adjacency, csbm, karate_club, make_model, propagate, train_node_classifier


def dense_reference(edge_index, n, weight, normalize, loops):
    a = torch.zeros(n, n)
    a[edge_index[0], edge_index[1]] = weight
    a[edge_index[1], edge_index[0]] = weight
    if loops:
        a = a + torch.eye(n)
    if normalize:
        d = a.sum(1).rsqrt()
        a = d[:, None] * a * d[None, :]
    return a


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 1000), normalize=st.booleans(), loops=st.booleans())
def test_adjacency_matches_dense_reference(n, seed, normalize, loops):
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.triu_indices(n, n, 1)
    edges = pairs[:, torch.rand(pairs.shape[1], generator=gen) < 0.5]
    w = torch.rand(edges.shape[1], generator=gen) + 0.5
    got = adjacency(edges, n, w, normalize=normalize, self_loops=loops).to_dense()
    ref = dense_reference(edges, n, w, normalize, loops)
    ref = torch.nan_to_num(ref, nan=0.0, posinf=0.0)
    assert torch.allclose(got, ref, atol=1e-6)
    h = torch.randn(n, 3, generator=gen)
    assert torch.allclose(propagate(adjacency(edges, n, w, normalize=normalize, self_loops=loops), h), ref @ h,
                          atol=1e-5)


@pytest.mark.parametrize("kind", ["gcn", "gin"])
def test_sparse_and_dense_adjacency_give_the_same_logits(kind):
    g = csbm(num_nodes=80, seed=0)
    model = make_model(g, kind, hidden=8).eval()
    assert torch.allclose(model(g.x, model.adjacency(g)), model(g.x, model.adjacency(g, dense=True)), atol=1e-5)


def test_edge_weights_get_gradients():
    g = karate_club()
    model = make_model(g, "gcn", hidden=4)
    w = torch.ones(g.num_edges, requires_grad=True)
    model(g.x, model.adjacency(g, w)).sum().backward()
    assert w.grad is not None and w.grad.shape == (78,) and bool(w.grad.abs().sum() > 0)


@pytest.mark.slow
def test_training_learns_karate_club():
    g = karate_club()
    result = train_node_classifier(make_model(g, "gcn", hidden=16, seed=0), g, GNN(34, 16, 2).adjacency(g),
                                   epochs=60)
    assert result.test_acc >= 0.8
    assert result.logits.shape == (34, 2)


def test_bad_model_and_training_input():
    with pytest.raises(SparsecraftError, match="unknown GNN layer 'gat'"):
        GNN(4, 8, 2, kind="gat")
    with pytest.raises(SparsecraftError, match=r"dropout must be in \[0, 1\)"):
        GNN(4, 8, 2, dropout=1.0)
    g = karate_club()
    model = make_model(g)
    with pytest.raises(SparsecraftError, match=r"teacher logits must have shape \(34, 2\)"):
        train_node_classifier(model, g, model.adjacency(g), epochs=1, teacher=torch.zeros(3, 2))
    with pytest.raises(SparsecraftError, match=r"edge_index must have shape \(2, E\)"):
        adjacency(torch.zeros(3, 4, dtype=torch.long), 4)
