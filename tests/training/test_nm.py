"""Dense-weight N:M training: validity after every step, SR-STE gradients, gradient flow, BDWP."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparsecraft.patterns import NM
from sparsecraft.training import SparsityConfig, fit, make_updater

from .conftest import tiny_mlp


def _nm_ok(mask: torch.Tensor, n: int, m: int) -> bool:
    """N kept in every group of M along the inputs (for a conv: along C_in at each kernel position)."""
    g = mask.movedim(1, -1).reshape(-1, m).sum(1)
    return bool((g == n).all())


def test_srste_nm_valid_after_every_step_and_gradient_rule(data):
    x, y = data
    model = tiny_mlp(sizes=(20, 32, 16, 4))
    lam = 0.1
    u = make_updater("srste", SparsityConfig(pattern="2:4", allocation="uniform"), total_steps=12, lambda_w=lam)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    u.attach(model, opt)
    params = dict(model.named_parameters())
    for step in range(12):
        idx = torch.arange(step * 8, step * 8 + 16) % len(x)
        opt.zero_grad()
        # reference: loss of the N:M-pruned network, gradient w.r.t. the pruned weights (STE: used for all of W)
        ref = {n: (p.detach() * u.fwd_masks[n]).requires_grad_() for n, p in params.items() if n in u.fwd_masks}
        h = x[idx]
        for i, layer in enumerate([model[0], model[2], model[4]]):
            w = ref[f"{2 * i}.weight"]
            h = F.linear(h, w, layer.bias)
            h = torch.relu(h) if i < 2 else h
        F.cross_entropy(h, y[idx]).backward()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        u.before_step()
        for n, w in ref.items():
            expected = w.grad + lam * params[n].detach() * (~u.fwd_masks[n])
            torch.testing.assert_close(params[n].grad, expected)
        opt.step()
        u.after_step()
        for n, m in u.masks().items():
            assert _nm_ok(m, 2, 4)
            assert torch.equal(m, NM(2, 4).mask(params[n].detach().abs()))
    assert 0 < sum(e["changed"] for e in u.events) and u.sparsity() == 0.5
    final = u.finalize()
    for n, m in u.sparsifier.masks.items():
        assert bool((dict(final.named_parameters())[n][~m] == 0).all())
        assert "forward" not in dict(final.named_modules())[n.rsplit(".", 1)[0]].__dict__


def test_gradflow_beta_decays_and_scaled_backward_scales_pruned_weights():
    model = tiny_mlp(sizes=(8, 8, 4))
    u = make_updater("gradflow", SparsityConfig(pattern="2:4"), total_steps=40, decay_end=0.5, interval=5,
                     backward="scaled")
    u.attach(model)
    betas = []
    for t in range(41):
        u.step = t
        betas.append(u.beta())
    assert betas[0] == 1.0 and betas[4] == 1.0 and betas[5] == pytest.approx(0.75) and betas[20:] == [0.0] * 21
    assert all(a >= b for a, b in zip(betas, betas[1:]))
    u.step = 10
    x = torch.randn(3, 8)
    w, m = model[0].weight, u.fwd_masks["0.weight"].float()
    torch.testing.assert_close(model[0](x), F.linear(x, w * (m + 0.5 * (1 - m)), model[0].bias))
    model[0](x).sum().backward()
    grad_pruned = w.grad[m == 0]
    ref = torch.ones(3, 1) * 1.0
    torch.testing.assert_close(w.grad, (ref.t() @ x).expand(8, 8) * (m + 0.5 * (1 - m)))
    assert grad_pruned.abs().sum() > 0


@pytest.mark.parametrize("step,beta", [(10, 0.5), (20, 0.0), (35, 0.0)])
def test_gradflow_gradient_is_straight_through_as_in_the_reference(step, beta):
    """Reference (Bambhaniya et al., released code): forward W (M + beta (1 - M)), backward grad_output
    unchanged, so every weight, pruned or not, gets dL/dW_eff, before and after beta reaches 0."""
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[4.0, -3.0, 2.0, 1.0], [0.5, -1.0, 2.0, -3.0]]))
    u = make_updater("gradflow", SparsityConfig(pattern="2:4"), total_steps=40, decay_end=0.5, interval=5)
    u.attach(model)
    u.step = step
    assert u.beta() == beta
    m = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert torch.equal(u.fwd_masks["0.weight"].float(), m)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, 0.5]])
    gy = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    out = model(x)
    w_eff = model[0].weight.detach() * (m + beta * (1 - m))
    torch.testing.assert_close(out, x @ w_eff.t())
    out.backward(gy)
    # by hand: dL/dW_eff[i, j] = sum_b gy[b, i] x[b, j]
    expected = torch.tensor([[1 * 1 + 3 * -1, 1 * 2 + 3 * 0, 1 * 3 + 3 * 1, 1 * 4 + 3 * 0.5],
                             [-2 * 1 + 0.5 * -1, -2 * 2 + 0.5 * 0, -2 * 3 + 0.5 * 1, -2 * 4 + 0.5 * 0.5]])
    torch.testing.assert_close(model[0].weight.grad, expected)    # ratio 1 on pruned weights, not beta


@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_gradflow_beta_lands_on_zero_at_the_end_step(schedule):
    u = make_updater("gradflow", SparsityConfig(pattern="2:4"), total_steps=100, schedule=schedule)
    u.attach(tiny_mlp(sizes=(8, 8, 4)))
    assert (u.end, u.interval) == (75, 7)        # the end step is not a multiple of the interval
    assert u.beta(74) > 0 and u.beta(75) == 0.0 and u.beta(76) == 0.0


@pytest.mark.parametrize("layer", [nn.Linear(8, 12), nn.Conv2d(4, 8, 3, padding=1, stride=2),
                                   nn.Conv1d(8, 4, 1, bias=False)])
def test_bidirectional_backward_uses_transposed_nm(layer):
    torch.manual_seed(0)
    model = nn.Sequential(layer)
    u = make_updater("bidirectional", SparsityConfig(pattern="2:4"), total_steps=5, lambda_w=0.0).attach(model)
    w = layer.weight
    mf, mb = u.fwd_masks["0.weight"], u.bwd_masks["0.weight"]
    assert _nm_ok(mf, 2, 4) and _nm_ok(mb.transpose(0, 1), 2, 4)
    shape = {nn.Linear: (5, 8), nn.Conv2d: (2, 4, 7, 7), nn.Conv1d: (2, 8, 6)}[type(layer)]
    x = torch.randn(*shape, requires_grad=True)
    out = model(x)
    gy = torch.randn_like(out)
    out.backward(gy)

    def op(inp, weight):
        return (F.linear(inp, weight, layer.bias) if isinstance(layer, nn.Linear)
                else layer._conv_forward(inp, weight, layer.bias))

    x2 = x.detach().clone().requires_grad_()
    wf = (w.detach() * mf).requires_grad_()
    ref_out = op(x2, wf)
    torch.testing.assert_close(out, ref_out)
    ref_out.backward(gy)
    x3 = x.detach().clone().requires_grad_()
    op(x3, w.detach() * mb).backward(gy)
    torch.testing.assert_close(x.grad, x3.grad)           # input gradient from the transposed N:M weights
    torch.testing.assert_close(w.grad, wf.grad)           # dense straight-through weight gradient


def test_layers_that_do_not_fit_stay_dense(data):
    model = tiny_mlp(sizes=(20, 32, 10))
    u = make_updater("bidirectional", SparsityConfig(pattern="2:4"))
    fit(model, data, u, epochs=1, batch_size=32, progress=False)
    assert u.skipped == ["2.weight"]      # 10 outputs do not split into groups of 4
    assert list(u.masks()) == ["0.weight"]


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 6), groups=st.integers(1, 5), nm=st.sampled_from([(1, 4), (2, 4), (2, 8), (1, 2)]),
       steps=st.integers(1, 4))
def test_nm_valid_on_odd_shapes(rows, groups, nm, steps):
    n, m = nm
    torch.manual_seed(rows * 31 + groups)
    model = nn.Sequential(nn.Linear(groups * m, rows))
    u = make_updater("srste", SparsityConfig(pattern=f"{n}:{m}"), total_steps=steps)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    u.attach(model, opt)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, groups * m)).pow(2).sum().backward()
        u.before_step()
        opt.step()
        u.after_step()
        assert _nm_ok(u.masks()["0.weight"], n, m)
