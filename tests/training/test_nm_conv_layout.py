"""N:M on convolutions: groups of M along C_in at each kernel position (NVIDIA ASP / NM-sparsity layout,
what sparse tensor cores and NHWC kernels need); ``N:M-flat`` groups the flattened C_in x kernel axis."""
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sparsecraft
from sparsecraft import SparsecraftError, Sparsifier, get_pattern
from sparsecraft.training import SparsityConfig, make_updater


def _check_cin_groups(w: torch.Tensor, mask: torch.Tensor, n: int, m: int) -> None:
    """Every group of M input channels at one (output, kernel position) keeps its N largest |w|."""
    wg = w.abs().movedim(1, -1).reshape(-1, m)
    mg = mask.movedim(1, -1).reshape(-1, m)
    assert bool((mg.sum(1) == n).all())
    for g in range(wg.shape[0]):
        assert wg[g][mg[g]].min() >= wg[g][~mg[g]].max()


@settings(max_examples=40, deadline=None)
@given(out=st.integers(1, 5), groups=st.integers(1, 3), nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 8), (2, 3)]),
       kernel=st.lists(st.integers(1, 3), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_conv_nm_groups_along_cin_at_each_kernel_position(out, groups, nm, kernel, seed):
    n, m = nm
    w = torch.randn(out, groups * m, *kernel, generator=torch.Generator().manual_seed(seed))
    p = get_pattern(f"{n}:{m}")
    mask = p.mask(w.abs())
    assert mask.shape == w.shape
    _check_cin_groups(w, mask, n, m)
    p.validate(mask)


@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 4), cin=st.integers(1, 5), kernel=st.lists(st.integers(1, 3), min_size=1, max_size=2),
       seed=st.integers(0, 2**16))
def test_flat_option_groups_the_flattened_axis(out, cin, kernel, seed):
    w = torch.randn(out, cin, *kernel, generator=torch.Generator().manual_seed(seed))
    p = get_pattern("2:4-flat")
    if w[0].numel() % 4:
        with pytest.raises(SparsecraftError, match="not divisible by M=4"):
            p.mask(w.abs())
        return
    mask = p.mask(w.abs())
    assert bool((mask.reshape(-1, 4).sum(1) == 2).all())
    p.validate(mask)
    assert str(p) == "2:4-flat" and get_pattern(str(p)) == p


def test_layouts_differ_and_validation_tells_them_apart():
    mask = torch.zeros(1, 4, 1, 2, dtype=torch.bool)
    mask[0, :, 0, 0] = True          # all 4 channels at the first kernel position, none at the second
    get_pattern("2:4-flat").validate(mask)           # flattened groups (c0k0 c0k1 c1k0 c1k1): 2 of 4 each
    with pytest.raises(SparsecraftError, match="keep more than 2"):
        get_pattern("2:4").validate(mask)            # C_in group at position 0 keeps 4
    lin = torch.randn(3, 8)
    assert torch.equal(get_pattern("2:4").mask(lin.abs()), get_pattern("2:4-flat").mask(lin.abs()))


def test_cin_not_divisible_by_m_is_a_one_line_error_naming_the_option():
    w = torch.randn(8, 2, 3, 3)          # 18 inputs per filter, but 2 input channels
    with pytest.raises(SparsecraftError, match="2 input channels .* not divisible by M=4.*2:4-flat"):
        get_pattern("2:4").mask(w.abs())


@pytest.mark.parametrize("pattern", ["2:4", "2:4-flat"])
def test_conv_nm_checkpoint_round_trip(pattern):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    sp = sparsecraft.prune(model, pattern=pattern)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "ck.safetensors")
        sp.save(path)
        sp2 = Sparsifier.load(path, model)
    for name, mask in sp.masks.items():
        assert torch.equal(sp2.masks[name], mask) and str(sp2.patterns[name]) == pattern


def test_nm_training_on_convs_uses_the_cin_layout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 2), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 2, 6, 6))
    u = make_updater("srste", SparsityConfig(pattern="2:4"), total_steps=2).attach(model)
    assert u.skipped == ["0.weight"]     # 2 input channels (8 flattened inputs): dense unless 2:4-flat
    _check_cin_groups(model[2].weight.detach(), u.masks()["2.weight"], 2, 4)
    flat = make_updater("srste", SparsityConfig(pattern="2:4-flat"), total_steps=2).attach(model)
    assert "0.weight" in flat.masks()
