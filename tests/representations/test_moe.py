import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyTransformer
from sparsecraft.representations import MoEFeedForward, Routing, load_balancing_loss, moe_aux_loss, use_moe


def dense_reference(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, combined with a dense (T, E) gate matrix built from the routing."""
    tokens = x.reshape(-1, x.shape[-1])
    r = moe.route(tokens)
    gate = torch.zeros(len(tokens), moe.n_experts).scatter(1, r.experts, r.gates)
    all_out = torch.stack([expert(tokens) for expert in moe.experts], dim=1)  # (T, E, d)
    return (gate[..., None] * all_out).sum(1).view(x.shape)


@pytest.mark.parametrize("n_experts,k", [(4, 1), (5, 2), (3, 3)])
def test_each_token_uses_k_experts_and_matches_dense(n_experts, k):
    torch.manual_seed(0)
    moe = MoEFeedForward(12, n_experts, k, hidden=20)
    x = torch.randn(3, 7, 12)
    out = moe(x)
    r = moe.routing
    assert r.experts.shape == (21, k)
    assert all(len(set(row)) == k for row in r.experts.tolist())
    assert torch.allclose(r.gates.sum(-1), torch.ones(21))
    assert int(r.load(n_experts).sum()) == 21 * k
    assert torch.allclose(out, dense_reference(moe, x), atol=1e-6)


def test_experts_only_see_routed_tokens():
    torch.manual_seed(1)
    moe = MoEFeedForward(8, 4, 2, hidden=8)
    seen = [0] * 4
    for e, expert in enumerate(moe.experts):
        expert.fc1.register_forward_pre_hook(lambda m, a, e=e: seen.__setitem__(e, a[0].shape[0]))
    moe(torch.randn(30, 8))
    assert seen == moe.routing.load(4).tolist()


def test_gradient_reaches_router_through_gates_and_aux_loss():
    torch.manual_seed(0)
    moe = MoEFeedForward(8, 4, 2, hidden=8)
    moe(torch.randn(16, 8)).pow(2).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    moe.zero_grad()
    moe(torch.randn(16, 8))
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_load_balancing_loss_values():
    moe = MoEFeedForward(4, 4, 1, hidden=4)
    with torch.no_grad():
        moe.router.weight.zero_()
    moe(torch.randn(8, 4))
    # uniform probabilities: f sums to 1, P_e = 1/4 -> loss 1
    assert moe.aux_loss.item() == pytest.approx(1.0)
    # every token routed to expert 0 with probability 1: loss n_experts
    collapsed = Routing(torch.zeros(6, 1, dtype=torch.int64), torch.ones(6, 1), torch.eye(4)[[0] * 6])
    assert float(load_balancing_loss(collapsed, 4)) == pytest.approx(4.0)


def test_use_moe_in_transformer_trains():
    torch.manual_seed(0)
    model = TinyTransformer(20, vocab_size=20, d_model=16, num_heads=2, num_layers=2, causal=True)
    assert use_moe(model, n_experts=4, k=2) == ["blocks.0.mlp", "blocks.1.mlp"]
    assert model.blocks[0].mlp.experts[0].fc1.out_features == 32
    x = torch.randint(0, 20, (8, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 20), x[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + 0.01 * moe_aux_loss(model)).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_bad_arguments():
    with pytest.raises(SparsecraftError, match="must not exceed"):
        MoEFeedForward(8, 2, 3)
    with pytest.raises(SparsecraftError, match="no MoEFeedForward"):
        moe_aux_loss(torch.nn.Linear(2, 2))


@settings(max_examples=20, deadline=None)
@given(
    n_experts=st.integers(1, 6), k_off=st.integers(0, 5), tokens=st.integers(1, 25),
    d=st.integers(1, 9), seed=st.integers(0, 99),
)
def test_property_odd_shapes_match_dense_reference(n_experts, k_off, tokens, d, seed):
    torch.manual_seed(seed)
    k = 1 + k_off % n_experts
    moe = MoEFeedForward(d, n_experts, k, hidden=3)
    x = torch.randn(tokens, d)
    out = moe(x)
    assert ((moe.routing.experts[:, :, None] == torch.arange(n_experts)).sum(1) <= 1).all()
    assert int(moe.routing.load(n_experts).sum()) == tokens * k
    assert torch.allclose(out, dense_reference(moe, x), atol=1e-5)
