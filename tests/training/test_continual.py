"""Continual learning with drop/grow subnetworks: task splits, parameter isolation, metrics, errors."""
import pytest
import torch
import torch.nn.functional as F

from sparsecraft import SparsecraftError
from sparsecraft.data import DataSplits, load_dataset
from sparsecraft.training import SparsityConfig, make_updater
from sparsecraft.training.continual import ContinualResult, split_tasks, train_continual

from .conftest import blobs, tiny_mlp


def _blob_splits(k: int = 4) -> DataSplits:
    x, y = blobs(160, k=k, seed=1)
    return DataSplits("blobs", x[:120], y[:120], x[120:], y[120:], k, (20,))


def test_split_tasks_exact_classes_and_counts():
    d = load_dataset("digits")
    tasks = split_tasks(d, 5)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train_y) for t in tasks) == len(d.train_y)
    assert sum(len(t.test_y) for t in tasks) == len(d.test_y)
    for t in tasks:
        assert set(t.train_y.tolist()) == set(t.classes) == set(t.test_y.tolist())
        assert len(t.train_x) == len(t.train_y)
    with pytest.raises(SparsecraftError, match=r"^n_tasks=3 must divide the 10 classes of 'digits'$"):
        split_tasks(d, 3)


@pytest.mark.parametrize("grow", ["random", "gradient", "momentum"])
def test_task_incremental_dst_never_forgets_and_subnetworks_are_disjoint(grow):
    tasks = split_tasks(_blob_splits(), 2)
    model = tiny_mlp()
    r = train_continual(model, tasks, "rigl", "task", sparsity=0.5, allocation="uniform", grow=grow, epochs=3,
                        batch_size=16, update_every=2)
    assert len(r.accuracy) == 2 and [len(row) for row in r.accuracy] == [1, 2]
    assert r.accuracy[1][0] == r.accuracy[0][0] and r.forgetting == 0.0
    # uniform 50% per task on 2 tasks: each owns exactly half of every layer, together all of it
    assert r.own_density == [0.5, 0.5] and r.used_density == 1.0
    assert model[0].weight.count_nonzero() <= model[0].weight.numel()


def test_reserved_positions_are_never_changed_dropped_or_grown():
    x, y = blobs()
    model = tiny_mlp(2)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    occupied = {n: torch.rand(p.shape, generator=g) < 0.3 for n, p in params.items() if n.endswith("weight")}
    frozen = {n: params[n].detach()[m].clone() for n, m in occupied.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)   # decay would move them
    u = make_updater("set", SparsityConfig(0.8, allocation="erk"), total_steps=30, update_every=3,
                     drop_fraction=0.5, grow="momentum", seed=1).reserve(occupied).attach(model, opt)
    own0 = {n: int(m.sum()) for n, m in u.own_masks().items()}
    changed = 0
    for step in range(30):
        idx = torch.arange(step * 8, step * 8 + 16) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        before = {n: m.clone() for n, m in u.masks().items()}
        u.before_step()
        opt.step()
        u.after_step()
        for n, m in u.masks().items():
            assert bool(m[occupied[n]].all())                          # occupied stay active
            assert torch.equal(params[n].detach()[occupied[n]], frozen[n])   # and unchanged
            changed += int((m ^ before[n]).sum())
        assert {n: int(m.sum()) for n, m in u.own_masks().items()} == own0
    assert changed > 0


def test_reserved_initial_masks_avoid_occupied_and_keep_their_values():
    model = tiny_mlp(3)
    w = model[0].weight.detach().clone()
    occupied = {"0.weight": torch.zeros(32, 20, dtype=torch.bool)}
    occupied["0.weight"][:8] = True
    u = make_updater("set", SparsityConfig(0.75, allocation="uniform"), total_steps=4).reserve(occupied)
    u.attach(model)
    own = u.own_masks()["0.weight"]
    assert int(own.sum()) == 160 and not bool(own[:8].any())           # 25% of 640, all in free rows
    assert torch.equal(model[0].weight.detach()[:8], w[:8])
    # more wanted than free: the task gets only what is free
    full = {"0.weight": torch.ones(32, 20, dtype=torch.bool)}
    full["0.weight"][0, :5] = False
    u = make_updater("set", SparsityConfig(0.75, allocation="uniform"), total_steps=4).reserve(full)
    assert int(u.attach(tiny_mlp(3)).own_masks()["0.weight"].sum()) == 5


