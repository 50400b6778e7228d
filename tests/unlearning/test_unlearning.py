"""Unlearning: forget splits, the unlearners (dense and pruned), the membership-inference attack, metrics."""
import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError
from sparsecraft.data import DataSplits
from sparsecraft.training import fit
from sparsecraft.unlearning import (
    UNLEARNERS,
    example_losses,
    forget_split,
    loss_threshold,
    unlearn,
    unlearning_gap,
    unlearning_metrics,
)


def _data(n: int = 120, k: int = 4, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(k, 12, generator=g)[y] * 2 + torch.randn(n, 12, generator=g)
    return DataSplits("blobs", x[:90], y[:90], x[90:], y[90:], k, (12,))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 4))


def test_forget_split_class_and_random_exact_counts():
    d = _data()
    s = forget_split(d, forget_class=2)
    assert len(s.forget_y) == int((d.train_y == 2).sum()) and bool((s.forget_y == 2).all())
    assert len(s.retain_y) + len(s.forget_y) == 90 and not bool((s.retain_y == 2).any())
    assert not bool((s.test_y == 2).any()) and len(s.test_y) == int((d.test_y != 2).sum())
    r = forget_split(d, fraction=0.1, seed=3)
    assert len(r.forget_y) == 9 and len(r.retain_y) == 81 and len(r.test_y) == 30 and r.forget_class is None
    together = torch.cat([r.forget_x, r.retain_x])
    assert torch.equal(together.sort(0).values, d.train_x.sort(0).values)      # a partition of the training set
    assert torch.equal(forget_split(d, fraction=0.1, seed=3).forget_x, r.forget_x)


@pytest.mark.parametrize("kwargs,message", [
    ({}, r"^give exactly one of forget_class= \(a class id\) and fraction= \(a random subset\)$"),
    ({"forget_class": 1, "fraction": 0.1}, r"^give exactly one of"),
    ({"forget_class": 4}, r"^forget_class must be a class id in \[0, 4\), got 4$"),
    ({"fraction": 1.0}, r"^fraction must lie in \(0, 1\), got 1.0$"),
])
def test_forget_split_errors(kwargs, message):
    with pytest.raises(SparsecraftError, match=message):
        forget_split(_data(), **kwargs)


def test_loss_threshold_separates_and_handles_ties():
    member = torch.tensor([0.1, 0.2, 0.3])
    nonmember = torch.tensor([1.0, 2.0])
    tau = loss_threshold(member, nonmember)
    assert 0.3 < tau < 1.0 and tau == pytest.approx(0.65)
    # identical losses cannot be split: the best is to call everything one side (balanced accuracy 0.5)
    same = loss_threshold(torch.ones(4), torch.ones(3))
    assert same in (0.0, 2.0)
    with pytest.raises(SparsecraftError, match="non-empty retain and test sets"):
        loss_threshold(torch.ones(2), torch.ones(0))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 5), min_size=1, max_size=20), st.lists(st.floats(0, 5), min_size=1, max_size=20))
def test_loss_threshold_is_optimal_in_balanced_accuracy(m, n):
    member, nonmember = torch.tensor(m, dtype=torch.float64), torch.tensor(n, dtype=torch.float64)
    tau = loss_threshold(member, nonmember)

    def bacc(t):
        return float(((member <= t).double().mean() + (nonmember > t).double().mean()) / 2)

    candidates = torch.cat([member, nonmember, torch.tensor([-1.0])])
    assert bacc(tau) >= max(bacc(float(c)) for c in candidates) - 1e-12


