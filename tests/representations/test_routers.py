import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyTransformer
from sparsecraft.models.transformer import FeedForward
from sparsecraft.representations import (
    ROUTERS,
    BlockFFNRouter,
    COMETRouter,
    MoEFeedForward,
    PackedExperts,
    Routing,
    activation_locality_loss,
    build_router,
    chunk_level_sparsity,
    chunk_sparsification_loss,
    moe_aux_loss,
    routing_masks,
    smooth_step,
    token_level_sparsity,
    use_moe,
)
from sparsecraft.representations.routers import nearest_permutation, sinkhorn


def dense_reference(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    tokens = x.reshape(-1, x.shape[-1])
    gates = moe.route(tokens, x.shape[-2] if x.dim() >= 3 else len(tokens)).dense_gates(moe.n_experts)
    all_out = torch.stack([expert(tokens) for expert in moe.experts], dim=1)
    return (gates[..., None] * all_out).sum(1).view(x.shape)


def test_registry_names_and_option_errors():
    assert ROUTERS.names() == ["blockffn", "comet", "topk"]
    with pytest.raises(SparsecraftError, match="unknown router 'hash'; choose one of: blockffn, comet, topk"):
        build_router("hash", 8, 4, 2)
    with pytest.raises(SparsecraftError, match="router 'topk' has no option 'gamma'; its options: normalize_gates"):
        build_router("topk", 8, 4, 2, gamma=1.0)
    with pytest.raises(SparsecraftError, match="--chunk-loss must be"):
        build_router("blockffn", 8, 4, 2, chunk_loss=-1.0)
    with pytest.raises(SparsecraftError, match="power of two"):
        build_router("comet", 8, 6, 2)
    with pytest.raises(SparsecraftError, match="target_active must lie"):
        build_router("blockffn", 8, 4, 2, target_active=5.0)
    with pytest.raises(SparsecraftError, match="normalize_gates applies to the topk router only"):
        MoEFeedForward(8, 4, 2, normalize_gates=False, router="comet")


def test_blockffn_router_is_relu_rmsnorm_and_variable():
    torch.manual_seed(0)
    router = BlockFFNRouter(6, 5)
    with torch.no_grad():
        router.scale.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))
    x = torch.randn(7, 6)
    r = router(x, 7)
    relu = torch.relu(x @ router.proj.weight.T)
    expected = router.scale * relu / torch.sqrt(relu.pow(2).mean(-1, keepdim=True) + 1e-6)
    assert torch.allclose(r.gates, expected, atol=1e-6)
    assert torch.equal(r.active, relu > 0) and torch.equal(r.mask(5), relu > 0)
    assert torch.equal(r.active_per_token(), (relu > 0).sum(1))
    assert len(set(r.active_per_token().tolist())) > 1  # the number of active experts varies


@pytest.mark.parametrize("router,options", [
    ("topk", {}), ("blockffn", {"chunk_loss": 0.1, "locality": 0.1}), ("comet", {}),
    ("comet", {"local_search": True}),
])
def test_moe_with_each_router_matches_dense_reference_and_experts_see_only_routed_tokens(router, options):
    torch.manual_seed(1)
    moe = MoEFeedForward(8, 4, 2, hidden=6, router=router, **options)
    x = torch.randn(3, 10, 8)
    seen = [0] * 4
    for e, expert in enumerate(moe.experts):
        expert.fc1.register_forward_pre_hook(lambda m, a, e=e: seen.__setitem__(e, a[0].shape[0]))
    out = moe(x)
    assert seen == moe.routing.load(4).tolist()
    assert torch.allclose(out, dense_reference(moe, x), atol=1e-5)
    assert torch.allclose(moe.chunk_sparse_forward(x[0], chunk=4), moe(x[0]), atol=1e-5)
    out.pow(2).sum().backward()
    moe.aux_loss.backward()
    assert all(p.grad is not None for n, p in moe.router.named_parameters()), router


