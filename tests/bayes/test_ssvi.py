"""Bayesian layers, calibration metrics and SSVI: fixed subspace size, removal/addition rules, errors."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsecraft import SparsecraftError, find_targets
from sparsecraft.bayes import (
    SSVI,
    BayesLinear,
    BayesMLP,
    expected_calibration_error,
    kl_divergence,
    predict,
    predictive_metrics,
    train_bayes,
)
from sparsecraft.training import SparsityConfig


def _blobs(n=96, d=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    return torch.randn(k, d, generator=g)[y] * 2 + torch.randn(n, d, generator=g), y


def test_bayes_linear_is_a_target_and_samples_around_its_mean():
    torch.manual_seed(0)
    layer = BayesLinear(5, 3, sigma_init=0.1)
    assert [t.name for t in find_targets(nn.Sequential(layer))] == ["0.weight"]
    assert torch.allclose(layer.weight_sigma(), torch.full((3, 5), 0.1))
    x = torch.randn(4, 5)
    layer.eval()
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))     # eval: the mean
    layer.train()
    draws = torch.stack([layer(x) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), F.linear(x, layer.weight, layer.bias), atol=0.02)
    var = (x ** 2).sum(1, keepdim=True) * 0.01 + 0.01                       # sum_i x_i^2 sigma^2 + sigma_b^2
    assert torch.allclose(draws.var(0), var.expand(4, 3), rtol=0.1)


def test_kl_matches_the_closed_form_and_skips_inactive_weights():
    layer = BayesLinear(4, 2, sigma_init=0.5, prior_sigma=2.0)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    per = math.log(2.0 / 0.5) + (0.25 + 1.0) / 8 - 0.5
    per_bias = math.log(2.0 / 0.5) + 0.25 / 8 - 0.5
    assert float(layer.kl().detach()) == pytest.approx(8 * per + 2 * per_bias, rel=1e-5)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, :3] = True
    layer.register_buffer("weight_mask", mask, persistent=False)
    assert float(kl_divergence(nn.Sequential(layer)).detach()) == pytest.approx(3 * per + 2 * per_bias, rel=1e-5)
    layer.train()
    with torch.no_grad():
        layer.weight.mul_(mask)
    out = torch.stack([layer(torch.eye(4)) for _ in range(5)])
    # output 1 has no active weight: on every input it is the bias sample alone (one per forward)
    assert torch.equal(out[:, 0, 1], out[:, 3, 1]) and bool(out[:, 0, 1].std() > 0)
    # output 0 on input e_3 (inactive weight) is its bias sample too; on e_0 (active) it is not
    assert not torch.equal(out[:, 0, 0], out[:, 3, 0])


def test_ece_and_nll_exact_values():
    probs = torch.tensor([[0.93, 0.07], [0.62, 0.38], [0.29, 0.71], [0.16, 0.84]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 1])
    # bins of width 0.5: (0.5, 1] holds all four: confidence mean 0.775, accuracy 0.75
    assert expected_calibration_error(probs, y, bins=2) == pytest.approx(0.025)
    # 10 bins: 0.93 (right), 0.62 (wrong), 0.71 (right), 0.84 (right), one per bin, each weight 1/4
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx((0.07 + 0.62 + 0.29 + 0.16) / 4)
    m = predictive_metrics(probs, y, bins=10)
    assert m["accuracy"] == 0.75
    assert m["nll"] == pytest.approx(-(math.log(0.93) + math.log(0.38) + math.log(0.71) + math.log(0.84)) / 4)
    with pytest.raises(SparsecraftError, match=r"^probs must be \(N, C\) with N = len\(y\) > 0, got \(4, 2\) and 3$"):
        expected_calibration_error(probs, y[:3])


def test_predict_averages_samples_and_restores_mode():
    torch.manual_seed(1)
    model = BayesMLP(12, 3, hidden=(8,), sigma_init=0.5)
    x, _ = _blobs(10)
    model.train()
    torch.manual_seed(2)
    p = predict(model, x, samples=5)
    assert model.training and p.shape == (10, 3) and torch.allclose(p.sum(1), torch.ones(10))
    torch.manual_seed(2)
    model.eval()
    for m in model.modules():
        if isinstance(m, BayesLinear):
            m.sample = True
    with torch.no_grad():
        ref = torch.stack([F.softmax(model(x), -1) for _ in range(5)]).mean(0)
    assert torch.allclose(p, ref)
    plain = nn.Sequential(nn.Linear(12, 3))
    assert torch.allclose(predict(plain, x, samples=7), F.softmax(plain(x), -1).detach())


@pytest.mark.parametrize("remove", ["snr", "magnitude"])
def test_ssvi_keeps_the_subspace_size_and_removes_by_its_criterion(remove):
    x, y = _blobs()
    torch.manual_seed(0)
    model = BayesMLP(12, 3, hidden=(16,))
    u = SSVI(SparsityConfig(0.75, allocation="uniform"), seed=1, update_every=2, drop_fraction=0.5, remove=remove)
    seen = {}

    def check(upd, event):
        masks = {n: m.clone() for n, m in upd.masks().items()}
        kept = {n: int(m.sum()) for n, m in masks.items()}
        if event["kind"] == "init":
            seen.update(kept=kept, prev=masks, scores={n: upd.drop_scores(n).clone() for n in masks})
            return
        assert kept == seen["kept"]                                   # the subspace never changes size
        for n, t in upd.sparsifier.targets.items():
            entered = masks[n] & ~seen["prev"][n]
            assert bool((t.param[entered] == 0).all())                # mu = 0 on entering
            assert torch.allclose(t.module.weight_rho[entered], torch.tensor(t.module.rho_init))
            assert bool((t.param[~masks[n]] == 0).all())
        seen["prev"] = masks

    u.listeners.append(check)
    train_bayes(model, (x, y), u, epochs=4, batch_size=16, lr=1e-2)
    assert sum(e["kind"] == "drop_grow" for e in u.events) > 0
    assert u.sparsity() == pytest.approx(0.75, abs=0.01)
    # the removal scores are |mu| / sigma or |mu|
    layer = model.layers[1]
    expect = layer.weight.abs() / layer.weight_sigma() if remove == "snr" else layer.weight.abs()
    assert torch.allclose(u.drop_scores("layers.1.weight"), expect.detach())


def test_ssvi_removes_the_lowest_snr_weights():
    torch.manual_seed(0)
    model = BayesMLP(4, 2, hidden=())
    layer = model.layers[1]
    u = SSVI(SparsityConfig(0.5, allocation="uniform"), total_steps=8, update_every=1, drop_fraction=0.5,
             end_fraction=1.0, decay="constant", grow="random", remove="snr").attach(model)
    mask = u.masks()["layers.1.weight"].clone()
    active = mask.nonzero(as_tuple=True)
    with torch.no_grad():   # active means 1..4 with sigma 1, 0.5, 2, 0.25: SNR 1, 4, 1.5, 16
        layer.weight[active] = torch.tensor([1.0, 2.0, 3.0, 4.0])
        layer.weight_rho[active] = torch.tensor([1.0, 0.5, 2.0, 0.25]).expm1().log()
    u.step = 1
    u.update()
    new = u.masks()["layers.1.weight"]
    survivors = (new & mask)[active]
    assert survivors.tolist() == [False, True, False, True]         # the two lowest SNR (1 and 1.5) left


def test_ssvi_errors():
    with pytest.raises(SparsecraftError, match=r"^remove must be one of snr, magnitude, got 'fisher'$"):
        SSVI(SparsityConfig(0.9), remove="fisher")
    plain = nn.Sequential(nn.Linear(4, 3))
    message = r"^SSVI needs BayesLinear layers; 0.weight is a Linear \(use BayesMLP\)$"
    with pytest.raises(SparsecraftError, match=message):
        SSVI(SparsityConfig(0.5), total_steps=4).attach(plain)
    with pytest.raises(SparsecraftError, match=r"^sigma_init and prior_sigma must be > 0, got 0.0, 1.0$"):
        BayesLinear(3, 2, sigma_init=0.0)
