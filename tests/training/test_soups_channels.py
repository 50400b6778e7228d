"""Sparse model soups average exactly; MaskSparsity penalises only its channels and removes them."""
import copy

import torch
from torch import nn

from sparsecraft.training import (
    SparsityConfig,
    average_state_dicts,
    find_chains,
    fit,
    make_updater,
    remove_channels,
    sparse_model_soup,
)

from .conftest import blobs, tiny_mlp


def test_average_state_dicts_exact():
    states = [tiny_mlp(s).state_dict() for s in range(3)]
    avg = average_state_dicts(states)
    for k in avg:
        torch.testing.assert_close(avg[k], (states[0][k] + states[1][k] + states[2][k]) / 3, rtol=0, atol=1e-7)
    w = average_state_dicts(states[:2], weights=[3, 1])
    torch.testing.assert_close(w["0.weight"], 0.75 * states[0]["0.weight"] + 0.25 * states[1]["0.weight"])


def _scorer(x, y):
    def score(m):
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())
    return score


def test_uniform_soup_is_mean_of_ingredients_and_keeps_mask(data):
    model = tiny_mlp()
    fit(model, data, epochs=2, batch_size=16, progress=False)
    ingredients = []

    def train(m, sp, seed):
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        sp.attach(opt)
        fit(m, data, epochs=1, batch_size=16, optimizer=opt, seed=seed, progress=False)
        ingredients.append(copy.deepcopy(m.state_dict()))

    hx, hy = blobs(64, seed=9)
    sp, phases = sparse_model_soup(model, SparsityConfig(0.8, allocation="global"), train, _scorer(hx, hy),
                                   sparsities=[0.5, 0.8], ingredients=3)
    assert [p.sparsity for p in phases] == [0.5, 0.8] and len(ingredients) == 6
    last = ingredients[3:]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, sum(s[k] for s in last) / 3)
    total = sum(m.numel() for m in sp.masks.values())
    assert round(sp.sparsity() * total) == round(0.8 * total)
    for n, m in sp.masks.items():
        assert bool((dict(model.named_parameters())[n][~m] == 0).all())
        for s in last:
            assert bool((s[n][~m] == 0).all())      # every ingredient shared the mask


def test_greedy_soup_never_worse_than_best_ingredient(data):
    model = tiny_mlp()
    fit(model, data, epochs=2, batch_size=16, progress=False)

    def train(m, sp, seed):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        sp.attach(opt)
        fit(m, data, epochs=1, batch_size=16, optimizer=opt, seed=seed, progress=False)

    score = _scorer(*blobs(64, seed=9))
    _, phases = sparse_model_soup(model, SparsityConfig(0.7, allocation="uniform"), train, score,
                                  ingredients=3, soup="greedy")
    p = phases[0]
    assert p.used[0] == max(range(3), key=lambda i: p.ingredient_scores[i])
    assert p.soup_score >= max(p.ingredient_scores)


def test_chains_found_in_mlp_and_resnet():
    from sparsecraft.models import build_model

    assert [(c.producer, c.consumer) for c in find_chains(tiny_mlp())] == [("0", "2"), ("2", "4")]
    cnn = build_model("cnn", in_channels=1, num_classes=10, channels=(8, 16))
    chains = find_chains(cnn)
    assert [(c.producer, c.norm, c.consumer) for c in chains] == [
        ("blocks.0.conv1", "blocks.0.bn1", "blocks.0.conv2"), ("blocks.1.conv1", "blocks.1.bn1", "blocks.1.conv2")]


def test_masksparsity_penalises_only_marked_channels_and_removal_is_exact():
    from sparsecraft.models import build_model

    torch.manual_seed(0)
    cnn = build_model("cnn", in_channels=1, num_classes=10, channels=(8, 16))
    x = torch.randn(6, 1, 8, 8)
    cnn(x)  # BN running stats move away from their defaults
    u = make_updater("masksparsity", SparsityConfig(0.5, allocation="uniform"), total_steps=10,
                     penalty=0.01, select_fraction=0.0).attach(cnn)
    assert u.sparsity() == 0.5
    cnn.zero_grad()
    cnn(x).sum().backward()
    before = {n: p.grad.clone() for n, p in cnn.named_parameters()}
    u.before_step()
    for chain, keep in u.keep.items():
        bn = cnn.get_submodule(chain.norm)
        for p, name in ((bn.weight, "weight"), (bn.bias, "bias")):
            diff = p.grad - before[f"{chain.norm}.{name}"]
            torch.testing.assert_close(diff[keep], torch.zeros(int(keep.sum())))
            torch.testing.assert_close(diff[~keep], 0.01 * torch.sign(p.detach()[~keep]))
    for n, p in cnn.named_parameters():
        if "bn1" not in n:
            assert torch.equal(p.grad, before[n])
    # zero the marked channels' BN scale and shift: removal must not change the eval output
    with torch.no_grad():
        for chain, keep in u.keep.items():
            bn = cnn.get_submodule(chain.norm)
            bn.weight[~keep] = 0
            bn.bias[~keep] = 0
    cnn.eval()
    ref = cnn(x)
    n_before = sum(p.numel() for p in cnn.parameters())
    small = u.finalize()
    assert small.blocks[0].conv1.out_channels == 4 and small.blocks[1].conv2.in_channels == 8
    assert sum(p.numel() for p in small.parameters()) == u.removed["params_after"] < n_before
    torch.testing.assert_close(small(x), ref)


def test_remove_channels_mlp_chain_of_chains():
    model = tiny_mlp()
    chains = find_chains(model)
    keep = {chains[0]: torch.arange(32) % 2 == 0, chains[1]: torch.arange(16) < 5}
    with torch.no_grad():
        model[0].weight[~keep[chains[0]]] = 0
        model[0].bias[~keep[chains[0]]] = 0
        model[2].weight[~keep[chains[1]]] = 0
        model[2].bias[~keep[chains[1]]] = 0
    x = torch.randn(3, 20)
    ref = model(x)
    remove_channels(model, keep)
    assert [tuple(m.weight.shape) for m in (model[0], model[2], model[4])] == [(16, 20), (5, 16), (4, 5)]
    torch.testing.assert_close(model(x), ref)
    assert isinstance(model[4], nn.Linear)