def test_chunk_sparse_forward_never_reads_experts_outside_the_union():
    torch.manual_seed(2)
    moe = MoEFeedForward(8, 6, 2, hidden=5, router="blockffn", l1=0.0).eval()
    with torch.no_grad():
        moe.router.proj.weight[:3] = -10 * moe.router.proj.weight[:3].abs().sum(1, keepdim=True)
    x = torch.randn(8, 8).abs()
    union = moe.route(x, 8).mask(6).any(0)
    assert 0 < int(union.sum()) < 6
    expected = moe(x)
    with torch.no_grad():
        for e in (~union).nonzero().flatten().tolist():  # an unused expert that ran would poison the output
            for p in moe.experts[e].parameters():
                p.fill_(float("nan"))
    got = moe.chunk_sparse_forward(x, chunk=8)
    assert torch.isfinite(got).all() and torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(SparsecraftError, match="one hidden width"):
        PackedExperts([FeedForward(8, 3), FeedForward(8, 4)])
    with pytest.raises(SparsecraftError, match="gates must be"):
        PackedExperts(list(moe.experts))(x, torch.zeros(8, 5))


def test_sparsity_measures_by_hand():
    mask = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0],
                         [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert token_level_sparsity(mask) == pytest.approx(1 - 8 / 32)
    assert chunk_level_sparsity(mask, 1) == pytest.approx(1 - 8 / 32)
    assert chunk_level_sparsity(mask, 4) == pytest.approx(1 - (2 + 2) / 8)
    assert chunk_level_sparsity(mask, 8) == pytest.approx(0.0)
    assert chunk_level_sparsity(mask, 2, seq_len=4) == pytest.approx(1 - (2 + 1 + 1 + 2) / 16)
    assert chunk_level_sparsity(mask, 3, seq_len=4) == pytest.approx(1 - (2 + 1) / 8)  # partial chunks dropped
    with pytest.raises(SparsecraftError, match="longer than a sequence"):
        chunk_level_sparsity(mask, 5, seq_len=4)
    with pytest.raises(SparsecraftError, match="multiple of seq_len"):
        chunk_level_sparsity(mask, 2, seq_len=3)


def test_chunk_and_locality_losses_by_hand():
    p = torch.tensor([[0.5, 0.0], [0.5, 0.25], [0.2, 0.0], [0.0, 1.0]])
    # chunks of 2 tokens in one sequence of 4: expert fires with 1 - prod(1 - p)
    fire = torch.tensor([[1 - 0.5 * 0.5, 1 - 0.75], [0.2, 1.0]])
    assert float(chunk_sparsification_loss(p, 2, 4)) == pytest.approx(float(fire.mean()), abs=1e-4)
    z = torch.tensor([[1.0, -1.0], [2.0, 0.5], [-1.0, 0.0]])
    a = 3.0
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(a * z[:-1]), torch.sigmoid(a * z[1:]))
    assert float(activation_locality_loss(z, 3, a)) == pytest.approx(float(expected), rel=1e-5)
    # a sequence boundary breaks the pairs: two sequences of 1 token have no pair
    assert float(activation_locality_loss(z[:2], 1, a)) == 0.0


def test_smooth_step_sinkhorn_and_permutation():
    t = torch.tensor([-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 2.0])
    s = smooth_step(t, 1.0)
    assert s[0] == 0 and s[1] == 0 and s[-1] == 1 and s[-2] == 1 and s[3] == 0.5
    assert float(s[2] + s[4]) == pytest.approx(1.0)
    p = sinkhorn(torch.randn(3, 5, 5), iterations=50)
    assert torch.allclose(p.sum(-1), torch.ones(3, 5), atol=1e-4) and torch.allclose(p.sum(-2), torch.ones(3, 5),
                                                                                      atol=1e-4)
    perm = torch.eye(4)[[2, 0, 3, 1]]
    hard = nearest_permutation(0.7 * perm + 0.075)
    assert torch.equal(hard, perm)


