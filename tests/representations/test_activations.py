import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import MLP, TinyTransformer
from sparsecraft.representations import (
    TopKActivation,
    measure_activation_sparsity,
    sparsify_activations,
)


def test_measurement_matches_manual_count():
    torch.manual_seed(0)
    model = MLP(20, 5, hidden=(16, 12))
    x = torch.randn(37, 20)
    table = measure_activation_sparsity(model, x, batch_size=10)
    assert [row.name for row in table] == ["layers.2", "layers.4"]
    h1 = torch.relu(model.layers[1](x))
    h2 = torch.relu(model.layers[3](h1))
    for row, h in zip(table, (h1, h2)):
        assert row.entries == h.numel() and row.rows == 37 and row.width == h.shape[1]
        assert row.zeros == int((h == 0).sum())
        assert row.zero_fraction == pytest.approx(float((h == 0).float().mean()))
        assert row.mean_active == pytest.approx(float((h != 0).sum(1).float().mean()))


def test_measurement_eps_on_transformer_gelu():
    torch.manual_seed(0)
    model = TinyTransformer(3, vocab_size=50, d_model=16, num_heads=2, num_layers=2, causal=True)
    x = torch.randint(0, 50, (4, 9))
    captured = []
    handle = model.blocks[1].mlp.fc2.register_forward_pre_hook(lambda m, a: captured.append(a[0]))
    table = measure_activation_sparsity(model, x, eps=0.05)
    handle.remove()
    assert [r.name for r in table] == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert table[1].zeros == int((captured[0].abs() <= 0.05).sum())
    assert table[1].rows == 4 * 9 and table[1].width == 64


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 6), width=st.integers(1, 40), k=st.integers(1, 50), seed=st.integers(0, 999)
)
def test_topk_activation_keeps_exactly_k_largest(rows, width, k, seed):
    x = torch.randn(rows, 3, width, generator=torch.Generator().manual_seed(seed))
    y = TopKActivation(k=k)(x)
    kept = min(k, width)
    assert ((y != 0).sum(-1) == kept).all()
    # the kept entries are the largest ones and keep their values
    threshold = x.topk(kept, dim=-1).values[..., -1:]
    assert torch.equal(y != 0, x >= threshold)
    assert torch.equal(y[y != 0], x[y != 0])


def test_topk_fraction_and_gradient():
    x = torch.randn(5, 10, requires_grad=True)
    act = TopKActivation(fraction=0.25)
    assert act.kept(10) == 3
    y = act(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float())


def test_sparsify_transformer_feedforward_exact_k_per_token():
    torch.manual_seed(0)
    model = TinyTransformer(3, vocab_size=50, d_model=16, num_heads=2, num_layers=2, causal=True)
    x = torch.randint(0, 50, (3, 7))
    names = sparsify_activations(model, k=5)
    assert names == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    hidden = []
    for block in model.blocks:
        block.mlp.fc2.register_forward_pre_hook(lambda m, a: hidden.append(a[0]))
    model(x)
    for h in hidden:
        assert h.shape == (3, 7, 64)
        assert ((h != 0).sum(-1) == 5).all()  # GELU outputs are never exactly zero
    table = measure_activation_sparsity(model, x)
    topk_rows = [r for r in table if r.kind == "TopKActivation"]
    assert [r.mean_active for r in topk_rows] == [5.0, 5.0]


def test_sparsify_mlp_relu_at_most_k_and_skips_convs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8, 30), nn.ReLU(), nn.Linear(30, 2))
    assert sparsify_activations(model, fraction=0.1) == ["4"]
    h = model[:5](torch.randn(11, 1, 10))
    assert ((h != 0).sum(-1) <= 3).all()


def test_bad_arguments():
    with pytest.raises(SparsecraftError, match="exactly one"):
        TopKActivation()
    with pytest.raises(SparsecraftError, match="fraction"):
        TopKActivation(fraction=1.5)
    with pytest.raises(SparsecraftError, match="no MLP hidden activation"):
        sparsify_activations(nn.Sequential(nn.Linear(3, 3)), k=1)
    with pytest.raises(SparsecraftError, match="no activation modules"):
        measure_activation_sparsity(nn.Linear(3, 3), torch.randn(2, 3))
