"""Monarch: the layer equals its dense matrix, the projection is exact on Monarch and optimal per block."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.architectures import MonarchLinear, monarch_multiply, monarch_params, monarch_project, monarchize
from sparsecraft.errors import SparsecraftError
from sparsecraft.models import TinyTransformer

SHAPES = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))  # (nblocks, p, s)


def dense_of(w1, w2):
    d_in = w1.shape[0] * w1.shape[2]
    return monarch_multiply(torch.eye(d_in, dtype=w1.dtype), w1, w2).T


@settings(max_examples=30, deadline=None)
@given(SHAPES)
def test_forward_equals_dense_matrix_and_projection_is_exact_on_monarch(shape):
    b, p, s = shape
    torch.manual_seed(b * 100 + p * 10 + s)
    layer = MonarchLinear(b * p, b * s, b).double()
    x = torch.randn(3, 2, b * p, dtype=torch.float64)
    m = layer.to_dense()
    assert m.shape == (b * s, b * p)
    torch.testing.assert_close(layer(x), x @ m.T + layer.bias)
    w1, w2 = monarch_project(m, b)
    torch.testing.assert_close(dense_of(w1, w2), m, atol=1e-10, rtol=0)
    assert layer.w1.numel() + layer.w2.numel() == monarch_params(b * p, b * s, b)


@settings(max_examples=20, deadline=None)
@given(SHAPES, st.integers(0, 1000))
def test_projection_error_is_the_discarded_singular_values(shape, seed):
    b, p, s = shape
    q = min(p, s)
    w = torch.randn(b * s, b * p, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    approx = dense_of(*monarch_project(w, b))
    expected = 0.0
    for ll in range(b):
        for k in range(b):
            block = w[ll * s:(ll + 1) * s, k * p:(k + 1) * p]
            count = sum(1 for j in range(q) if (k * q + j) % b == ll)  # intermediates linking k to l
            sv = torch.linalg.svdvals(block)
            expected += float((sv[count:] ** 2).sum())
    assert abs(float((w - approx).norm() ** 2) - expected) < 1e-8


def test_projection_beats_random_perturbations_of_its_factors():
    w = torch.randn(16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w1, w2 = monarch_project(w, 4)
    best = float((w - dense_of(w1, w2)).norm())
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        d1, d2 = torch.randn(w1.shape, generator=g, dtype=torch.float64), torch.randn(w2.shape, generator=g,
                                                                                        dtype=torch.float64)
        assert float((w - dense_of(w1 + 1e-2 * d1, w2 + 1e-2 * d2)).norm()) >= best - 1e-12


def test_one_block_is_a_full_dense_matrix():
    w = torch.randn(6, 6, dtype=torch.float64)
    torch.testing.assert_close(dense_of(*monarch_project(w, 1)), w)


def test_square_layer_has_two_n_to_the_three_halves_parameters():
    layer = MonarchLinear(64, 64, 8)
    assert layer.w1.shape == (8, 8, 8) and layer.w2.shape == (8, 8, 8)
    assert monarch_params(64, 64, 8) == 2 * 64 ** 1.5


def test_from_linear_copies_bias_and_monarchize_replaces_inner_linears():
    torch.manual_seed(0)
    model = TinyTransformer(10, in_channels=1, patch_size=8, d_model=16, num_heads=2, num_layers=1, max_len=8)
    report = monarchize(model, 4)
    assert sorted(report.errors) == ["blocks.0.attn.k_proj", "blocks.0.attn.out_proj", "blocks.0.attn.q_proj",
                                     "blocks.0.attn.v_proj", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert isinstance(model.blocks[0].mlp.fc1, nn.Linear)  # the original is untouched
    fc1 = report.model.blocks[0].mlp.fc1
    assert isinstance(fc1, MonarchLinear)
    torch.testing.assert_close(fc1.bias, model.blocks[0].mlp.fc1.bias)
    assert isinstance(report.model.embed, nn.Linear) and isinstance(report.model.head, nn.Linear)
    assert report.dense_params == 4 * 16 * 16 + 2 * 16 * 64
    assert report.monarch_params == 4 * 4 * 32 + 2 * 4 * 80
    assert all(0 < e < 1 for e in report.errors.values())
    x = torch.randn(2, 1, 8, 8)
    assert report.model(x).shape == (2, 10)
    scratch = monarchize(model, 4, project=False)
    assert scratch.errors == {} and scratch.monarch_params == report.monarch_params


@pytest.mark.parametrize("call, message", [
    (lambda: MonarchLinear(10, 12, 4), "must divide both in_features 10 and out_features 12"),
    (lambda: MonarchLinear(8, 8, 0), "nblocks must be an integer >= 1"),
    (lambda: monarch_project(torch.zeros(2, 3, 4), 1), "needs a 2-D weight"),
    (lambda: monarch_project(torch.zeros(6, 9), 2), "choose a common divisor"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(SparsecraftError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
