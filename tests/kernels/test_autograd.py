"""Trainable SparseLinear: gradients equal the masked dense layer's on every ISA path; SDDMM; repacking."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.formats.grad import GradLayout, pack_mask
from sparsecraft.inference import SparseLinear

from .conftest import require_native

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _mask(fmt: str, out: int, inp: int, density: float, g: torch.Generator) -> torch.Tensor:
    if fmt == "nm":  # exactly 2 of every 4
        keep = torch.rand(out, inp // 4, 4, generator=g).topk(2, -1).indices
        return torch.zeros(out, inp // 4, 4, dtype=torch.bool).scatter(-1, keep, True).view(out, inp)
    if fmt == "block":  # whole 4x1 blocks
        return (torch.rand(out // 4, 1, inp, generator=g) < density).expand(-1, 4, -1).reshape(out, inp)
    return torch.rand(out, inp, generator=g) < density


PARAMS = {"csr16": {}, "bitmask": {}, "nm": {"N": 2, "M": 4}, "block": {"R": 4, "C": 1}}


def _check_grads(fmt: str, out: int, inp: int, batch: int, density: float, bias: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    mask = _mask(fmt, out, inp, density, g)
    b = torch.nn.Parameter(torch.randn(out, generator=g)) if bias else None
    layer = SparseLinear.trainable(w, mask, b, fmt, **PARAMS[fmt])
    x = torch.randn(batch, inp, generator=g, requires_grad=True)
    dy = torch.randn(batch, out, generator=g)
    layer(x).backward(dy)

    wd = (w * mask).requires_grad_()
    bd = None if b is None else b.detach().clone().requires_grad_()
    xd = x.detach().clone().requires_grad_()
    y_ref = F.linear(xd, wd, bd)
    y_ref.backward(dy)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x.detach()), y_ref.detach(), **tol)
    torch.testing.assert_close(x.grad, xd.grad, **tol)
    dw = layer.grad_layout().dense(layer.w_vals.grad)
    torch.testing.assert_close(dw, wd.grad * mask, **tol)
    assert layer.w_vals.grad.numel() == int(mask.sum())  # the gradient exists at kept positions only
    if b is not None:
        torch.testing.assert_close(b.grad, bd.grad, **tol)


@SETTINGS
@given(out=st.sampled_from([1, 5, 17, 33]), inp=st.sampled_from([1, 7, 19, 50]),
       batch=st.sampled_from([1, 3, 5, 17, 70]), density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       bias=st.booleans(), fmt=st.sampled_from(["csr16", "bitmask"]), seed=st.integers(0, 1000))
def test_unstructured_grads_equal_masked_dense(isa, out, inp, batch, density, bias, fmt, seed):
    _check_grads(fmt, out, inp, batch, density, bias, seed)


@pytest.mark.parametrize("fmt,out,inp", [("nm", 13, 36), ("block", 12, 29)])
@pytest.mark.parametrize("batch", [1, 4, 33])
def test_structured_grads_equal_masked_dense(isa, fmt, out, inp, batch):
    _check_grads(fmt, out, inp, batch, 0.3, True, seed=batch)


def test_3d_input_residual_and_gelu_train(isa):
    g = torch.Generator().manual_seed(0)
    w, mask = torch.randn(9, 11, generator=g), torch.rand(9, 11, generator=g) < 0.3
    layer = SparseLinear.trainable(w, mask, torch.nn.Parameter(torch.zeros(9)))
    x = torch.randn(2, 5, 11, generator=g, requires_grad=True)
    res = torch.randn(2, 5, 9, generator=g)
    layer(x, residual=res, gelu=True).sum().backward()
    xd = x.detach().clone().requires_grad_()
    wd = (w * mask).requires_grad_()
    F.gelu(F.linear(xd, wd) + res).sum().backward()
    torch.testing.assert_close(x.grad, xd.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.grad_layout().dense(layer.w_vals.grad), wd.grad * mask, rtol=1e-5, atol=1e-5)


def test_sddmm_op_equals_dense_product_at_positions(isa):
    g = torch.Generator().manual_seed(1)
    for batch in (1, 7, 16, 33):
        dy, x = torch.randn(batch, 6, generator=g), torch.randn(batch, 10, generator=g)
        rows = torch.randint(0, 6, (23,), generator=g, dtype=torch.int32)
        cols = torch.randint(0, 10, (23,), generator=g, dtype=torch.int32)
        got = torch.ops.sparsecraft.sddmm(dy, x, rows, cols)
        torch.testing.assert_close(got, (dy.t() @ x)[rows.long(), cols.long()], rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="rows must lie in"):
        torch.ops.sparsecraft.sddmm(dy, x, rows + 6, cols)


def test_dense_grad_only_when_asked():
    require_native()
    w, mask = torch.randn(6, 8), torch.rand(6, 8) < 0.5
    layer = SparseLinear.trainable(w, mask)
    x = torch.randn(4, 8)
    layer(x).sum().backward()
    assert layer.weight.grad is None
    layer.dense_grad = True
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, torch.ones(4, 6).t() @ x)  # every position, kept or not


def test_weight_view_follows_the_values():
    w, mask = torch.randn(5, 7), torch.rand(5, 7) < 0.5
    layer = SparseLinear.trainable(w, mask)
    view = layer.weight
    assert torch.equal(view, w * mask)
    with torch.no_grad():
        layer.w_vals.mul_(2)
    assert layer.weight is view and torch.equal(view, 2 * w * mask)


def test_repack_keeps_shared_values_and_optimizer_state():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 10, generator=g)
    old = torch.rand(8, 10, generator=g) < 0.4
    layer = SparseLinear.trainable(w, old)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(torch.randn(3, 10, generator=g)).sum().backward()
    opt.step()
    before = layer.weight.clone()
    avg = layer.grad_layout().dense(opt.state[layer.w_vals]["exp_avg"])
    new = old.clone()
    new[0] = ~new[0]  # swap row 0's kept and pruned positions: the count may change
    param = layer.w_vals
    layer.repack(new, [opt])
    assert torch.equal(layer.weight, before * new)
    state = opt.state[layer.w_vals]["exp_avg"]
    assert state.numel() == int(new.sum())
    assert torch.equal(layer.grad_layout().dense(state), avg * (new & old))
    assert any(p is layer.w_vals for p in opt.param_groups[0]["params"])
    assert (param is layer.w_vals) == (int(new.sum()) == int(old.sum()))


def test_pack_mask_keeps_zeros_at_kept_positions():
    w = torch.zeros(3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 2] = mask[2, 0] = True
    packed = pack_mask(w, mask)
    assert packed.stored_values == 2 and torch.equal(packed.to_dense(), w)
    assert GradLayout(packed).rows.tolist() == [1, 2]


def test_bad_masks_say_what_to_do():
    with pytest.raises(SparsecraftError, match="does not match weight"):
        pack_mask(torch.zeros(3, 4), torch.ones(4, 3, dtype=torch.bool))
    partial = torch.zeros(8, 4, dtype=torch.bool)
    partial[0, 0] = True
    with pytest.raises(SparsecraftError, match="use format 'csr16' to train this mask"):
        SparseLinear.trainable(torch.randn(8, 4), partial, format="block", R=4, C=1)
    with pytest.raises(SparsecraftError, match="keep this layer dense"):
        GradLayout(pack_mask(torch.ones(70000, 1), torch.ones(70000, 1, dtype=torch.bool)))
    inference = SparseLinear(pack_mask(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool)))
    with pytest.raises(SparsecraftError, match="needs a trainable SparseLinear"):
        inference.repack(torch.ones(2, 2, dtype=torch.bool))
