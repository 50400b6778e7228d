"""SparseConv equals the dense convolution on every ISA path; convert handles Conv1d/Conv2d and a ResNet."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.inference import SparseConv, convert, load_converted, save_converted
from sparsecraft.models.resnet import ResNetCNN

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
