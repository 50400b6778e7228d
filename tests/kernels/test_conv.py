"""SparseConv equals the dense convolution on every ISA path; convert handles Conv1d/Conv2d and a ResNet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsecraft
from sparsecraft.errors import SparsecraftError
from sparsecraft.formats import pack
from sparsecraft.inference import SparseConv, convert, load_converted, save_converted
from sparsecraft.inference.conv import conv_format
from sparsecraft.models.resnet import ResNetCNN
from sparsecraft.patterns import get_pattern

from .conftest import magnitude_prune, require_native

CASES = [  # (dims, in, out, kernel, stride, padding, spatial)
    (2, 13, 7, 1, 1, 0, (9, 11)),
    (2, 8, 20, 1, 2, 0, (10, 7)),
    (2, 5, 6, 3, 1, 1, (7, 9)),
    (2, 4, 3, 3, 1, 0, (6, 5)),
    (2, 3, 5, (5, 3), 1, (2, 0), (8, 33)),
    (1, 6, 9, 3, 1, 1, (37,)),
    (1, 7, 4, 1, 3, 0, (20,)),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_sparse_conv_equals_dense(isa, case, bias):
    dims, cin, cout, k, stride, pad, spatial = case
    torch.manual_seed(sum(spatial) + cin)
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(cin, cout, k, stride=stride, padding=pad, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(magnitude_prune(conv.weight, 0.8))
    x = torch.randn(3, cin, *spatial)
    layer = SparseConv.from_conv(conv)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(layer.dense_weight(), conv.weight.detach())


def test_unsupported_convs_are_refused():
    with pytest.raises(SparsecraftError, match=r"stride \(2, 2\) with a 3x3 kernel\); keep it dense"):
        SparseConv.from_conv(nn.Conv2d(3, 4, 3, stride=2))
    with pytest.raises(SparsecraftError, match="groups=3"):
        SparseConv.from_conv(nn.Conv2d(3, 3, 1, groups=3))
    layer = SparseConv.from_conv(nn.Conv2d(3, 4, 3))
    with pytest.raises(SparsecraftError, match=r"input must be \(N, 3, H, W\)"):
        layer(torch.randn(1, 2, 5, 5))
    with pytest.raises(SparsecraftError, match="smaller than the kernel"):
        layer(torch.randn(1, 3, 2, 2))


def _masked_resnet(dims: int) -> nn.Module:
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16), dims=dims).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.copy_(magnitude_prune(m.weight, 0.9))
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("dims,shape", [(2, (4, 2, 12, 10)), (1, (4, 2, 30))])
def test_convert_resnet_equals_masked_dense_model(dims, shape):
    require_native()
    model = _masked_resnet(dims)
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = model(x)
    converted, report = convert(model, mode="sparse")
    kinds = {r.name: r.format for r in report}
    assert sum(isinstance(m, SparseConv) for m in converted.modules()) == sum(f == "csr16" for f in kinds.values()) - 1
    assert kinds["blocks.1.conv1"] == "dense"  # 3x3 stride 2 stays dense, with its reason
    assert "stride" in next(r.note for r in report if r.name == "blocks.1.conv1")
    assert kinds["blocks.1.shortcut.0"] == "csr16" and kinds["stem.0"] == "csr16"
    with torch.no_grad():
        torch.testing.assert_close(converted(x), ref, rtol=1e-4, atol=1e-5)


def test_converted_cnn_saves_and_loads(tmp_path):
    require_native()
    model = _masked_resnet(2)
    converted, _ = convert(model, mode="sparse")
    save_converted(converted, tmp_path / "cnn.safetensors")
    fresh = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16), dims=2).eval()
    loaded = load_converted(tmp_path / "cnn.safetensors", fresh)
    assert sum(isinstance(m, SparseConv) for m in loaded.modules()) == sum(
        isinstance(m, SparseConv) for m in converted.modules())
    x = torch.randn(2, 2, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), converted(x))


BLOCK_CASES = [  # (dims, in, out, kernel, padding, spatial): out a multiple of 8, odd everything else
    (2, 5, 16, 3, 1, (7, 9)),
    (2, 3, 8, (5, 3), (2, 0), (8, 37)),
    (2, 7, 24, 1, 0, (5, 13)),
    (2, 4, 16, 3, 0, (6, 5)),
    (1, 6, 16, 3, 1, (41,)),
    (2, 64, 64, 3, 1, (5, 7)),  # > 1228 blocks: the kernel sweeps the block rows in L1-sized chunks
]


def _kernel_group_conv(dims: int, cin: int, cout: int, k, pad, r: int, sparsity: float, bias: bool) -> nn.Module:
    """A conv whose zeros form the blockRx1 (SparseByteNN kernel-group) pattern of its (out, in * kernel) view."""
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(cin, cout, k, padding=pad, bias=bias)
    mask = get_pattern(f"block{r}x1").mask_for_sparsity(conv.weight.detach().abs(), sparsity)
    with torch.no_grad():
        conv.weight.mul_(mask.view_as(conv.weight))
    return conv


@pytest.mark.parametrize("case", BLOCK_CASES)
@pytest.mark.parametrize("r", [8, 4])
def test_block_conv_equals_dense(isa, case, r):
    dims, cin, cout, k, pad, spatial = case
    torch.manual_seed(cin * r + sum(spatial))
    conv = _kernel_group_conv(dims, cin, cout, k, pad, r, 0.75, bias=r == 8)
    layer = SparseConv.from_conv(conv)
    nz = conv.weight.detach().reshape(cout, -1) != 0
    groups8 = int(nz.view(cout // 8, 8, -1).any(1).sum()) * 8 == int(nz.sum())  # 4-groups may pair up by chance
    assert (layer.packed.format, layer.R) == ("block", 8 if groups8 else r)
    x = torch.randn(3, cin, *spatial)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(layer.dense_weight(), conv.weight.detach())


@pytest.mark.parametrize("r", [8, 4])
def test_block_conv_partial_last_block_row(isa, r):
    """Out channels not a multiple of R (packed explicitly): the last block row writes only its real outputs."""
    torch.manual_seed(r)
    conv = nn.Conv2d(6, 13, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(magnitude_prune(conv.weight, 0.6))
    flat = conv.weight.detach().reshape(13, -1)
    layer = SparseConv(pack(flat, "block", R=r, C=1), (3, 3), (1, 1), (1, 1), conv.bias)
    x = torch.randn(2, 6, 11, 19)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_conv_format_follows_the_pattern():
    torch.manual_seed(0)
    for r, sparsity in ((8, 0.8), (4, 0.9)):
        w = _kernel_group_conv(2, 16, 64, 3, 1, r, sparsity, False).weight.detach().reshape(64, -1)
        groups8 = (w != 0).view(8, 8, -1).any(1).sum() * 8 == (w != 0).sum()
        assert conv_format(w) == ("block", {"R": 8 if groups8 else r, "C": 1})
    w = _kernel_group_conv(2, 16, 64, 3, 1, 4, 0.9, False).weight.detach().reshape(64, -1)
    assert conv_format(w) == ("block", {"R": 4, "C": 1})  # 4-groups kept independently do not pair up into 8s
    assert conv_format(magnitude_prune(torch.randn(64, 144), 0.9)) == ("csr16", {})
    assert conv_format(torch.zeros(8, 9)) == ("csr16", {})
    conv = _kernel_group_conv(2, 3, 8, 3, 1, 8, 0.5, False)
    assert SparseConv.from_conv(conv, format="csr16").R == 1
    with pytest.raises(SparsecraftError, match="convolution format must be 'auto' or 'csr16', got 'nm'"):
        SparseConv.from_conv(conv, format="nm")
    with pytest.raises(SparsecraftError, match=r"SparseConv runs csr16 or R x 1 blocks \(R in \(8, 4\)\), got 'block'"):
        SparseConv(pack(conv.weight.detach().reshape(8, -1), "block", R=2, C=1), (3, 3), (1, 1), (1, 1))


def _block4x1_resnet() -> nn.Module:
    torch.manual_seed(1)
    model = ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16), dims=2).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    sparsecraft.prune(model, sparsity=0.8, pattern="block4x1", allocation="uniform", keep_dense=["head"])
    return model


def test_convert_block4x1_resnet_equals_masked_dense_model(tmp_path):
    require_native()
    model = _block4x1_resnet()
    x = torch.randn(3, 2, 11, 13)
    with torch.no_grad():
        ref = model(x)
    converted, report = convert(model, mode="sparse")
    rows = {r.name: r for r in report}
    for name in ("stem.0", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv2", "blocks.1.shortcut.0"):
        layer = converted.get_submodule(name)
        assert isinstance(layer, SparseConv) and rows[name].format == "block", name
        assert rows[name].params == {"R": layer.R, "C": 1} and layer.R in (4, 8)
        assert rows[name].note == f"block{layer.R}x1 kernel groups: direct block kernel"
    assert rows["blocks.1.conv1"].format == "dense"  # 3x3 stride 2
    with torch.no_grad():
        torch.testing.assert_close(converted(x), ref, rtol=1e-5, atol=1e-5)
    save_converted(converted, tmp_path / "cnn.safetensors")
    loaded = load_converted(tmp_path / "cnn.safetensors", ResNetCNN(in_channels=2, num_classes=5, channels=(8, 16),
                                                                    dims=2).eval())
    assert {n: m.R for n, m in loaded.named_modules() if isinstance(m, SparseConv)} == {
        n: m.R for n, m in converted.named_modules() if isinstance(m, SparseConv)}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-5)
