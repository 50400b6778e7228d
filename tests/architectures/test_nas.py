"""DASS and random search: sparse operations, the supernet's objective terms, search and pruning end to end."""
import random

import pytest
import torch
from torch import nn

from sparsecraft.architectures import (
    DENSE_SPACE,
    Architecture,
    CellNet,
    SearchSpace,
    SparseConv2d,
    SparseLinear,
    SuperNet,
    differentiable_search,
    random_search,
    sample_architecture,
    train_pruned,
)
from sparsecraft.architectures.nas import prunable_layers
from sparsecraft.errors import SparsecraftError

TINY = dict(channels=4, cells=1, nodes=2, hidden=8, sparsity=0.75)


def images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 1, 4, 4, generator=g) + y.view(-1, 1, 1, 1) * 0.3
    return x, y


def test_sparse_linear_uses_exactly_the_largest_weights_and_passes_gradients_through():
    torch.manual_seed(0)
    layer = SparseLinear(10, 6, sparsity=0.75)
    x = torch.randn(3, 10)
    w = layer.weight.detach()
    keep = w.abs() > w.abs().flatten().kthvalue(45).values
    assert int(keep.sum()) == 15
    torch.testing.assert_close(layer(x), x @ (w * keep).T + layer.bias)
    layer(x).sum().backward()
    assert bool((layer.weight.grad[~keep] != 0).any())  # straight-through: pruned weights get gradient


def test_sparse_conv_equals_a_conv_with_the_masked_weight():
    torch.manual_seed(1)
    conv = SparseConv2d(3, 4, 3, padding=1, bias=False, sparsity=0.5)
    x = torch.randn(2, 3, 5, 5)
    w = conv.weight.detach()
    keep = w.abs() > w.abs().flatten().kthvalue(54).values
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, w * keep, padding=1))


def test_expected_density_of_all_sparse_and_all_dense_choices():
    space = SearchSpace(operations=("conv_3", "sparse_conv_3"), fc_choices=("linear", "sparse_linear"), **TINY)
    net = SuperNet(space)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[..., 1] = 50.0      # all sparse
        net.alpha_fc.copy_(torch.tensor([0.0, 50.0]))
    assert abs(float(net.expected_density().detach()) - 0.25) < 1e-6
    with torch.no_grad():
        net.alpha[..., 1] = -50.0     # all dense
        net.alpha_fc.copy_(torch.tensor([50.0, 0.0]))
    assert abs(float(net.expected_density().detach()) - 1.0) < 1e-6
    assert net.derive() == Architecture((("conv_3",) * 3,), "linear")


def test_supernet_and_cellnet_shapes_and_derive_skips_none():
    space = SearchSpace(**TINY)
    net = SuperNet(space)
    x, _ = images(5)
    assert net(x).shape == (5, 10)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[..., 0] = 10.0      # "none" strongest everywhere: derive takes the next best
        net.alpha[..., 4] = 5.0       # conv_3
    assert net.derive().edges == (("conv_3", "conv_3", "conv_3"),)
    arch = Architecture((("skip", "sparse_conv_3", "none"),), "sparse_linear")
    cell = CellNet(space, arch)
    assert cell(x).shape == (5, 10)
    assert not any(isinstance(m, (SparseConv2d, SparseLinear)) for m in cell.modules())  # plain layers
    assert prunable_layers(cell) == ["cells.0.edges.1.1", "fc"]


def test_train_pruned_reaches_the_target_sparsity_exactly():
    space = SearchSpace(**TINY)
    net = CellNet(space, Architecture((("conv_3", "conv_5", "avg_pool_3"),), "linear"))
    train_pruned(net, images(), 0.75, epochs=2, batch_size=16)
    weights = [net.get_submodule(n).weight for n in prunable_layers(net)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.75 * total)
    assert bool((net.stem[0].weight != 0).all()) and bool((net.head.weight != 0).all())


def test_searches_run_and_respect_the_space_and_budget():
    x, y = images(64)
    train, val = (x[:48], y[:48]), (x[48:], y[48:])
    dass = differentiable_search(SearchSpace(**TINY), train, val, epochs=2, sparsity_weight=10.0, batch_size=16)
    assert len(dass.history) == 2 and dass.budget_macs > 0
    assert all(op != "none" for op in dass.architecture.edges[0])
    darts = differentiable_search(SearchSpace(operations=DENSE_SPACE, **TINY), train, val, epochs=1,
                                  sparsity_weight=0.0, batch_size=16)
    assert all(op in DENSE_SPACE for op in darts.architecture.edges[0])
    rs = random_search(SearchSpace(**TINY), train, val, budget_macs=dass.budget_macs, candidates=3, batch_size=16)
    assert len(rs.history) == 3
    best = max(rs.history, key=lambda h: h["val_acc"])
    assert str(rs.architecture) == best["architecture"]


def test_sample_architecture_is_seeded():
    space = SearchSpace(**TINY)
    a = sample_architecture(space, random.Random(3))
    assert a == sample_architecture(space, random.Random(3))
    assert len(a.edges) == 1 and len(a.edges[0]) == 3


@pytest.mark.parametrize("call, message", [
    (lambda: SearchSpace(operations=("conv_7",)), "unknown search operation 'conv_7'"),
    (lambda: SearchSpace(fc_choices=("mlp",)), "unknown fc choice 'mlp'"),
    (lambda: SearchSpace(sparsity=1.5), "fraction in [0, 1)"),
    (lambda: SearchSpace(nodes=0), "nodes must be an integer >= 1"),
    (lambda: CellNet(SearchSpace(**TINY), Architecture((("skip",),), "linear")), "1 cells of 3 edges"),
    (lambda: CellNet(SearchSpace(operations=DENSE_SPACE, **TINY), Architecture((("sparse_conv_3",) * 3,), "linear")),
     "not in the search space"),
    (lambda: differentiable_search(SearchSpace(**TINY), images(), images(), sparsity_weight=-1.0),
     "sparsity_weight must be"),
    (lambda: random_search(SearchSpace(**TINY), images(), images(), budget_macs=0.0), "budget_macs must be > 0"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(SparsecraftError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
