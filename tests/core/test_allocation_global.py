"""Global allocation with groups of different sizes (channels/heads of layers with different fan-in)."""
import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft.allocation import LayerInfo, allocate


def _layers() -> dict[str, LayerInfo]:
    # a: 2 rows of 100 weights with mean scores 1 and 3; b: 2 rows of 10 weights with means 2 and 4
    return {"a": LayerInfo((2, 100), torch.tensor([100.0, 300.0])),
            "b": LayerInfo((2, 10), torch.tensor([20.0, 40.0]))}


@pytest.mark.parametrize("sparsity,counts", [
    (0.5, {"a": 1, "b": 1}),    # budget 110 weights: a0 (mean 1) then b0 (mean 2) -> exactly 110
    (0.3, {"a": 1, "b": 0}),    # budget 66: dropping a0 (100) is closer than dropping nothing
    (0.05, {"a": 0, "b": 0}),   # budget 11: nothing is closer than a0's 100
    (0.95, {"a": 2, "b": 1}),   # budget 209: a0, b0, a1 = 210
])
def test_ranks_by_mean_score_and_budgets_weights(sparsity, counts):
    assert allocate("global", _layers(), sparsity) == counts


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_channel_global_hits_weight_sparsity(sparsity):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32 * 4 * 4, 24), nn.ReLU(), nn.Linear(24, 10))
    sp = sparsecraft.prune(model, sparsity=sparsity, pattern="channel", allocation="global")
    rows = sp.report()
    largest_row = max(r["params"] // r["shape"][0] for r in rows[:-1])
    assert abs(rows[-1]["params"] * sparsity - (rows[-1]["params"] - rows[-1]["kept"])) <= largest_row / 2
    for name, mask in sp.masks.items():
        per_row = mask.reshape(mask.shape[0], -1)
        assert bool((per_row.all(1) | ~per_row.any(1)).all()), name


def test_unknown_allocation_rejected_even_for_nm():
    model = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(sparsecraft.SparsecraftError, match="unknown allocation 'bogus'; choose one of: er, erk"):
        sparsecraft.prune(model, pattern="2:4", allocation="bogus")
    assert not hasattr(model[0], "weight_mask")
