import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyTransformer
from sparsecraft.representations import (
    DoubleSparseDecoder,
    LabelKVCache,
    calibrate_label_channels,
    decode_quality,
    random_label_channels,
    select_tokens,
    sparse_decode_attention,
    sparsify_attention,
)


def tiny_lm(seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer(20, vocab_size=20, d_model=16, num_heads=2, num_layers=2, max_len=24, causal=True).eval()


def filled_cache(n=2, h=3, t=11, d=8, channels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(n, h, t, d, generator=g), torch.randn(n, h, t, d, generator=g)
    cache = LabelKVCache(n, h, d, capacity=t + 4, channels=channels)
    cache.append(keys[:, :, :5], values[:, :, :5])
    cache.append(keys[:, :, 5:], values[:, :, 5:])
    return cache, keys, values


def test_label_cache_is_separate_contiguous_and_holds_label_channels():
    channels = torch.tensor([[1, 6], [0, 3], [2, 7]])
    cache, keys, values = filled_cache(channels=channels)
    assert cache.length == 11
    assert cache.labels.is_contiguous() and cache.labels.shape == (2, 3, 2, 15)
    expected = torch.stack([keys[:, i][..., channels[i]] for i in range(3)], 1).transpose(-1, -2)
    assert torch.equal(cache.labels[..., :11], expected)
    assert torch.equal(cache.keys, keys) and torch.equal(cache.values, values)
    idx = torch.tensor([[[3, 0], [10, 4], [7, 7]], [[1, 2], [5, 6], [9, 8]]])
    assert torch.equal(cache.gather_keys(idx), keys.gather(2, idx[..., None].expand(-1, -1, -1, 8)))
    w = torch.rand(2, 3, 2)
    picked = values.gather(2, idx[..., None].expand(-1, -1, -1, 8))
    assert torch.allclose(cache.weighted_values(idx, w), (w.unsqueeze(-1) * picked).sum(2), atol=1e-6)
    assert cache.label_bytes() == 2 * 3 * 11 * 2 * 4 and cache.kv_bytes() == 2 * 2 * 3 * 11 * 8 * 4


def test_selection_uses_label_channels_only_and_attention_matches_reference():
    channels = torch.tensor([[0, 5], [2, 3], [7, 1]])
    cache, keys, values = filled_cache(channels=channels, seed=1)
    q = torch.randn(2, 3, 8)
    idx = select_tokens(q, cache, 4)
    for b in range(2):
        for h in range(3):
            approx = keys[b, h][:, channels[h]] @ q[b, h, channels[h]]
            assert set(idx[b, h].tolist()) == set(approx.topk(4).indices.tolist())
            sel = idx[b, h]
            expected = ((keys[b, h, sel] @ q[b, h]) / math.sqrt(8)).softmax(0) @ values[b, h, sel]
            assert torch.allclose(sparse_decode_attention(q, cache, 4)[b, h], expected, atol=1e-5)
    exact = select_tokens(q, cache, 4, exact=True)
    assert all(set(exact[b, h].tolist()) == set((keys[b, h] @ q[b, h]).topk(4).indices.tolist())
               for b in range(2) for h in range(3))


def test_full_budget_is_dense_and_all_channels_equal_exact():
    cache, keys, values = filled_cache(channels=torch.arange(8).repeat(3, 1), seed=2)
    q = torch.randn(2, 3, 8)
    dense = ((q.unsqueeze(2) @ keys.transpose(-1, -2)).squeeze(2) / math.sqrt(8)).softmax(-1)
    dense = (dense.unsqueeze(2) @ values).squeeze(2)
    assert torch.allclose(sparse_decode_attention(q, cache, 11), dense, atol=1e-5)
    assert torch.allclose(sparse_decode_attention(q, cache, 50), dense, atol=1e-5)
    exact = select_tokens(q, cache, 3, exact=True)
    assert torch.equal(select_tokens(q, cache, 3).sort(-1).values, exact.sort(-1).values)


def test_dense_decoder_matches_full_forward():
    model = tiny_lm()
    x = torch.randint(0, 20, (3, 24))
    dec = DoubleSparseDecoder(model, ranking="dense")
    assert torch.allclose(dec.logits(x), model(x), atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_decoder_with_fixed_k_matches_topk_attention_forward(k):
    """Decoding token by token with k label-ranked tokens equals the whole-sequence TopKSelfAttention."""
    model = tiny_lm(1)
    x = torch.randint(0, 20, (2, 16))
    channels = calibrate_label_channels(model, x, r=3)
    dec = DoubleSparseDecoder(model, "label", channels, k=k)
    decoded = dec.logits(x)
    exact = DoubleSparseDecoder(model, "exact", k=k).logits(x)
    sparsify_attention(model, k, channels)
    assert torch.allclose(decoded, model(x), atol=1e-4)
    sparsify_attention(model, k)
    assert torch.allclose(exact, model(x), atol=1e-4)


def test_budget_fraction_tokens_and_quality():
    model = tiny_lm(2)
    dec = DoubleSparseDecoder(model, "exact", budget=0.25)
    assert [dec.tokens_kept(t) for t in (1, 4, 5, 8, 9, 24)] == [1, 1, 2, 2, 3, 6]
    x = torch.randint(0, 20, (5, 20))
    y = torch.roll(x, -1, 1)
    ppl, acc = decode_quality(DoubleSparseDecoder(model, "dense"), x, y, batch_size=2)
    logits = model(x).detach()
    assert ppl == pytest.approx(math.exp(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())),
                                rel=1e-4)
    assert acc == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    full = decode_quality(DoubleSparseDecoder(model, "exact", budget=1.0), x, y)
    assert full[0] == pytest.approx(ppl, rel=1e-4)


def test_random_channels_shape_and_determinism():
    model = tiny_lm()
    a, b = random_label_channels(model, 3, seed=4), random_label_channels(model, 3, seed=4)
    assert set(a) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(torch.equal(a[n], b[n]) and a[n].shape == (2, 3) for n in a)
    assert all(len(set(row.tolist())) == 3 and max(row.tolist()) < 8 for n in a for row in a[n])


def test_bad_input():
    model = tiny_lm()
    with pytest.raises(SparsecraftError, match="exactly one of budget"):
        DoubleSparseDecoder(model, "exact")
    with pytest.raises(SparsecraftError, match="budget must be a fraction"):
        DoubleSparseDecoder(model, "exact", budget=1.5)
    with pytest.raises(SparsecraftError, match="needs label_channels"):
        DoubleSparseDecoder(model, "label", k=2)
    with pytest.raises(SparsecraftError, match="unknown ranking"):
        DoubleSparseDecoder(model, "fast", k=2)
    with pytest.raises(SparsecraftError, match="causal token TinyTransformer"):
        DoubleSparseDecoder(torch.nn.Linear(2, 2), "dense")
    with pytest.raises(SparsecraftError, match="no entry"):
        DoubleSparseDecoder(model, "label", {"blocks.0.attn": torch.zeros(2, 1)}, k=2)
    with pytest.raises(SparsecraftError, match="label_channels must lie"):
        LabelKVCache(1, 2, 4, 8, channels=torch.full((2, 1), 4))
    with pytest.raises(SparsecraftError, match="exceeds head_dim"):
        random_label_channels(model, 9)
    cache = LabelKVCache(1, 2, 4, 3)
    with pytest.raises(SparsecraftError, match="cache holds 3 tokens"):
        cache.append(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(SparsecraftError, match="keys/values must be"):
        cache.append(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(SparsecraftError, match="no label channels"):
        cache.append(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
        select_tokens(torch.zeros(1, 2, 4), cache, 1)
    with pytest.raises(SparsecraftError, match="call reset"):
        DoubleSparseDecoder(model, "dense").step(torch.zeros(2, dtype=torch.int64))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 3), d=st.integers(1, 6), t=st.integers(1, 12), k=st.integers(1, 14),
       r_frac=st.floats(0.1, 1.0), seed=st.integers(0, 99))
def test_property_sparse_attention_is_attention_over_selected_tokens(n, h, d, t, k, r_frac, seed):
    g = torch.Generator().manual_seed(seed)
    r = max(1, int(r_frac * d))
    channels = torch.stack([torch.randperm(d, generator=g)[:r] for _ in range(h)])
    cache = LabelKVCache(n, h, d, t, channels=channels)
    keys, values = torch.randn(n, h, t, d, generator=g), torch.randn(n, h, t, d, generator=g)
    cache.append(keys, values)
    q = torch.randn(n, h, d, generator=g)
    out = sparse_decode_attention(q, cache, k)
    kk = min(k, t)
    idx = select_tokens(q, cache, kk) if kk < t else torch.arange(t).expand(n, h, t)
    assert idx.shape == (n, h, kk) and all(len(set(row.tolist())) == kk for row in idx.flatten(0, 1))
    mask = torch.zeros(n, h, t, dtype=torch.bool).scatter(-1, idx, True)
    scores = (keys @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(d)
    ref = (scores.masked_fill(~mask, float("-inf")).softmax(-1).unsqueeze(-2) @ values).squeeze(-2)
    assert torch.allclose(out, ref, atol=1e-5)
