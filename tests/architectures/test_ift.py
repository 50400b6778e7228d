"""Sparse-IFT: iso-FLOP sizes, shapes, which layers are sparse, training through the updaters."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.architectures import (
    TRANSFORMS,
    SparseDoped,
    SparseFactorized,
    SparseParallel,
    apply_sparse_ift,
    forward_macs,
    iso_flop_layer,
    iso_flop_model,
    train_ift,
)
from sparsecraft.data import load_dataset
from sparsecraft.errors import SparsecraftError
from sparsecraft.models import MLP


def test_registry_lists_the_four_transformations():
    assert TRANSFORMS.names() == ["doped", "factorized", "parallel", "wide"]


@pytest.mark.parametrize("sparsity, branches", [(0.5, 2), (0.75, 4), (0.9, 10)])
def test_parallel_has_one_over_density_branches(sparsity, branches):
    block = iso_flop_layer(nn.Linear(6, 5), "parallel", sparsity)
    assert isinstance(block, SparseParallel)
    assert len(block.branches) == branches
    assert [b.bias is not None for b in block.branches] == [True] + [False] * (branches - 1)


def test_factorized_and_doped_sizes_follow_the_iso_flop_equations():
    layer = nn.Linear(30, 20)
    fac = iso_flop_layer(layer, "factorized", 0.75)
    assert isinstance(fac, SparseFactorized)
    assert fac.u.out_features == round(30 * 20 / (0.25 * 50)) == 48
    dop = iso_flop_layer(layer, "doped", 0.75)
    assert isinstance(dop, SparseDoped)
    assert dop.low_u.out_features == round(0.75 * 600 / 50) == 9
    conv = nn.Conv2d(4, 8, 3, padding=1)
    fac = iso_flop_layer(conv, "factorized", 0.5)
    assert fac.u.out_channels == round(9 * 4 * 8 / (0.5 * (36 + 8)))
    assert fac.u.kernel_size == (3, 3) and fac.v.kernel_size == (1, 1)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["parallel", "factorized", "doped"]), st.integers(1, 12), st.integers(1, 12),
       st.sampled_from([0.5, 0.75, 0.8, 0.9]), st.booleans())
def test_blocks_keep_shapes_and_flops(transform, d_in, d_out, sparsity, conv):
    layer = nn.Conv1d(d_in, d_out, 3, padding=1) if conv else nn.Linear(d_in, d_out)
    x = torch.randn(2, d_in, 7) if conv else torch.randn(2, d_in)
    block = iso_flop_layer(layer, transform, sparsity)
    assert block(x).shape == layer(x).shape
    # sparse parts at density 1 - s (a Sparsifier's mask buffer), low-rank parts dense
    for part in block.sparse_parts:
        sub = block.get_submodule(part)
        mask = torch.zeros(sub.weight.numel(), dtype=torch.bool)
        mask[: round((1 - sparsity) * mask.numel())] = True
        sub.register_buffer("weight_mask", mask.view(sub.weight.shape))
    dense, sparse = forward_macs(layer, x) * 2, forward_macs(block, x) * 2  # per batch of 2
    positions = 2 * (7 if conv else 1)
    k = 3 if conv else 1
    # rounding: half a unit of the size parameter, half a weight per sparse part, per output position
    unit = d_in * d_out * k * (1 - sparsity) if transform == "parallel" else k * d_in + d_out
    assert abs(sparse - dense) <= positions * (unit / 2 + len(block.sparse_parts) / 2 * (d_out if conv else 1)) + 1e-6

def test_apply_sparse_ift_replaces_interior_layers_only():
    model = MLP(8, 3, hidden=(6, 6, 6))
    out = apply_sparse_ift(model, "parallel", 0.5)
    assert isinstance(model.layers[3], nn.Linear)  # the original is left alone
    assert isinstance(out.model.layers[1], nn.Linear)  # first stays dense
    assert isinstance(out.model.layers[3], SparseParallel) and isinstance(out.model.layers[5], SparseParallel)
    assert isinstance(out.model.head, nn.Linear)
    assert out.sparse_layers == ["layers.3.branches.0", "layers.3.branches.1",
                                 "layers.5.branches.0", "layers.5.branches.1"]
    x = torch.randn(4, 8)
    assert out.model(x).shape == (4, 3)


def test_wide_model_is_iso_flop_and_paper_factor_is_not():
    data = load_dataset("digits")
    dense = iso_flop_model("mlp", data, "dense", 0.75, hidden=(32, 32, 32))
    paper = iso_flop_model("mlp", data, "wide", 0.75, exact_flops=False, hidden=(32, 32, 32))
    assert [m.out_features for m in paper.model.layers if isinstance(m, nn.Linear)] == [64, 64, 64]
    assert paper.sparse_layers == ["layers.3", "layers.5"]
    exact = iso_flop_model("mlp", data, "wide", 0.75, hidden=(32, 32, 32))
    widths = [m.out_features for m in exact.model.layers if isinstance(m, nn.Linear)]
    assert 32 < widths[0] < 64 and len(set(widths)) == 1
    x = data.test_x[:4]
    train_ift(dense, (data.train_x[:8], data.train_y[:8]), epochs=1)
    for ift in (paper, exact):
        updater = train_ift(ift, (data.train_x[:8], data.train_y[:8]), "static", epochs=1)
        masks = updater.masks()
        assert set(masks) == {"layers.3.weight", "layers.5.weight"}
        for m in masks.values():
            assert abs(1 - m.float().mean().item() - 0.75) < 1e-3
    ratio_exact = forward_macs(exact.model, x) / forward_macs(dense.model, x)
    ratio_paper = forward_macs(paper.model, x) / forward_macs(dense.model, x)
    assert abs(ratio_exact - 1) < 0.03
    assert ratio_paper > 1.2  # the dense first layer doubled


def test_rigl_trains_the_sparse_parts_at_constant_sparsity():
    data = load_dataset("digits")
    ift = iso_flop_model("mlp", data, "doped", 0.8, hidden=(16, 16))
    small = (data.train_x[:64], data.train_y[:64])
    updater = train_ift(ift, small, "rigl", epochs=2, batch_size=16, update_every=2)
    assert set(updater.masks()) == {"layers.3.sparse.weight"}
    w = ift.model.layers[3].sparse.weight
    assert int((w != 0).sum()) == round(0.2 * w.numel())
    assert any(e["kind"] == "drop_grow" for e in updater.events)
    assert bool((ift.model.layers[3].low_u.weight != 0).all())  # the low-rank path stays dense


@pytest.mark.parametrize("call, message", [
    (lambda: iso_flop_layer(nn.Linear(3, 3), "wide", 0.5), "no drop-in"),
    (lambda: iso_flop_layer(nn.Linear(3, 3), "deep", 0.5), "unknown Sparse-IFT transformation 'deep'"),
    (lambda: iso_flop_layer(nn.Linear(3, 3), "parallel", 0.0), "sparsity in (0, 1)"),
    (lambda: iso_flop_layer(nn.Linear(3, 3), "parallel", 75), "fraction in [0, 1)"),
    (lambda: iso_flop_layer(nn.ReLU(), "doped", 0.5), "replaces a Linear or Conv layer"),
    (lambda: iso_flop_layer(nn.Conv2d(4, 4, 3, groups=2), "doped", 0.5), "ungrouped"),
    (lambda: apply_sparse_ift(MLP(3, 2), "wide", 0.5), "iso_flop_model"),
    (lambda: iso_flop_model("transformer", load_dataset("digits"), "wide", 0.5), "built for mlp, cnn"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(SparsecraftError, match=None) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cnn_wide_keeps_stem_and_head_dense_and_runs():
    data = load_dataset("digits")
    ift = iso_flop_model("cnn", data, "wide", 0.5, channels=(4, 8))
    assert ift.sparse_layers[0].startswith("blocks.0") and "stem.0" not in ift.sparse_layers
    assert "head" not in ift.sparse_layers
    assert ift.model(data.test_x[:2]).shape == (2, 10)
    assert math.isclose(TRANSFORMS.get("wide").width_factor(0.75), 2.0)