def test_metrics_and_gap_on_a_trained_model():
    d = _data()
    split = forget_split(d, forget_class=0)
    model = _model()
    fit(model, d, None, epochs=20, batch_size=16, lr=1e-2, progress=False)
    m = unlearning_metrics(model, split)
    assert set(m) == {"UA", "RA", "TA", "MIA"} and all(0.0 <= v <= 1.0 for v in m.values())
    assert m["UA"] < 0.2 and m["RA"] > 0.9                           # it has learned class 0
    losses = example_losses(model, split.forget_x, split.forget_y)
    assert losses.shape == (len(split.forget_y),) and bool((losses >= 0).all())
    assert unlearning_gap(m, m) == 0.0
    assert unlearning_gap({"UA": 1, "RA": 1, "TA": 1, "MIA": 1}, {"UA": 0, "RA": 0.5, "TA": 1, "MIA": 0.5}) == 0.5


def test_retrain_equals_training_on_the_retain_set_from_init():
    d = _data()
    split = forget_split(d, fraction=0.2, seed=1)
    model = _model(1)
    init = copy.deepcopy(model.state_dict())
    fit(model, d, None, epochs=3, batch_size=16, progress=False)
    unlearn("retrain", model, split, init_state=init, seed=5, epochs=2, lr=1e-2, batch_size=16)
    ref = _model(1)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.0)
    fit(ref, (split.retain_x, split.retain_y), None, epochs=2, batch_size=16, optimizer=opt, seed=5, progress=False)
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", UNLEARNERS.names())
def test_every_unlearner_keeps_the_pruned_mask(method):
    d = _data()
    split = forget_split(d, forget_class=1)
    model = _model(2)
    init = copy.deepcopy(model.state_dict())
    fit(model, d, None, epochs=3, batch_size=16, progress=False)
    sp = sparsecraft.prune(model, 0.8, allocation="global")
    masks = {n: m.clone() for n, m in sp.masks.items()}
    before = copy.deepcopy(model.state_dict())
    unlearn(method, model, split, sp, init_state=init, epochs=1, batch_size=16)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(sp.masks[n], m) and bool((params[n][~m] == 0).all())
        assert int((params[n] != 0).sum()) <= int(m.sum())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())   # it did train


def test_gradient_ascent_raises_the_forget_loss_and_l1_shrinks_weights():
    d = _data()
    split = forget_split(d, forget_class=3)
    model = _model(3)
    fit(model, d, None, epochs=10, batch_size=16, lr=1e-2, progress=False)
    start = float(example_losses(model, split.forget_x, split.forget_y).mean())
    ga = copy.deepcopy(model)
    unlearn("gradient_ascent", ga, split, epochs=3, lr=1e-3, batch_size=8)
    assert float(example_losses(ga, split.forget_x, split.forget_y).mean()) > start
    plain, l1 = copy.deepcopy(model), copy.deepcopy(model)
    unlearn("finetune", plain, split, seed=0, epochs=3, lr=1e-3)
    unlearn("l1_sparse", l1, split, seed=0, epochs=3, lr=1e-3, gamma=1e-2)
    norm = [sum(float(m[i].weight.detach().abs().sum()) for i in (0, 2)) for m in (plain, l1)]
    assert norm[1] < norm[0]


def test_unlearn_errors():
    d = _data()
    split = forget_split(d, forget_class=0)
    with pytest.raises(SparsecraftError, match=r"^unknown unlearning method 'scrub'; choose one of: "):
        unlearn("scrub", _model(), split)
    with pytest.raises(SparsecraftError, match=r"^retrain starts again from the initial weights: pass init_state=$"):
        unlearn("retrain", _model(), split)
    with pytest.raises(SparsecraftError, match=r"^unlearning method 'finetune' has no option 'gamma'; its options"):
        unlearn("finetune", _model(), split, gamma=0.1)
    with pytest.raises(SparsecraftError, match=r"^--lr must be a finite number > 0, got -1.0$"):
        unlearn("finetune", _model(), split, lr=-1.0)
    other = _model()
    with pytest.raises(SparsecraftError, match=r"^the sparsifier holds the masks of another model"):
        unlearn("finetune", _model(), split, sparsecraft.prune(other, 0.5))
