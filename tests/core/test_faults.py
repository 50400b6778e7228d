"""Issue 20: non-finite weights, pruning twice, memory of global pruning (core API)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft.errors import SparsecraftError
from sparsecraft.training import fit


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


# ------------------------------------------------------------------ 1. NaN/inf and exact zeros
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_pruned_weights_stay_zero_whatever_the_rest_holds(bad):
    model = _mlp()
    sp = sparsecraft.prune(model, sparsity=0.5)
    mask = sp.masks["0.weight"]
    with torch.no_grad():
        model[0].weight.fill_(bad)
    sp.apply()
    assert bool((model[0].weight[~mask] == 0).all())
    sp.set_mask("0.weight", mask)
    assert bool((model[0].weight[~mask] == 0).all())


def test_nan_gradients_of_pruned_weights_are_zero():
    model = _mlp()
    sp = sparsecraft.prune(model, sparsity=0.5)
    (model(torch.full((2, 16), float("nan"))).sum()).backward()
    mask = sp.masks["0.weight"]
    assert bool((model[0].weight.grad[~mask] == 0).all())


@pytest.mark.parametrize("criterion,pattern", [("magnitude", "unstructured"), ("random", "2:4"),
                                               ("random", "unstructured"), ("magnitude", "2:4")])
def test_prune_refuses_non_finite_weights_naming_the_layer(criterion, pattern):
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(SparsecraftError, match=r"2\.weight.*non-finite"):
        sparsecraft.prune(model, sparsity=0.5, criterion=criterion, pattern=pattern)


def test_fit_stops_on_a_nan_batch_before_the_step():
    model = _mlp()
    sp = sparsecraft.prune(model, sparsity=0.5)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    x[40] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp.attach(opt)
    step = int((torch.randperm(64, generator=torch.Generator().manual_seed(0)) == 40).nonzero()) // 16 + 1
    with pytest.raises(SparsecraftError, match=f"non-finite loss at step {step} "):
        fit(model, (x, y), epochs=1, batch_size=16, optimizer=opt, scheduler=None, seed=0, progress=False)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert bool((model[0].weight[~sp.masks["0.weight"]] == 0).all())


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 0.0, -1.0])
def test_fit_refuses_non_finite_learning_rates(lr):
    with pytest.raises(SparsecraftError, match="lr must be a finite number > 0"):
        fit(_mlp(), (torch.randn(8, 16), torch.randint(0, 4, (8,))), lr=lr, progress=False)


# ------------------------------------------------------------ 7. pruning again never revives
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "block4x1"])
def test_pruning_again_keeps_earlier_zeros(pattern):
    model = _mlp()
    first = sparsecraft.prune(model, sparsity=0.9, criterion="random")
    before = {n: m.clone() for n, m in first.masks.items()}
    second = sparsecraft.prune(model, sparsity=0.5, pattern=pattern)
    for name, mask in second.masks.items():
        assert not bool((mask & ~before[name]).any()), name
        assert int(mask.sum()) == int((second.targets[name].param != 0).sum())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    second.attach(opt)
    model(torch.randn(4, 16)).sum().backward()
    opt.step()
    for name, t in second.targets.items():
        assert bool((t.param[~before[name]] == 0).all())


def test_sparse_linear_on_int_input_raises_like_nn_linear():
    from sparsecraft.inference import convert

    model = _mlp()
    sparsecraft.prune(model, sparsity=0.9).finalize()
    converted, _ = convert(model, min_sparsity=0.0)
    x = torch.ones(2, 16, dtype=torch.int64)
    with pytest.raises(RuntimeError) as dense_err:
        _mlp()(x)
    with pytest.raises(RuntimeError) as sparse_err:
        converted(x)
    assert str(sparse_err.value) == str(dense_err.value)
