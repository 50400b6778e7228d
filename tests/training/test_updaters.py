"""Mask-based updaters: kept counts, drop == grow, regrowth initialisation, schedules, IMP."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft import SparsecraftError
from sparsecraft.training import UPDATERS, SparsityConfig, fit, make_updater
from sparsecraft.training.schedules import cosine_fraction

from .conftest import blobs, tiny_mlp


def _kept(masks):
    return {n: int(m.sum()) for n, m in masks.items()}


def test_static_random_erk_counts_and_masks_fixed(data):
    model = tiny_mlp()
    u = make_updater("static", SparsityConfig(0.8, allocation="erk"), criterion="random", seed=3)
    fit(model, data, u, epochs=2, batch_size=32, progress=False, scheduler=None)
    first = u.events[0]
    assert first["kind"] == "init" and len(u.events) == 1
    total = sum(m.numel() for m in u.masks().values())
    assert abs(u.sparsity() - 0.8) <= len(u.masks()) / total
    for n, m in u.masks().items():          # pruned weights stayed exactly zero through training
        w = dict(model.named_parameters())[n]
        assert bool((w[~m] == 0).all())
    # same seed -> same random mask; other seed -> another
    again = make_updater("static", SparsityConfig(0.8, allocation="erk"), total_steps=1, criterion="random", seed=3)
    again.attach(tiny_mlp())
    other = make_updater("static", SparsityConfig(0.8, allocation="erk"), total_steps=1, criterion="random", seed=4)
    other.attach(tiny_mlp())
    assert all(torch.equal(a, b) for a, b in zip(u.masks().values(), again.masks().values()))
    assert not all(torch.equal(a, b) for a, b in zip(u.masks().values(), other.masks().values()))


def test_snip_needs_calib_and_keeps_highest_saliency(data):
    x, y = data
    u = make_updater("snip", SparsityConfig(0.7, allocation="global"), total_steps=3)
    with pytest.raises(SparsecraftError, match="calibration"):
        u.attach(tiny_mlp())
    model = tiny_mlp()
    ref = tiny_mlp()
    F.cross_entropy(ref(x[:32]), y[:32]).backward()
    sal = torch.cat([(p * p.grad).abs().flatten() for n, p in ref.named_parameters() if n.endswith("weight")])
    make_updater("snip", SparsityConfig(0.7, allocation="global"), total_steps=3).attach(model, calib=(x[:32], y[:32]))
    kept = torch.cat([m.weight_mask.flatten() for m in model if hasattr(m, "weight_mask")])
    n_keep = int(kept.sum())
    assert n_keep == sal.numel() - round(0.7 * sal.numel())
    assert sal[kept].min() >= sal[~kept].max()


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_drop_grow_keeps_counts_and_zero_init(method, data):
    model = tiny_mlp()
    u = make_updater(method, SparsityConfig(0.75, allocation="erk"), update_every=4, drop_fraction=0.4, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = {}

    def check(upd, event):
        masks = {n: m.clone() for n, m in upd.masks().items()}
        if event["kind"] == "init":
            seen["kept"], seen["prev"] = _kept(masks), masks
            return
        assert _kept(masks) == seen["kept"]                          # kept count per layer unchanged
        assert event["dropped"] == event["grown"] > 0                # drop count == grow count
        for name, t in upd.sparsifier.targets.items():
            d, g = event["per_layer"].get(name, (0, 0))
            new, old = masks[name], seen["prev"][name]
            assert d == int((old & ~new).sum()) and g == int((new & ~old).sum()) and d == g
            grown = new & ~old
            assert bool((t.param[grown] == 0).all())                  # regrown weights start at zero
            state = opt.state[t.param]["momentum_buffer"]
            assert bool((state[grown] == 0).all())                   # and their optimizer state too
            assert bool((t.param[~new] == 0).all())
        seen["prev"] = masks

    u.listeners.append(check)
    fit(model, data, u, epochs=4, batch_size=16, optimizer=opt, progress=False, scheduler=None)
    assert sum(e["kind"] == "drop_grow" for e in u.events) == len(range(4, u.end, 4))


def test_rigl_matches_reference_drop_and_grow(data):
    """A user-written loop; RigL's choice equals a direct recomputation from |w| and dense |grad|."""
    x, y = data
    model = tiny_mlp(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    u = make_updater("rigl", SparsityConfig(0.8, allocation="uniform"), total_steps=24, update_every=3,
                     drop_fraction=0.5, seed=2).attach(model, opt)
    params = dict(model.named_parameters())
    checked = 0
    for step in range(24):
        idx = torch.arange(step * 4, step * 4 + 16) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        grads = {n: params[n].grad.clone() for n in u.masks()}
        old = {n: m.clone() for n, m in u.masks().items()}
        u.before_step()
        for n, m in old.items():   # the optimizer only ever sees masked gradients
            assert bool((params[n].grad[~m] == 0).all())
        opt.step()
        w_after = {n: params[n].detach().clone() for n in old}
        u.after_step()
        if not u.is_update(u.step):
            assert all(torch.equal(old[n], m) for n, m in u.masks().items())
            continue
        checked += 1
        frac = cosine_fraction(u.step, 0.5, u.end)
        assert math.isclose(frac, 0.25 * (1 + math.cos(math.pi * u.step / u.end)))
        for n, new in u.masks().items():
            k = round(frac * int(old[n].sum()))
            wa = w_after[n].abs().flatten()
            act = old[n].flatten()
            order = torch.topk(torch.where(act, wa, torch.tensor(float("inf"))), k, largest=False).indices
            drop = torch.zeros_like(act)
            drop[order] = True
            cand = ~(act & ~drop)
            g = grads[n].abs().flatten()
            grow = torch.zeros_like(act)
            grow[torch.topk(torch.where(cand, g, torch.tensor(float("-inf"))), k).indices] = True
            assert torch.equal(new.flatten(), (act & ~drop) | grow)
            newly = new & ~old[n]
            assert bool((params[n][newly] == 0).all())
            for v in opt.state[params[n]].values():
                if v.shape == new.shape:
                    assert bool((v[newly] == 0).all())
    assert checked == len(range(3, u.end, 3))


def test_gmp_follows_cubic_schedule_exactly(data):
    model = tiny_mlp()
    s_f, s_i, t0, t_end, freq = 0.9, 0.2, 2, 20, 3
    u = make_updater("gmp", SparsityConfig(s_f, allocation="uniform"), initial_sparsity=s_i, start=t0,
                     end=t_end, frequency=freq)
    expected_steps = sorted(set(range(t0, t_end + 1, freq)) | {t_end})
    seen_steps = []
    state = {}

    def check(upd, event):
        t = event["step"]
        seen_steps.append(t)
        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0)) ** 3
        for n, m in upd.masks().items():
            assert int((~m).sum()) == round(s_t * m.numel()), (t, n)
            if n in state:
                assert not bool((m & ~state[n]).any())      # pruned weights never return
            state[n] = m.clone()

    u.listeners.append(check)
    fit(model, data, u, epochs=5, batch_size=16, progress=False)   # 30 steps
    assert seen_steps == expected_steps
    for n, m in u.masks().items():
        assert int((~m).sum()) == round(s_f * m.numel())