def test_momentum_growth_picks_the_largest_dense_gradient_average():
    x, y = blobs()
    model = tiny_mlp(1)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    u = make_updater("set", SparsityConfig(0.8, allocation="uniform"), total_steps=12, update_every=4,
                     drop_fraction=0.5, grow="momentum", seed=2).attach(model, opt)
    ema = {}
    for step in range(8):
        idx = torch.arange(step * 8, step * 8 + 16) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        for n in u.masks():                                    # gradients are dense every step
            g = params[n].grad.detach()
            ema[n] = g.clone() if n not in ema else 0.9 * ema[n] + 0.1 * g
        old = {n: m.clone() for n, m in u.masks().items()}
        u.before_step()
        opt.step()
        u.after_step()
        if u.is_update(u.step):
            for n, new in u.masks().items():
                grown = new & ~old[n]
                k = int(grown.sum())
                assert k > 0
                cand = ~new | grown
                score = torch.where(cand, ema[n].abs(), torch.tensor(float("-inf"))).flatten()
                top = torch.topk(score, k).values
                assert torch.allclose(ema[n].abs()[grown].sort().values, top.sort().values)


def test_forgetting_and_average_accuracy_formulas():
    r = ContinualResult(accuracy=[[0.9], [0.7, 0.8], [0.6, 0.5, 1.0]])
    assert r.average_accuracy == pytest.approx(0.7)
    assert r.forgetting == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    assert ContinualResult(accuracy=[[0.4]]).forgetting == 0.0


def test_class_incremental_finetune_forgets():
    tasks = split_tasks(_blob_splits(), 2)
    r = train_continual(tiny_mlp(), tasks, "finetune", "class", epochs=30, batch_size=16, lr=1e-2)
    assert r.accuracy[0][0] > 0.9
    assert r.forgetting == pytest.approx(r.accuracy[0][0] - r.accuracy[1][0]) and r.forgetting > 0.3
    assert r.own_density == [] and r.used_density == 1.0


@pytest.mark.parametrize("kwargs,message", [
    ({"scenario": "domain"}, r"^scenario must be 'task' or 'class', got 'domain'$"),
    ({"method": "gmp"}, r"^continual learning needs a drop/grow method \(set, rigl\), got 'gmp'$"),
    ({"method": "finetune", "grow": "random"}, r"^finetune is dense: grow and updater options do not apply"),
    ({"grow": "hebbian"}, r"^--grow must be one of random, gradient, momentum, got 'hebbian'$"),
    ({"method": "nope"}, r"^unknown training method 'nope'; choose one of: "),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    tasks = split_tasks(_blob_splits(), 2)
    with pytest.raises(SparsecraftError, match=message):
        train_continual(tiny_mlp(), tasks, **kwargs)


def test_reserve_errors():
    u = make_updater("rigl", SparsityConfig(0.5), total_steps=4).reserve({"9.weight": torch.ones(3, 3, dtype=bool)})
    with pytest.raises(SparsecraftError, match=r"^occupied mask for '9.weight', which is not a target; targets: "):
        u.attach(tiny_mlp())
    u = make_updater("rigl", SparsityConfig(0.5), total_steps=4).reserve({"0.weight": torch.ones(3, 3, dtype=bool)})
    with pytest.raises(SparsecraftError, match=r"^occupied mask for 0.weight has shape \(3, 3\) but the parameter"):
        u.attach(tiny_mlp())
    u = make_updater("rigl", SparsityConfig(0.5), total_steps=4).attach(tiny_mlp())
    with pytest.raises(SparsecraftError, match=r"^reserve\(\) must come before attach\(\)"):
        u.reserve({})
