"""Zipf capacities, aux_k / aux_zipf losses and adaptive allocation of the SAEs."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.representations import (
    SAE_AUX_LOSSES,
    FeatureUsage,
    SparseAutoencoder,
    active_matches,
    auxiliary_loss,
    feature_capacities,
    fit_zipf,
    reconstruction_mse,
    sparse_dictionary_data,
    train_sae,
    zipf_density,
)


def test_zipf_density_matches_formula():
    d = zipf_density(5, 2.0, alpha=1.5, beta=1.0)
    w = torch.tensor([(r + 1.0) ** -1.5 for r in range(1, 6)])
    assert torch.allclose(d, 2.0 * w / w.sum())
    assert torch.allclose(zipf_density(7, 3.0, alpha=0.0), torch.full((7,), 3.0 / 7))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.5, 8.0), (0.7, 2.0)])  # betas on the fit grid
def test_fit_zipf_recovers_parameters(alpha, beta):
    d = zipf_density(200, 4.0, alpha, beta)
    a, b = fit_zipf(d[torch.randperm(200)])  # order does not matter
    assert a == pytest.approx(alpha, rel=0.15)
    fitted = zipf_density(200, 4.0, a, b)
    assert torch.allclose(fitted, d, rtol=0.1)


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 64), features=st.integers(1, 50), k=st.integers(1, 10),
       alpha=st.floats(0.0, 3.0), beta=st.floats(0.0, 50.0))
def test_capacities_sum_to_budget(tokens, features, k, alpha, beta):
    density = zipf_density(features, float(k), alpha, beta)
    m = feature_capacities(density, tokens, k)
    assert int(m.sum()) == min(k * tokens, features * tokens)
    assert int(m.min()) >= (1 if k * tokens >= features else 0) and int(m.max()) <= tokens
    # capacities follow the density order (non-increasing up to the +1 of rounding)
    assert (m[1:] <= m[:-1] + 1).all()


def test_zipf_feature_choice_gives_frequent_features_more_tokens():
    sae = SparseAutoencoder(8, 16, k=2, rule="feature_choice", zipf=(1.0, 0.0))
    with torch.no_grad():
        sae.b_enc.fill_(10.0)
    z = sae.encode(torch.randn(64, 8))
    counts = (z != 0).sum(0)
    assert torch.equal(counts, feature_capacities(sae.density, 64, 2))
    assert counts[0] > counts[-1] and int(counts.sum()) == 128
    per_token = (z != 0).sum(1)
    assert per_token.float().std() > 0  # variable features per token


def _usage(sae, fired_steps_ago, density):
    return FeatureUsage(torch.tensor(fired_steps_ago), torch.tensor(density))


def test_aux_k_weights_mark_dead_features():
    sae = SparseAutoencoder(4, 4, k=1)
    usage = _usage(sae, [0, 10, 60, 50], [0.25, 0.25, 0.0, 0.0])
    assert torch.equal(SAE_AUX_LOSSES.get("aux_k")(sae, usage, 50), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_aux_zipf_weights_are_relative_deficits():
    sae = SparseAutoencoder(4, 4, k=2, rule="feature_choice", zipf=(1.0, 0.0))
    target = sae.density.clone()
    observed = target * torch.tensor([1.0, 0.5, 0.25, 2.0])
    w = SAE_AUX_LOSSES.get("aux_zipf")(sae, _usage(sae, [0, 0, 0, 99], observed.tolist()), 50)
    assert torch.allclose(w, torch.tensor([0.0, 0.5, 0.75, 1.0]))  # the last one is dead
    # other rules compare a feature with the target at its observed rank
    tk = SparseAutoencoder(4, 4, k=2, rule="topk", zipf=(1.0, 0.0))
    observed = tk.density.flip(0) * torch.tensor([1.0, 1.0, 1.0, 0.9])  # feature 3 ranks first, 10% short
    w = SAE_AUX_LOSSES.get("aux_zipf")(tk, _usage(tk, [0, 0, 0, 0], observed.tolist()), 50)
    assert torch.allclose(w, torch.tensor([0.0, 0.0, 0.0, 0.1]), atol=1e-6)


def test_aux_zipf_with_binary_deficits_equals_aux_k():
    torch.manual_seed(0)
    sae = SparseAutoencoder(6, 10, k=2)
    pre = torch.randn(32, 10)
    residual = torch.randn(32, 6)
    dead = _usage(sae, [0] * 7 + [80] * 3, [0.2] * 7 + [0.0] * 3)
    weights_k = SAE_AUX_LOSSES.get("aux_k")(sae, dead, 50)
    sae.density.fill_(0.2)
    weights_z = SAE_AUX_LOSSES.get("aux_zipf")(sae, dead, 50)
    assert torch.equal(weights_k, weights_z)
    assert torch.allclose(auxiliary_loss(sae, pre, residual, weights_k, 2),
                          auxiliary_loss(sae, pre, residual, weights_z, 2))


def test_auxiliary_loss_matches_reference():
    torch.manual_seed(1)
    sae = SparseAutoencoder(5, 6, k=1)
    pre = torch.randn(8, 6)
    residual = torch.randn(8, 5)
    weights = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.2])
    got = auxiliary_loss(sae, pre, residual, weights, k_aux=2)
    codes = torch.relu(pre)
    e_hat = torch.zeros(8, 5)
    for t in range(8):
        score = codes[t] * weights
        for j in score.topk(2).indices:
            if score[j] > 0:
                e_hat[t] += codes[t, j] * sae.W_dec.detach()[:, j]
    want = (e_hat - residual).pow(2).sum() / (residual - residual.mean(0)).pow(2).sum()
    assert torch.allclose(got, want, atol=1e-6)
    assert float(auxiliary_loss(sae, pre, residual, torch.zeros(6), 2)) == 0.0


@pytest.mark.slow
def test_aux_k_revives_dead_features():
    x, _ = sparse_dictionary_data(4000, 16, 24, 2, seed=0)
    runs = {}
    for aux in (None, "aux_k"):
        sae = SparseAutoencoder(16, 48, k=2, rule="topk", seed=0)
        with torch.no_grad():
            sae.b_enc[24:] = -1.0  # half the features start nearly dead
        hist = train_sae(sae, x, steps=300, batch_size=256, lr=3e-3, aux=aux, dead_steps=20)
        runs[aux] = hist
    assert runs["aux_k"].dead_features < runs[None].dead_features
    assert len(runs["aux_k"].aux) == len(runs["aux_k"].steps) and not runs[None].aux


def test_active_matches_counts_and_density():
    sae = SparseAutoencoder(6, 12, k=3, rule="mutual_choice")
    x = torch.randn(50, 6)
    active = active_matches(sae, x, batch_size=25)
    assert active.shape == (50, 12)
    _, l0 = reconstruction_mse(sae, x, batch_size=25)
    assert float(active.sum(1).float().mean()) == pytest.approx(l0)


def test_bad_zipf_and_aux_arguments():
    with pytest.raises(SparsecraftError, match="Zipf alpha and beta"):
        SparseAutoencoder(4, 8, 2, rule="feature_choice", zipf=(-1.0, 0.0))
    sae = SparseAutoencoder(4, 8, 2)
    with pytest.raises(SparsecraftError, match="unknown SAE auxiliary loss 'aux_l1'"):
        train_sae(sae, torch.randn(300, 4), aux="aux_l1")
    with pytest.raises(SparsecraftError, match="aux_coef"):
        train_sae(sae, torch.randn(300, 4), aux="aux_k", aux_coef=-1.0)
    with pytest.raises(SparsecraftError, match="at least 3 features"):
        fit_zipf(torch.tensor([0.5, 0.0, 0.0]))