def test_imp_rewinds_to_early_weights_and_prunes_geometrically(data):
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    u = make_updater("imp", SparsityConfig(0.875, allocation="global"), total_steps=24, rounds=3, rewind_step=2)
    u.attach(model, opt, sched)
    snaps = {}
    rounds = []

    def check(upd, event):
        if event["kind"] == "snapshot":
            snaps.update({k: v.clone() for k, v in upd.model.state_dict().items()})
            snaps["lr"] = opt.param_groups[0]["lr"]
        if event["kind"] == "prune_rewind":
            rounds.append(event["sparsity"])
            for n, m in upd.masks().items():
                assert torch.equal(dict(upd.model.named_parameters())[n].detach(), snaps[n] * m)
            assert opt.param_groups[0]["lr"] == snaps["lr"]
            assert sched.last_epoch == 2

    u.listeners.append(check)
    fit(model, blobs(96), u, epochs=4, batch_size=16, optimizer=opt, scheduler=sched, progress=False)
    total = sum(m.numel() for m in u.masks().values())
    assert [round(s * total) for s in rounds] == [round((1 - 0.5 ** r) * total) for r in (1, 2, 3)]


def test_bad_options_are_one_line_errors():
    with pytest.raises(SparsecraftError, match="unknown training method"):
        make_updater("lottery")
    with pytest.raises(SparsecraftError, match="training method .rigl. has no option .frobnicate."):
        make_updater("rigl", SparsityConfig(0.9), frobnicate=1)
    with pytest.raises(SparsecraftError, match="sparsity"):
        SparsityConfig(1.5)
    with pytest.raises(SparsecraftError, match="N:M"):
        make_updater("srste", SparsityConfig(0.9))
    with pytest.raises(SparsecraftError, match="total_steps"):
        make_updater("rigl", SparsityConfig(0.9)).attach(tiny_mlp())
    model = tiny_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    attached = make_updater("set", SparsityConfig(0.9), total_steps=5).attach(model, opt)
    with pytest.raises(SparsecraftError, match="another optimizer"):
        fit(model, blobs(32), attached, progress=False)
    with pytest.raises(SparsecraftError, match="already attached"):
        attached.attach(model)


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 7), cols=st.integers(1, 9), sparsity=st.floats(0.05, 0.95),
       method=st.sampled_from(["set", "rigl"]), frac=st.floats(0.05, 0.9))