def test_comet_saturated_trees_respect_cardinality_and_route_like_trees():
    torch.manual_seed(3)
    router = COMETRouter(6, 8, k=2, gamma=0.1)
    with torch.no_grad():
        router.selector.weight.mul_(1e4)  # every smooth-step saturates: each tree reaches one leaf
    x = torch.randn(20, 6)
    r = router(x, 20)
    leaf = router.leaf_probabilities(x)
    assert torch.all((leaf == 0) | (leaf == 1)) and torch.equal(leaf.sum(-1), torch.ones(20, 2))
    assert torch.all(r.active_per_token() <= 2) and torch.all(r.active_per_token() >= 1)
    assert torch.equal(r.mask(8), (leaf > 0).any(1))
    assert torch.allclose(r.gates.sum(-1), torch.ones(20))


def test_comet_soft_trees_leaf_probabilities_sum_to_one():
    torch.manual_seed(4)
    router = COMETRouter(5, 4, k=3)
    leaf = router.leaf_probabilities(torch.randn(9, 5))
    assert leaf.shape == (9, 3, 4) and torch.allclose(leaf.sum(-1), torch.ones(9, 3), atol=1e-6)


def test_comet_local_search_permutes_experts():
    torch.manual_seed(5)
    router = COMETRouter(6, 4, k=1, local_search=True)
    x = torch.randn(10, 6)
    with torch.no_grad():
        router.permutation.copy_(torch.eye(4).unsqueeze(0) * 5)
    base = router(x, 10).gates
    with torch.no_grad():
        router.permutation.copy_(torch.eye(4)[[1, 0, 3, 2]].unsqueeze(0) * 5)
    assert torch.allclose(router(x, 10).gates, base[:, [1, 0, 3, 2]], atol=1e-6)


@pytest.mark.slow
def test_blockffn_adaptive_l1_steers_active_experts():
    torch.manual_seed(6)
    model = TinyTransformer(16, vocab_size=16, d_model=16, num_heads=2, num_layers=1, causal=True)
    use_moe(model, n_experts=8, k=2, hidden=8, router="blockffn", target_active=2.0, adapt_rate=0.2)
    x = torch.randint(0, 16, (8, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 16), x[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + moe_aux_loss(model)).backward()
        opt.step()
    (mask,) = routing_masks(model)
    assert mask.sum(1).float().mean() < 4.0  # from about half of the 8 experts at init
    assert float(model.blocks[0].mlp.router.l1) > 0.01


@settings(max_examples=15, deadline=None)
@given(router=st.sampled_from(["topk", "blockffn", "comet"]), log_e=st.integers(1, 3), k_off=st.integers(0, 4),
       n=st.integers(1, 3), t=st.integers(1, 9), d=st.integers(1, 7), seed=st.integers(0, 99))
def test_property_any_router_matches_dense_reference(router, log_e, k_off, n, t, d, seed):
    torch.manual_seed(seed)
    n_experts = 2**log_e
    k = 1 + k_off % n_experts
    moe = MoEFeedForward(d, n_experts, k, hidden=3, router=router)
    x = torch.randn(n, t, d)
    out = moe(x)
    assert torch.allclose(out, dense_reference(moe, x), atol=1e-5)
    assert math.isfinite(float(moe.aux_loss.detach()))
    mask = moe.routing.mask(n_experts)
    assert int(moe.routing.load(n_experts).sum()) == int(mask.sum())
    if router == "topk":
        assert torch.equal(mask.sum(1), torch.full((n * t,), k))


def test_routing_positional_construction_still_works():
    r = Routing(torch.tensor([[0, 2], [1, 2]]), torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.full((2, 3), 1 / 3))
    assert r.load(3).tolist() == [1, 1, 2]
    assert torch.equal(r.dense_gates(3), torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.9, 0.1]]))
