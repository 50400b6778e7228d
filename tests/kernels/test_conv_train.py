"""Trainable SparseConv: output and gradients equal the masked dense convolution on every ISA path;
repacking; the dense gradient on request; what stays masked-dense says why."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.inference import SparseConv
from sparsecraft.inference.conv import conv_train_unsupported

from .conftest import require_native

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOL = dict(rtol=1e-5, atol=1e-5)

CASES = [  # (dims, in, out, kernel, stride, padding, spatial)
    (2, 13, 7, 1, 1, 0, (9, 11)),
    (2, 8, 20, 1, 2, 0, (10, 7)),
    (2, 5, 6, 3, 1, 1, (7, 9)),
    (2, 4, 3, 3, 1, 0, (6, 5)),
    (2, 3, 5, (5, 3), 1, (2, 0), (8, 13)),
    (1, 6, 9, 3, 1, 1, (37,)),
    (1, 7, 4, 1, 3, 0, (20,)),
]


def _conv(dims: int, cin: int, cout: int, k, stride, pad, bias: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return (nn.Conv2d if dims == 2 else nn.Conv1d)(cin, cout, k, stride=stride, padding=pad, bias=bias)


def _mask(shape: tuple[int, ...], density: float, seed: int, rows: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if rows == 1:
        return torch.rand(shape, generator=g) < density
    keep = torch.rand(shape[0] // rows, 1, *shape[1:], generator=g) < density
    return keep.expand(-1, rows, *shape[1:]).reshape(shape)


def _check(conv: nn.Module, mask: torch.Tensor, batch: int, spatial: tuple[int, ...], seed: int) -> SparseConv:
    g = torch.Generator().manual_seed(seed + 1)
    wd = (conv.weight.detach() * mask).requires_grad_()
    bd = None if conv.bias is None else conv.bias.detach().clone().requires_grad_()
    layer = SparseConv.trainable(conv, mask)
    x = torch.randn(batch, conv.in_channels, *spatial, generator=g, requires_grad=True)
    xd = x.detach().clone().requires_grad_()
    fn = F.conv2d if wd.dim() == 4 else F.conv1d
    ref = fn(xd, wd, bd, conv.stride, conv.padding)
    y = layer(x)
    dy = torch.randn(ref.shape, generator=g)
    y.backward(dy)
    ref.backward(dy)
    torch.testing.assert_close(y.detach(), ref.detach(), **TOL)
    torch.testing.assert_close(x.grad, xd.grad, **TOL)
    assert layer.w_vals.grad.numel() == layer.packed.stored_values == int(mask.sum())
    dw = layer.grad_layout().dense(layer.w_vals.grad).view_as(wd)
    torch.testing.assert_close(dw, wd.grad * mask, **TOL)
    if bd is not None:
        torch.testing.assert_close(conv.bias.grad, bd.grad, **TOL)
    return layer


@pytest.mark.parametrize("case", CASES)
def test_grads_equal_masked_dense_conv(isa, case):
    dims, cin, cout, k, stride, pad, spatial = case
    conv = _conv(dims, cin, cout, k, stride, pad, True, cin + cout)
    layer = _check(conv, _mask(tuple(conv.weight.shape), 0.2, cin), 3, spatial, cin)
    assert not layer.grad_layout().dense_backward  # the kernels ran, not the dense fallback


@SETTINGS
@given(cin=st.sampled_from([1, 3, 10]), cout=st.sampled_from([1, 5, 16]), k=st.sampled_from([1, 2, 3]),
       pad=st.integers(0, 2), batch=st.sampled_from([1, 2, 5]), h=st.integers(3, 9), w=st.integers(3, 17),
       density=st.sampled_from([0.0, 0.1, 0.25, 0.6]), bias=st.booleans(), seed=st.integers(0, 500))
def test_random_shapes_and_densities(isa, cin, cout, k, pad, batch, h, w, density, bias, seed):
    pad = 0 if k == 1 else min(pad, k - 1)
    conv = _conv(2, cin, cout, k, 1, pad, bias, seed)
    _check(conv, _mask(tuple(conv.weight.shape), density, seed), batch, (h, w), seed)


@pytest.mark.parametrize("rows", [4, 8])
def test_kernel_group_blocks_train_on_the_block_kernel(isa, rows):
    conv = _conv(2, 6, 16, 3, 1, 1, False, rows)
    layer = _check(conv, _mask(tuple(conv.weight.shape), 0.25, rows, rows), 2, (7, 6), rows)
    assert layer.R == rows


def test_dense_grad_only_when_asked():
    require_native()
    conv = _conv(2, 4, 6, 3, 1, 1, False, 0)
    mask = _mask(tuple(conv.weight.shape), 0.2, 0)
    layer = SparseConv.trainable(conv, mask)
    x = torch.randn(2, 4, 5, 5)
    layer(x).sum().backward()
    assert layer.weight.grad is None
    layer.dense_grad = True
    layer(x).sum().backward()
    xd = x.clone()
    wd = (conv.weight.detach() * mask).requires_grad_()
    F.conv2d(xd, wd, None, 1, 1).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wd.grad, **TOL)  # every position, kept or not
    assert (layer.weight.grad[~mask] != 0).any()


def test_dense_fallback_above_the_density_threshold_also_gives_dense_grad():
    conv = _conv(1, 3, 4, 3, 1, 1, True, 1)
    mask = _mask(tuple(conv.weight.shape), 0.9, 1)
    layer = _check(conv, mask, 2, (11,), 1)
    assert layer.grad_layout().dense_backward
    layer.dense_grad = True
    layer(torch.randn(2, 3, 11)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.shape == conv.weight.shape


def test_repack_keeps_shared_values_and_optimizer_state():
    conv = _conv(2, 3, 8, 3, 1, 1, False, 2)
    old = _mask(tuple(conv.weight.shape), 0.3, 2)
    layer = SparseConv.trainable(conv, old)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(torch.randn(2, 3, 6, 6)).sum().backward()
    opt.step()
    before = layer.weight.clone()
    avg = layer.grad_layout().dense(opt.state[layer.w_vals]["exp_avg"]).view_as(before)
    new = old.clone()
    new[0] = ~new[0]
    layer.repack(new, [opt])
    assert torch.equal(layer.weight, before * new)
    state = opt.state[layer.w_vals]["exp_avg"]
    assert torch.equal(layer.grad_layout().dense(state).view_as(before), avg * (new & old))
    x = torch.randn(1, 3, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.conv2d(x, before * new, None, 1, 1), **TOL)
    dense = layer.dense_module()
    assert type(dense) is nn.Conv2d and torch.equal(dense.weight.detach(), before * new)


def test_unsupported_convs_say_why():
    assert conv_train_unsupported(nn.Conv2d(3, 4, 3, stride=2)) == "stride (2, 2) with a 3x3 kernel"
    assert conv_train_unsupported(nn.Conv2d(3, 4, 3, padding=3)) == "padding (3, 3) wider than kernel - 1"
    assert conv_train_unsupported(nn.Conv2d(3, 4, 3, padding=2)) is None
    with pytest.raises(SparsecraftError, match=r"groups=3\); keep it masked-dense"):
        SparseConv.trainable(nn.Conv2d(3, 3, 1, groups=3), torch.ones(3, 1, 1, 1, dtype=torch.bool))
    with pytest.raises(SparsecraftError, match="does not match weight"):
        SparseConv.trainable(nn.Conv2d(3, 4, 1), torch.ones(4, 3, dtype=torch.bool))
    inference = SparseConv.from_conv(nn.Conv2d(3, 4, 1))
    with pytest.raises(SparsecraftError, match="needs a trainable SparseConv"):
        inference.repack(torch.ones(4, 3, 1, 1, dtype=torch.bool))


def test_weight_bytes_counts_conv_weights_converted_and_trained():
    from sparsecraft.inference import convert, weight_bytes
    from sparsecraft.models.resnet import ResNetCNN
    from sparsecraft.training import SparsityConfig, make_updater

    from .conftest import magnitude_prune

    torch.manual_seed(0)
    model = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16))
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    dense_bytes = 4 * sum(w.numel() for w in weights)
    assert weight_bytes(model) == (dense_bytes, dense_bytes)
    with torch.no_grad():
        for w in weights:
            w.copy_(magnitude_prune(w, 0.9))
    converted, report = convert(model.eval(), mode="sparse")
    stored, dense = weight_bytes(converted)
    assert dense == dense_bytes and stored == sum(r.nbytes for r in report)
    packed = [r for r in report if r.format == "csr16"]
    assert [r.name for r in packed] == ["stem.0", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv2",
                                        "blocks.1.shortcut.0", "head"]
    assert all(r.nbytes == 6 * round((1 - r.sparsity) * r.shape[0] * r.shape[1]) + 4 * (r.shape[0] + 1)
               for r in packed)

    torch.manual_seed(0)
    trained = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16))
    up = make_updater("static", SparsityConfig(0.9, allocation="uniform"), total_steps=2, sparse_kernels=True)
    up.attach(trained, torch.optim.SGD(trained.parameters(), lr=0.1))
    stored, dense = weight_bytes(trained)
    kept = {n: int(m.sum()) for n, m in up.masks().items()}
    layers = up.sparsifier.kernel_layers()
    left = 4 * sum(up.sparsifier.targets[n].param.numel() for n in up.sparsifier.masked_dense)
    assert dense == dense_bytes
    assert stored == left + sum(6 * kept[n] + 4 * (layer.packed.shape[0] + 1) for n, layer in layers.items())


class _Rule(__import__("sparsecraft.inference.dispatch", fromlist=["Dispatcher"]).Dispatcher):
    """Chooses by a fixed rule instead of a measurement: the kernel only for 1x1 convs."""

    def choose_conv(self, layer, x):
        self.calls = getattr(self, "calls", 0) + 1
        return "sparse" if layer.kernel_size in ((1, 1), (1,)) else "dense"


def test_convert_with_a_sample_keeps_convs_dense_where_the_kernel_loses():
    from sparsecraft.inference import convert
    from sparsecraft.models.resnet import ResNetCNN

    from .conftest import magnitude_prune

    require_native()
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(magnitude_prune(m.weight, 0.9))
    x = torch.randn(3, 2, 10, 9)
    with torch.no_grad():
        ref = model(x)
    rule = _Rule()
    converted, report = convert(model, sample=x, dispatcher=rule)
    rows = {r.name: r for r in report}
    assert isinstance(converted.get_submodule("blocks.1.shortcut.0"), SparseConv)
    assert "auto: kernel or dense conv" in rows["blocks.1.shortcut.0"].note
    for name in ("stem.0", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv2"):
        assert type(converted.get_submodule(name)) is nn.Conv2d and rows[name].format == "dense"
        assert rows[name].note.startswith("kept dense: the sparse kernel measured slower than torch's conv")
        assert rows[name].note.endswith(")") and "on input (3, " in rows[name].note
        assert rows[name].nbytes == rows[name].dense_nbytes
    assert rule.calls == 5
    with torch.no_grad():
        torch.testing.assert_close(converted(x), ref, rtol=1e-5, atol=1e-5)


def test_conv_dispatch_measures_once_per_shape_and_picks_the_faster():
    from sparsecraft.inference import Dispatcher

    require_native()
    conv = _conv(2, 8, 8, 3, 1, 1, True, 0)
    with torch.no_grad():
        conv.weight.mul_(_mask(tuple(conv.weight.shape), 0.1, 0))
    d = Dispatcher()
    layer = SparseConv.from_conv(conv, mode="auto", dispatcher=d)
    x = torch.randn(2, 8, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), **TOL)
        layer(x[:1])
        layer(torch.randn(2, 8, 5, 5))
    assert sorted(layer.choices) == [(1, 6, 7), (2, 5, 5), (2, 6, 7)] and len(d.table) == 3
    for row in d.table.values():
        assert row["choice"] == ("sparse" if row["sparse_s"] < (1 - d.margin) * row["dense_s"] else "dense")
    with pytest.raises(SparsecraftError, match="mode must be one of auto, sparse, dense"):
        SparseConv.from_conv(conv, mode="fast")


def test_weight_grad_over_several_pixel_chunks(isa, monkeypatch):
    from sparsecraft.inference import conv_grad

    monkeypatch.setattr(conv_grad, "SDDMM_CHUNK_FLOATS", 1)  # 256-pixel chunks: this input spans 3 of them
    conv = _conv(2, 5, 6, 3, 1, 1, True, 4)
    mask = _mask(tuple(conv.weight.shape), 0.2, 4)
    layer = _check(conv, mask, 4, (9, 11), 4)
    layer.dense_grad = True
    x = torch.randn(4, 5, 9, 11)
    layer(x).sum().backward()
    wd = (conv.weight.detach() * mask).requires_grad_()
    F.conv2d(x, wd, None, 1, 1).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wd.grad, **TOL)
