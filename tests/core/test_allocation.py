import copy
import math

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError
from sparsecraft.allocation import LayerInfo, allocate


def test_global_magnitude_equals_torch_global_unstructured(cnn):
    ours = copy.deepcopy(cnn)
    theirs = copy.deepcopy(cnn)
    sp = sparsecraft.prune(ours, sparsity=0.83, allocation="global")
    params = [(m, "weight") for m in theirs.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.83)
    for (name, mask), (module, _) in zip(sp.masks.items(), params):
        assert torch.equal(mask, module.weight_mask.bool()), name
        assert torch.equal(sp.targets[name].param, module.weight)


def test_uniform_matches_torch_l1_unstructured_per_layer(cnn):
    ours = copy.deepcopy(cnn)
    sp = sparsecraft.prune(ours, sparsity=0.37, allocation="uniform")
    for name, mask in sp.masks.items():
        module = copy.deepcopy(sp.targets[name].module)
        del module.weight_mask
        tprune.l1_unstructured(module, "weight", amount=0.37)
        assert torch.equal(mask, module.weight_mask.bool())


def _erk_density(shape):
    return sum(shape) / math.prod(shape)


@pytest.mark.parametrize("method", ["er", "erk"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_erk_budget_exact(cnn, method, sparsity):
    sp = sparsecraft.prune(cnn, sparsity=sparsity, criterion="random", allocation=method)
    rows = sp.report()
    total, kept = rows[-1]["params"], rows[-1]["kept"]
    n_layers = len(rows) - 1
    assert abs(kept - (1 - sparsity) * total) <= n_layers
    # densities follow the ER(K) proportionality among layers that are not dense
    dims = {r["layer"]: r["shape"] if method == "erk" else r["shape"][:2] for r in rows[:-1]}
    free = [r for r in rows[:-1] if r["kept"] < r["params"]]
    eps = [(r["kept"] / r["params"]) / _erk_density(dims[r["layer"]]) for r in free]
    assert max(eps) - min(eps) < 0.02 * max(eps) + max(1 / r["params"] for r in free) * 10


def test_erk_makes_small_layers_dense_and_rescales():
    layers = {
        "tiny": LayerInfo((4, 2), torch.rand(8)),
        "big": LayerInfo((512, 512), torch.rand(512 * 512)),
    }
    counts = allocate("erk", layers, 0.5)
    assert counts["tiny"] == 0  # would exceed density 1: made dense
    kept = 8 + 512 * 512 - counts["big"]
    assert abs(kept - 0.5 * (8 + 512 * 512)) <= 1


def test_keep_dense_first_and_last(cnn):
    sp = sparsecraft.prune(cnn, sparsity=0.9, keep_dense=["first", "last"])
    assert list(sp.masks) == ["3.weight", "7.weight"]
    assert torch.count_nonzero(cnn[0].weight) == cnn[0].weight.numel()


def test_unknown_names_list_valid_ones(cnn):
    with pytest.raises(SparsecraftError, match="unknown allocation 'erx'; choose one of: er, erk, global, uniform"):
        sparsecraft.prune(cnn, 0.5, allocation="erx")
    with pytest.raises(SparsecraftError, match="unknown criterion 'size'; choose one of:.*magnitude"):
        sparsecraft.prune(cnn, 0.5, criterion="size")
    with pytest.raises(SparsecraftError, match="layer 'fc9' matches no prunable layer"):
        sparsecraft.prune(cnn, 0.5, layers=["fc9"])


@pytest.mark.parametrize("bad", [1.0, -0.1, 90, "lots", None])
def test_bad_sparsity(cnn, bad):
    with pytest.raises(SparsecraftError, match="sparsity must be"):
        sparsecraft.prune(cnn, bad)
