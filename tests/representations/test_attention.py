import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import SelfAttention, TinyTransformer
from sparsecraft.representations import TopKSelfAttention, calibrate_label_channels, sparsify_attention


def manual_topk_attention(attn: SelfAttention, x: torch.Tensor, k: int) -> torch.Tensor:
    """Reference: per (batch, head, query) loop keeping the k largest causal-valid scores."""
    q, kk, v = attn._split(attn.q_proj(x)), attn._split(attn.k_proj(x)), attn._split(attn.v_proj(x))
    n, h, t, d = q.shape
    out = torch.zeros_like(q)
    for b in range(n):
        for hh in range(h):
            for i in range(t):
                valid = i + 1 if attn.causal else t
                s = kk[b, hh, :valid] @ q[b, hh, i] / d**0.5
                top = s.topk(min(k, valid)).indices
                out[b, hh, i] = s[top].softmax(0) @ v[b, hh, top]
    return attn.out_proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("causal", [False, True])
def test_k_equal_length_is_dense(causal):
    torch.manual_seed(0)
    attn = SelfAttention(16, 4, causal=causal).eval()
    x = torch.randn(2, 9, 16)
    sparse = TopKSelfAttention.from_dense(attn, k=9)
    assert torch.allclose(sparse(x), attn(x), atol=1e-6)
    assert torch.allclose(TopKSelfAttention.from_dense(attn, k=50)(x), attn(x), atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_each_query_attends_to_k_keys_and_matches_reference(causal, k):
    torch.manual_seed(1)
    attn = SelfAttention(12, 3, causal=causal).eval()
    x = torch.randn(2, 8, 12)
    sparse = TopKSelfAttention.from_dense(attn, k=k)
    keep = sparse.attention_mask(x)
    expected = torch.full((8,), k) if not causal else torch.arange(1, 9).clamp(max=k)
    assert torch.equal(keep.sum(-1), expected.expand(2, 3, 8))
    if causal:
        assert not keep.triu(1).any()
    assert torch.allclose(sparse(x), manual_topk_attention(attn, x, k), atol=1e-5)


def test_label_channels_all_equal_exact_ranking_and_subset_changes_it():
    torch.manual_seed(2)
    attn = SelfAttention(16, 2).eval()
    x = torch.randn(1, 10, 16)
    all_channels = torch.arange(8).repeat(2, 1)
    exact = TopKSelfAttention.from_dense(attn, k=3)
    labelled = TopKSelfAttention.from_dense(attn, k=3, label_channels=all_channels)
    assert torch.equal(labelled.attention_mask(x), exact.attention_mask(x))
    one = TopKSelfAttention.from_dense(attn, k=3, label_channels=torch.tensor([[0], [5]]))
    q, k = attn._split(attn.q_proj(x)), attn._split(attn.k_proj(x))
    approx = torch.stack([q[:, 0, :, 0:1] @ k[:, 0, :, 0:1].transpose(1, 2),
                          q[:, 1, :, 5:6] @ k[:, 1, :, 5:6].transpose(1, 2)], 1)
    top = approx.topk(3, dim=-1).indices
    assert torch.equal(one.attention_mask(x), torch.zeros_like(approx, dtype=torch.bool).scatter(-1, top, True))


def test_calibration_picks_outlier_channels_and_sparsify_model():
    torch.manual_seed(3)
    model = TinyTransformer(30, vocab_size=30, d_model=16, num_heads=2, num_layers=2, causal=True).eval()
    with torch.no_grad():  # make channel 2 of head 0 and channel 7 of head 1 dominate q.k in block 0
        for proj in (model.blocks[0].attn.q_proj, model.blocks[0].attn.k_proj):
            proj.weight[2] *= 20
            proj.weight[8 + 7] *= 20
    x = torch.randint(0, 30, (4, 12))
    channels = calibrate_label_channels(model, x, r=1)
    assert set(channels) == {"blocks.0.attn", "blocks.1.attn"}
    assert channels["blocks.0.attn"].tolist() == [[2], [7]]
    dense = model(x)
    assert sparsify_attention(model, k=12, label_channels=channels) == ["blocks.0.attn", "blocks.1.attn"]
    assert isinstance(model.blocks[0].attn, TopKSelfAttention)
    assert torch.allclose(model(x), dense, atol=1e-5)
    sparsify_attention(model, k=2)
    assert not torch.allclose(model(x), dense, atol=1e-3)


def test_bad_arguments():
    attn = SelfAttention(8, 2)
    with pytest.raises(SparsecraftError, match="label_channels must be"):
        TopKSelfAttention.from_dense(attn, 2, label_channels=torch.zeros(3, 1))
    with pytest.raises(SparsecraftError, match="head_dim"):
        TopKSelfAttention.from_dense(attn, 2, label_channels=torch.full((2, 1), 4))
    with pytest.raises(SparsecraftError, match="k must be"):
        TopKSelfAttention.from_dense(attn, 0)
    with pytest.raises(SparsecraftError, match="no SelfAttention"):
        sparsify_attention(torch.nn.Linear(2, 2), 3)
    model = TinyTransformer(5, vocab_size=5, d_model=8, num_heads=2, num_layers=1)
    with pytest.raises(SparsecraftError, match="exceeds head_dim"):
        calibrate_label_channels(model, torch.randint(0, 5, (1, 4)), r=9)


@settings(max_examples=15, deadline=None)
@given(
    heads=st.integers(1, 3), head_dim=st.integers(1, 5), length=st.integers(1, 9),
    k=st.integers(1, 10), causal=st.booleans(), seed=st.integers(0, 99),
)
def test_property_odd_shapes_match_reference(heads, head_dim, length, k, causal, seed):
    torch.manual_seed(seed)
    attn = SelfAttention(heads * head_dim, heads, causal=causal).eval()
    x = torch.randn(2, length, heads * head_dim)
    sparse = TopKSelfAttention.from_dense(attn, k=k)
    counts = sparse.attention_mask(x).sum(-1)
    valid = torch.arange(1, length + 1) if causal else torch.full((length,), length)
    assert torch.equal(counts, valid.clamp(max=k).expand(2, heads, length))
    assert torch.allclose(sparse(x), manual_topk_attention(attn, x, k), atol=1e-5)
