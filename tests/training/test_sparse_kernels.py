"""Sparse-kernel training equals masked-dense training: static, SET, RigL, N:M; repacks; state on kept values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsecraft.errors import SparsecraftError
from sparsecraft.inference import SparseLinear
from sparsecraft.training import fit
from sparsecraft.training.base import SparsityConfig, make_updater
from sparsecraft.training.sparse_kernels import KernelSparsifier, summary, use_sparse_kernels

from .conftest import blobs, tiny_mlp

SIZES = (20, 33, 17, 4)


def _run(method: str, sparse_kernels: bool, pattern: str = "unstructured", sizes=SIZES, **opts):
    x, y = blobs(96, 20, 4)
    model = tiny_mlp(0, sizes)
    up = make_updater(method, SparsityConfig(0.8, pattern=pattern, allocation="uniform"), seed=3,
                      sparse_kernels=sparse_kernels, **opts)
    result = fit(model, (x, y), up, epochs=3, batch_size=16, lr=1e-2, seed=0, progress=False)
    return model, up, result


@pytest.mark.parametrize("method,opts", [("static", {}), ("snip", {}), ("set", {"update_every": 2}),
                                         ("rigl", {"update_every": 2}), ("rigl", {"update_every": 1})])
def test_equals_masked_dense_training(method, opts):
    dense_model, dense_up, dense = _run(method, False, **opts)
    model, up, sparse = _run(method, True, **opts)
    assert isinstance(up.sparsifier, KernelSparsifier)
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 3
    torch.testing.assert_close(torch.tensor(sparse.losses), torch.tensor(dense.losses), rtol=0, atol=1e-4)
    for name, mask in dense_up.masks().items():
        assert torch.equal(up.masks()[name], mask)
    for (name, a), b in zip(dense_model.state_dict().items(), up.sparsifier.dense_model().state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=name)
    updates = [e for e in up.events if e["kind"] == "drop_grow"]
    assert len(up.sparsifier.repack_seconds) == sum(
        1 for e in updates for d, g in e["per_layer"].values() if d or g)
    assert summary(up.sparsifier)["kernel_layers"] == 3


def test_nm_pattern_trains_on_the_nm_kernel():
    _, _, dense = _run("static", False, pattern="2:4", sizes=(20, 32, 16, 4))
    model, _, sparse = _run("static", True, pattern="2:4", sizes=(20, 32, 16, 4))
    formats = [m.format for m in model.modules() if isinstance(m, SparseLinear)]
    assert formats == ["nm", "nm", "nm"]
    torch.testing.assert_close(torch.tensor(sparse.losses), torch.tensor(dense.losses), rtol=0, atol=1e-4)


def test_optimizer_state_lives_on_kept_values():
    model, up, _ = _run("static", True)
    opt = up.optimizer
    for name, layer in up.sparsifier.kernel_layers().items():
        kept = int(up.masks()[name].sum())
        state = opt.state[layer.w_vals]
        assert state["exp_avg"].numel() == state["exp_avg_sq"].numel() == kept
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(int(m.sum()) for m in up.masks().values()) + sum(SIZES[1:])  # + biases


def test_rigl_dense_gradient_only_on_update_steps():
    model = tiny_mlp(0, SIZES)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    up = make_updater("rigl", SparsityConfig(0.8, allocation="uniform"), total_steps=8, update_every=2,
                      sparse_kernels=True).attach(model, opt)
    x, y = blobs(16, 20, 4)
    seen, expected = [], []
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        layers = up.sparsifier.kernel_layers().values()
        seen.append([layer.weight.grad is not None for layer in layers])
        expected.append([up.is_update(up.step + 1)] * len(layers))
        up.before_step()
        opt.step()
        up.after_step()
        for layer in layers:
            layer.weight.grad = None
    assert seen == expected and any(e[0] for e in expected) and not all(e[0] for e in expected)
    assert len(up.sparsifier.repack_seconds) > 0


def test_save_writes_plain_linear_weights(tmp_path):
    from sparsecraft.checkpoint import read_checkpoint

    model, up, _ = _run("static", True)
    up.sparsifier.save(str(tmp_path / "m.safetensors"))
    ckpt = read_checkpoint(str(tmp_path / "m.safetensors"))
    assert set(ckpt.masks) == set(up.masks())
    dense = tiny_mlp(0, SIZES)
    ckpt.load_into(dense)
    x = torch.randn(5, 20)
    with torch.no_grad():
        torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-5)


def test_errors_are_one_line():
    with pytest.raises(SparsecraftError, match=r"method 'gradflow' cannot train on the sparse kernels \(it trains"):
        make_updater("gradflow", sparse_kernels=True)
    up = make_updater("static", SparsityConfig(0.5), total_steps=3)
    with pytest.raises(SparsecraftError, match="call updater.attach"):
        use_sparse_kernels(up)
    up.attach(tiny_mlp(0, SIZES), None)
    use_sparse_kernels(up)
    with pytest.raises(SparsecraftError, match="already trains on sparse kernels"):
        use_sparse_kernels(up)


def _cnn_run(method: str, sparse_kernels: bool, dims: int = 2, **opts):
    from sparsecraft.models.resnet import ResNetCNN

    g = torch.Generator().manual_seed(1)
    shape = (48, 2, 9, 7) if dims == 2 else (48, 2, 23)
    x, y = torch.randn(*shape, generator=g), torch.randint(0, 3, (48,), generator=g)
    torch.manual_seed(0)
    model = ResNetCNN(in_channels=2, num_classes=3, channels=(8, 16), dims=dims)
    up = make_updater(method, SparsityConfig(0.8, allocation="uniform"), seed=3, sparse_kernels=sparse_kernels,
                      **opts)
    result = fit(model, (x, y), up, epochs=2, batch_size=16, lr=1e-2, seed=0, progress=False)
    return model, up, result


@pytest.mark.parametrize("method,dims,opts", [("static", 2, {}), ("static", 1, {}),
                                              ("rigl", 2, {"update_every": 2})])
def test_cnn_trains_on_conv_kernels_like_masked_dense(method, dims, opts):
    from sparsecraft.inference import SparseConv

    dense_model, dense_up, dense = _cnn_run(method, False, dims, **opts)
    model, up, sparse = _cnn_run(method, True, dims, **opts)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, SparseConv)}
    assert len(convs) == 5  # stem, 3 stride-1 3x3, the strided 1x1 shortcut
    assert up.sparsifier.masked_dense == {"blocks.1.conv1.weight": "stride (2, 2) with a 3x3 kernel"
                                          if dims == 2 else "stride (2,) with a 3 kernel"}
    assert summary(up.sparsifier)["kernel_layers"] == 6  # + the Linear head
    torch.testing.assert_close(torch.tensor(sparse.losses), torch.tensor(dense.losses), rtol=0, atol=1e-4)
    for name, mask in dense_up.masks().items():
        assert torch.equal(up.masks()[name], mask)
    for (name, a), b in zip(dense_model.state_dict().items(), up.sparsifier.dense_model().state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=name)
    if method == "rigl":
        assert len(up.sparsifier.repack_seconds) > 0
