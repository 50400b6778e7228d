import copy

import pytest
import torch
from torch import nn

from sparsecraft.efficient import apply
from sparsecraft.errors import SparsecraftError
from sparsecraft.patterns import get_pattern


@pytest.mark.parametrize("method", ["pst", "movement"])
def test_merge_hands_exact_sparsity_masks_to_a_sparsifier(lm, train, method):
    model, x = lm
    adapter = apply(model, method, within="blocks", sparsity=0.75, rank=2, score_rank=2) if method == "pst" \
        else apply(model, method, within="blocks", sparsity=0.75)
    train(adapter, x, steps=6)
    merged = adapter.merge()
    sp = adapter.sparsifier
    assert sp.model is merged and len(sp.masks) == 12
    for name, mask in sp.masks.items():
        assert int(mask.sum()) == mask.numel() // 4
        weight = merged.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.equal(weight != 0, mask)
    assert sp.sparsity() == 0.75


def test_pst_trainable_parameters_are_the_small_factors(lm):
    model, _ = lm
    adapter = apply(copy.deepcopy(model), "pst", layers=["blocks.0.mlp.fc1"], rank=3, score_rank=2)
    out_f, in_f = 128, 32
    assert adapter.num_trainable() == 3 * (out_f + in_f) + 2 * (out_f + in_f) + out_f + in_f
    movement = apply(copy.deepcopy(model), "movement", layers=["blocks.0.mlp.fc1"])
    assert movement.num_trainable() == 2 * out_f * in_f


def test_sparsity_follows_the_cubic_ramp(lm):
    model, _ = lm
    adapter = apply(model, "pst", within="blocks", sparsity=0.8, warmup=0.1, ramp=0.5)
    layer = adapter.layers["blocks.0.attn.q_proj"]
    seen = []
    for s in (5, 10, 30, 50, 100):
        adapter.step(s, 100)
        seen.append(layer.sparsity)
    assert seen[:2] == [0.0, 0.0] and seen[3:] == [0.8, 0.8]
    assert seen[2] == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert int((~layer.mask()).sum()) == round(0.8 * 32 * 32)


def test_straight_through_gradient_of_the_score_is_grad_times_weight():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    net = nn.Sequential(lin)
    adapter = apply(net, "movement", sparsity=0.5)
    layer = adapter.layers["0"]
    layer.sparsity = 0.5
    with torch.no_grad():
        layer.score.copy_(torch.randn(4, 6))
    x = torch.randn(3, 6)
    net(x).pow(2).sum().backward()
    mask = layer.mask().float()
    assert int(mask.sum()) == 12
    eff = (layer.weight.detach() * mask).requires_grad_(True)
    (x @ eff.T + layer.bias).pow(2).sum().backward()
    torch.testing.assert_close(layer.score.grad, eff.grad * layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, eff.grad * mask)


def test_structured_pattern_masks(lm, train):
    model, x = lm
    adapter = apply(model, "pst", within="blocks", sparsity=0.5, pattern="2:4", rank=2, score_rank=2)
    train(adapter, x, steps=3)
    adapter.merge()
    pattern = get_pattern("2:4")
    for mask in adapter.sparsifier.masks.values():
        pattern.validate(mask)
        assert int(mask.sum()) == mask.numel() // 2


def test_pst_bad_input(lm):
    model, _ = lm
    with pytest.raises(SparsecraftError, match=r"--sparsity must lie in \[0, 1\), got 90.0"):
        apply(model, "pst", sparsity=90)
    with pytest.raises(SparsecraftError, match="N:M needs 0 < N < M, got 3:2"):
        apply(copy.deepcopy(model), "pst", pattern="3:2")
    with pytest.raises(SparsecraftError, match="not divisible by M=3"):
        apply(copy.deepcopy(model), "movement", pattern="1:3", within="blocks")