def test_drop_grow_counts_on_odd_shapes(rows, cols, sparsity, method, frac):
    torch.manual_seed(rows * 10 + cols)
    model = torch.nn.Sequential(torch.nn.Linear(cols, rows), torch.nn.Tanh(), torch.nn.Linear(rows, 3))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    u = make_updater(method, SparsityConfig(sparsity, allocation="uniform"), total_steps=8, update_every=1,
                     drop_fraction=frac, end_fraction=1.0).attach(model, opt)
    kept = _kept(u.masks())
    x = torch.randn(5, cols)
    for _ in range(8):
        old = {n: m.clone() for n, m in u.masks().items()}
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        u.before_step()
        opt.step()
        u.after_step()
        assert _kept(u.masks()) == kept
        for n, m in u.masks().items():
            assert int((old[n] & ~m).sum()) == int((m & ~old[n]).sum())
            assert bool((dict(model.named_parameters())[n][~m] == 0).all())


def test_imp_defaults_to_global_magnitude_allocation(data):
    assert UPDATERS.get("imp").default_config().allocation == "global"
    u = make_updater("imp", rounds=1)              # the method's own config: 0.9, global
    weights, checked = {}, []

    def check(upd, event):
        if event["kind"] == "round_end":
            weights.update({n: p.detach().abs().clone() for n, p in upd.model.named_parameters()})
        if event["kind"] == "prune_rewind":
            kept = torch.cat([weights[n][m] for n, m in upd.masks().items()])
            pruned = torch.cat([weights[n][~m] for n, m in upd.masks().items()])
            assert kept.min() >= pruned.max()         # one threshold over all layers
            checked.append(event["sparsity"])

    u.listeners.append(check)
    fit(tiny_mlp(), data, u, epochs=2, batch_size=16, progress=False)
    assert checked == [pytest.approx(0.9, abs=1e-3)]


def test_imp_gives_every_round_its_own_full_lr_schedule(data):
    """open_lth: every level retrains from the rewind step to the end of the full schedule, so the LR
    anneals to its minimum in every round, and each round restarts at the LR of the rewind step."""
    u = make_updater("imp", SparsityConfig(0.75, allocation="global"), rounds=2, rewind_step=3)
    lrs: dict[int, float] = {}
    by_kind: dict[str, list] = {"round_end": [], "prune_rewind": []}

    def record(upd, event):
        if event["kind"] in by_kind:
            by_kind[event["kind"]].append((event["step"], upd.optimizer.param_groups[0]["lr"]))

    u.listeners.append(record)
    fit(tiny_mlp(), data, u, epochs=5, batch_size=16, lr=0.01, progress=False,   # 30 steps: rounds of 12, 9, 9
        on_step=lambda step, loss: lrs.setdefault(step, u.optimizer.param_groups[0]["lr"]))
    lr_k = 0.01 * 0.5 * (1 + math.cos(math.pi * 3 / 12))
    assert [s for s, _ in by_kind["round_end"]] == [12, 21] and [s for s, _ in by_kind["prune_rewind"]] == [12, 21]
    assert all(lr == pytest.approx(0.0, abs=1e-12) for _, lr in by_kind["round_end"])
    assert all(lr == pytest.approx(lr_k) for _, lr in by_kind["prune_rewind"])
    assert lrs[30] == pytest.approx(0.0, abs=1e-12)
