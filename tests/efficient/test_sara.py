import copy

import numpy as np
import pytest
import torch

from sparsecraft.efficient import apply
from sparsecraft.efficient.sara import smallest_indices
from sparsecraft.errors import SparsecraftError


def test_smallest_indices_are_the_smallest_magnitudes():
    torch.manual_seed(0)
    w = torch.randn(10, 20)
    idx = smallest_indices(w, 0.15)
    assert len(idx) == 30 and torch.equal(idx, idx.sort().values)
    chosen = torch.zeros(200, dtype=torch.bool)
    chosen[idx] = True
    assert w.abs().reshape(-1)[chosen].max() <= w.abs().reshape(-1)[~chosen].min()


def test_only_the_selected_entries_train_and_the_sparse_update_rebuilds_the_weights(lm, train):
    model, x = lm
    adapted = copy.deepcopy(model)
    adapter = apply(adapted, "sara", within="blocks", fraction=0.1, phases=1, nuclear=0.0)
    layer = adapter.layers["blocks.0.mlp.fc1"]
    assert len(layer.values) == round(0.1 * 128 * 32)
    train(adapter, x)
    merged = adapter.merge()
    updates = adapter.sparse_update()
    for name, (where, change) in updates.items():
        old = model.get_submodule(name).weight.reshape(-1)
        new = merged.get_submodule(name).weight.reshape(-1)
        outside = torch.ones_like(old, dtype=torch.bool)
        outside[where] = False
        assert torch.equal(new[outside], old[outside])
        torch.testing.assert_close(new[where], old[where] + change)


def test_progressive_reselection_folds_the_update_and_resets_optimizer_state(lm, train):
    model, x = lm
    adapter = apply(model, "sara", layers=["blocks.0.mlp.fc1"], fraction=0.2, phases=2, nuclear=0.0)
    layer = adapter.layers["blocks.0.mlp.fc1"]
    opt = train(adapter, x, steps=3)
    first_index = layer.index.clone()
    with torch.no_grad():
        before = layer.weight + layer.delta()
    adapter.step(2, 4)  # the phase boundary of 4 steps
    assert torch.equal(layer.weight, before) and not layer.values.any()
    assert torch.equal(layer.index, smallest_indices(before, 0.2))
    assert not torch.equal(layer.index, first_index)
    assert layer.values not in opt.state
    update = adapter.sparse_update()["blocks.0.mlp.fc1"]
    assert len(update[0]) >= len(first_index)


def test_nuclear_norm_penalty_matches_numpy_and_has_a_finite_gradient_at_zero(lm):
    model, _ = lm
    adapter = apply(model, "sara", within="blocks", fraction=0.1, nuclear=0.5)
    reg = adapter.regularizer()
    reg.backward()
    assert float(reg.detach()) == 0.0
    assert all(torch.isfinite(p.grad).all() for p in adapter.trainable_parameters())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.normal_()
    expected = 0.5 * sum(np.linalg.norm(m.delta().detach().numpy(), ord="nuc") for m in adapter.layers.values())
    assert float(adapter.regularizer().detach()) == pytest.approx(expected, rel=1e-4)


def test_sara_bad_input(lm):
    model, _ = lm
    with pytest.raises(SparsecraftError, match=r"--fraction must lie in \(0, 0.5\], got 0.8"):
        apply(model, "sara", fraction=0.8)
    with pytest.raises(SparsecraftError, match="selects no entry"):
        apply(copy.deepcopy(model), "sara", fraction=1e-6)
