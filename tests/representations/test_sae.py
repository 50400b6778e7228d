import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.representations import (
    SAE_RULES,
    SparseAutoencoder,
    dictionary_recovery,
    feature_capacities,
    reconstruction_mse,
    sparse_dictionary_data,
    train_sae,
    zipf_density,
)


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 30), features=st.integers(1, 40), k=st.integers(1, 8), seed=st.integers(0, 99))
def test_rule_masks_have_exact_counts(tokens, features, k, seed):
    pre = torch.randn(tokens, features, generator=torch.Generator().manual_seed(seed))
    density = zipf_density(features, float(k))
    topk = SAE_RULES.get("topk")(pre, k, density)
    assert (topk.sum(1) == min(k, features)).all()
    fc = SAE_RULES.get("feature_choice")(pre, k, density)
    m = feature_capacities(density, tokens, k)
    assert (fc.sum(0) == m).all() and int(fc.sum()) == min(k * tokens, tokens * features)
    # each feature keeps its best tokens
    for j in range(features):
        if 0 < m[j] < tokens:
            assert pre[fc[:, j], j].min() >= pre[~fc[:, j], j].max()
    mc = SAE_RULES.get("mutual_choice")(pre, k, density)
    assert int(mc.sum()) == min(k * tokens, tokens * features)
    # mutual choice keeps the globally largest entries
    if int(mc.sum()) < pre.numel():
        assert pre[mc].min() >= pre[~mc].max()


@pytest.mark.parametrize("rule", ["topk", "feature_choice", "mutual_choice"])
def test_codes_have_exact_nonzero_counts(rule):
    sae = SparseAutoencoder(12, 40, k=3, rule=rule, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # all pre-activations positive: every selected entry is non-zero
    x = torch.randn(20, 12)
    z = sae.encode(x)
    if rule == "topk":
        assert ((z != 0).sum(1) == 3).all()
    elif rule == "feature_choice":
        assert int((z != 0).sum()) == 60 and ((z != 0).sum(0) <= 2).all()
    else:
        assert int((z != 0).sum()) == 60
        assert (z != 0).sum(1).unique().numel() > 1  # adaptive: tokens get different counts


def test_tied_init_and_unit_decoder_norms():
    sae = SparseAutoencoder(10, 25, k=2)
    assert torch.equal(sae.W_enc.detach(), sae.W_dec.detach().t())
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(25), atol=1e-6)


@pytest.mark.parametrize("rule", ["topk", "feature_choice", "mutual_choice"])
def test_training_recovers_known_dictionary(rule):
    x, dictionary = sparse_dictionary_data(3000, 24, 32, 3, seed=0)
    sae = SparseAutoencoder(24, 48, k=3, rule=rule, seed=1)
    before, _ = reconstruction_mse(sae, x)
    history = train_sae(sae, x, steps=400, batch_size=256, lr=3e-3)
    after, l0 = reconstruction_mse(sae, x)
    assert after < 0.3 * before and history.mse[-1] < history.mse[0]
    assert l0 <= 3.0 + 1e-9
    assert torch.allclose(sae.W_dec.detach().norm(dim=0), torch.ones(48), atol=1e-5)
    recovery = dictionary_recovery(sae.W_dec.detach(), dictionary)
    assert (recovery > 0.9).float().mean() >= 0.8


def test_dictionary_recovery_of_itself_is_one():
    _, d = sparse_dictionary_data(5, 8, 6, 2)
    assert torch.allclose(dictionary_recovery(d, d), torch.ones(6))


def test_bad_arguments():
    with pytest.raises(SparsecraftError, match="unknown SAE sparsity rule 'l1'"):
        SparseAutoencoder(4, 8, 2, rule="l1")
    sae = SparseAutoencoder(4, 8, 2)
    with pytest.raises(SparsecraftError, match="last dim 4"):
        sae(torch.randn(3, 5))
    with pytest.raises(SparsecraftError, match="batch_size"):
        train_sae(sae, torch.randn(10, 4), batch_size=64)
    with pytest.raises(SparsecraftError, match="must not exceed"):
        sparse_dictionary_data(10, 4, 3, 5)


def test_batched_inputs_are_flattened_to_tokens():
    sae = SparseAutoencoder(6, 10, k=2, rule="mutual_choice")
    x = torch.randn(3, 4, 6)
    out = sae(x)
    assert out.shape == x.shape
    assert torch.allclose(out.reshape(12, 6), sae(x.reshape(12, 6)))
    assert sae.encode(x).shape == (12, 10)
