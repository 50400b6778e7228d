import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft import SparsecraftError, get_pattern
from sparsecraft.patterns import NM, Block


@pytest.mark.parametrize("spec,shape,sparsity,kept", [
    ("unstructured", (10, 7), 0.5, 35),
    ("unstructured", (10, 7), 0.9, 7),
    ("channel", (10, 7), 0.3, 49),
    ("block4x1", (8, 6), 0.5, 24),
    ("block2x3", (8, 6), 0.25, 36),
    ("head4", (8, 5), 0.5, 20),
    ("2:4", (6, 8), 0.9, 24),   # N:M ignores the sparsity argument
    ("1:4", (6, 8), 0.0, 12),
    ("4:8", (3, 16), 0.1, 24),
])
def test_exact_kept_counts(spec, shape, sparsity, kept):
    p = get_pattern(spec)
    mask = p.mask_for_sparsity(torch.rand(shape), sparsity)
    assert mask.dtype == torch.bool and mask.shape == shape
    assert int(mask.sum()) == kept
    p.validate(mask)


def test_mask_drops_lowest_scores():
    scores = torch.arange(12.0).reshape(3, 4)
    assert get_pattern("unstructured").mask(scores, 5).reshape(-1).tolist() == [False] * 5 + [True] * 7
    assert get_pattern("channel").mask(scores, 1).tolist() == [[False] * 4, [True] * 4, [True] * 4]
    assert get_pattern("2:4").mask(scores).tolist() == [[False, False, True, True]] * 3


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 9), groups=st.integers(1, 6),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 8), (4, 8), (2, 3)]),
       k=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_nm_valid_on_odd_shapes(rows, groups, nm, k, seed):
    n, m = nm
    # Conv weight: reduction dim = in_channels * k * k must be divisible by M
    cols = groups * m
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    p = NM(n, m)
    mask = p.mask(w.abs())
    p.validate(mask)
    per_group = mask.reshape(-1, m).sum(1)
    assert bool((per_group == n).all())
    kept_vals = w.abs().reshape(-1, m)
    # kept weights are the n largest of their group
    for g in range(per_group.numel()):
        kept = kept_vals[g][mask.reshape(-1, m)[g]]
        dropped = kept_vals[g][~mask.reshape(-1, m)[g]]
        assert kept.min() >= dropped.max()


@settings(max_examples=60, deadline=None)
@given(r=st.integers(1, 4), c=st.integers(1, 4), br=st.integers(1, 5), bc=st.integers(1, 5),
       sparsity=st.floats(0, 0.99), seed=st.integers(0, 2**16))
def test_block_valid_on_odd_shapes(r, c, br, bc, sparsity, seed):
    w = torch.randn(r * br, c * bc, generator=torch.Generator().manual_seed(seed))
    p = Block(br, bc)
    mask = p.mask_for_sparsity(w.abs(), sparsity)
    p.validate(mask)
    n_blocks = r * c
    assert int(mask.sum()) == (n_blocks - round(sparsity * n_blocks)) * br * bc
    blocks = mask.reshape(r, br, c, bc).permute(0, 2, 1, 3).reshape(n_blocks, -1)
    assert bool((blocks.all(1) | (~blocks).all(1)).all())


def test_conv_nm_flat_runs_along_flattened_reduction_dim():
    w = torch.randn(4, 2, 2, 2)  # reduction dim 8
    mask = get_pattern("2:4-flat").mask(w.abs())
    assert mask.shape == w.shape
    assert bool((mask.reshape(4, 2, 4).sum(-1) == 2).all())


@pytest.mark.parametrize("spec,shape,msg", [
    ("4:2", (4, 8), "0 < N < M"),
    ("2:2", (4, 8), "0 < N < M"),
    ("2:4", (4, 6), "not divisible by M=4"),
    ("block4x1", (6, 8), "does not split"),
    ("banana", (4, 4), "unknown pattern"),
    ("block0x1", (4, 4), "positive"),
    ("head0", (4, 4), "positive"),
])
def test_bad_patterns_raise_one_line_errors(spec, shape, msg):
    with pytest.raises(SparsecraftError, match=msg) as info:
        get_pattern(spec).mask(torch.rand(shape))
    assert "\n" not in str(info.value)


def test_validate_rejects_broken_masks():
    mask = torch.ones(4, 8, dtype=torch.bool)
    with pytest.raises(SparsecraftError, match="keep more than 2"):
        get_pattern("2:4").validate(mask)
    mask[0, 0] = False
    with pytest.raises(SparsecraftError, match="partly kept"):
        get_pattern("block4x1").validate(mask)
    with pytest.raises(SparsecraftError, match="bool"):
        get_pattern("unstructured").validate(mask.float())


@pytest.mark.parametrize("spec", ["unstructured", "2:4", "1:8", "block4x1", "block2x3", "channel", "head64"])
def test_every_pattern_parses_its_own_name(spec):
    from sparsecraft.patterns import PATTERNS

    pattern = get_pattern(f"  {spec.upper()} ")
    assert str(pattern) == spec and get_pattern(str(pattern)) == pattern
    owners = [cls for _, cls in PATTERNS.items() if cls.parse(spec) is not None]
    assert owners == [type(pattern)]          # exactly one registered class claims each spec


def test_unknown_pattern_lists_every_registered_spec():
    from sparsecraft.patterns import PATTERNS

    with pytest.raises(SparsecraftError) as info:
        get_pattern("zigzag")
    message = str(info.value)
    assert message.startswith("unknown pattern 'zigzag'; choose one of: ")
    for _, cls in PATTERNS.items():
        assert cls.spec_help and cls.spec_help in message
    assert "N:M (e.g. 2:4)" in message and "blockRxC (e.g. block4x1)" in message
