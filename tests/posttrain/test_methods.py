"""Layer methods on single random layers: SparseGPT beats Wanda and magnitude, Wanda = numpy,
exact counts and N:M validity, OWL allocation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft.errors import SparsecraftError
from sparsecraft.patterns import NM, get_pattern
from sparsecraft.posttrain import (
    METHODS,
    LayerStats,
    magnitude,
    outlier_ratio,
    owl_sparsities,
    relative_error,
    sparsegpt,
    wanda,
)

from .conftest import correlated_inputs


def _stats(x: torch.Tensor) -> LayerStats:
    s = LayerStats(x.shape[1])
    s.add(x)
    return s


def _direct_error(x: torch.Tensor, w: torch.Tensor, w2: torch.Tensor) -> float:
    return float((x @ (w - w2).T).pow(2).sum() / (x @ w.T).pow(2).sum())


@pytest.mark.parametrize("pattern,sparsity", [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5), ("4:8", 0.5)])
def test_sparsegpt_reconstructs_better_than_wanda_and_magnitude(pattern: str, sparsity: float) -> None:
    x = correlated_inputs(1024, 128)
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    stats, pat = _stats(x), get_pattern(pattern)
    errors = {name: _direct_error(x, w, METHODS.get(name).prune_layer(w, stats, sparsity, pat).weight)
              for name in ("magnitude", "wanda", "sparsegpt")}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


def test_relative_error_matches_direct_computation() -> None:
    x = correlated_inputs(300, 32)
    w = torch.randn(8, 32)
    w2 = w * (torch.rand(8, 32) > 0.5)
    assert relative_error(w, w2, _stats(x).gram) == pytest.approx(_direct_error(x, w, w2), rel=1e-4)


def test_wanda_unstructured_equals_numpy() -> None:
    x = correlated_inputs(200, 40, seed=3)
    w = torch.randn(12, 40, generator=torch.Generator().manual_seed(4))
    result = wanda(w, _stats(x), 0.6, get_pattern("unstructured"))
    xn, wn = x.double().numpy(), w.double().numpy()
    score = np.abs(wn) * np.sqrt((xn**2).sum(0))[None, :]
    keep = np.ones_like(wn, dtype=bool)
    k = round(0.6 * 40)
    for r in range(wn.shape[0]):
        keep[r, np.argsort(score[r], kind="stable")[:k]] = False
    assert np.array_equal(result.mask.numpy(), keep)
    assert np.array_equal(result.weight.numpy(), np.where(keep, w.numpy(), 0.0))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 3)])
def test_wanda_nm_equals_numpy(n: int, m: int) -> None:
    x = correlated_inputs(100, 24, seed=5)
    w = torch.randn(10, 24, generator=torch.Generator().manual_seed(6))
    result = wanda(w, _stats(x), 0.0, NM(n, m))
    score = np.abs(w.double().numpy()) * np.sqrt((x.double().numpy() ** 2).sum(0))[None, :]
    groups = score.reshape(10, 24 // m, m)
    keep = np.zeros_like(groups, dtype=bool)
    top = np.argsort(-groups, axis=2, kind="stable")[:, :, :n]
    np.put_along_axis(keep, top, True, axis=2)
    assert np.array_equal(result.mask.numpy(), keep.reshape(10, 24))


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    groups=st.integers(1, 6),
    nm=st.sampled_from([(2, 4), (4, 8), (1, 2), (3, 5)]),
    method=st.sampled_from(["magnitude", "wanda", "sparsegpt"]),
    seed=st.integers(0, 10_000),
)
def test_nm_outputs_are_valid_with_exact_zeros(rows: int, groups: int, nm: tuple[int, int], method: str,
                                               seed: int) -> None:
    n, m = nm
    cols = groups * m
    x = correlated_inputs(3 * cols + 5, cols, seed)
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 1))
    result = METHODS.get(method).prune_layer(w, _stats(x), 0.5, NM(n, m),
                                             **({"blocksize": 3} if method == "sparsegpt" else {}))
    NM(n, m).validate(result.mask)
    assert int(result.mask.sum()) == rows * groups * n
    assert bool((result.weight[~result.mask] == 0).all())
    NM(n, m).validate(result.weight != 0)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 37),
    sparsity=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
    method=st.sampled_from(["magnitude", "wanda", "sparsegpt"]),
    seed=st.integers(0, 10_000),
)
def test_unstructured_counts(rows: int, cols: int, sparsity: float, method: str, seed: int) -> None:
    x = correlated_inputs(2 * cols + 3, cols, seed)
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 1))
    fn = METHODS.get(method).prune_layer
    result = fn(w, _stats(x), sparsity, get_pattern("unstructured"),
                **({"blocksize": 8} if method == "sparsegpt" else {}))
    pruned = int((~result.mask).sum())
    if method == "magnitude":
        assert pruned == round(sparsity * rows * cols)
    elif method == "wanda":
        assert pruned == rows * round(sparsity * cols)
    else:  # SparseGPT picks round(sparsity * block size) weights in every block of columns
        blocks = [min(8, cols - i) for i in range(0, cols, 8)]
        assert pruned == sum(round(sparsity * rows * b) for b in blocks)
    assert bool((result.weight[~result.mask] == 0).all())


def test_sparsegpt_at_zero_sparsity_keeps_weights() -> None:
    x = correlated_inputs(200, 32)
    w = torch.randn(6, 32)
    result = sparsegpt(w, _stats(x), 0.0, get_pattern("unstructured"), blocksize=8)
    assert torch.equal(result.weight, w) and bool(result.mask.all())


def test_sparsegpt_zeroes_dead_inputs_and_needs_full_gram() -> None:
    x = correlated_inputs(200, 16)
    x[:, 3] = 0.0
    w = torch.randn(4, 16)
    result = sparsegpt(w, _stats(x), 0.25, get_pattern("unstructured"))
    assert bool((result.weight[:, 3] == 0).all())
    diag = LayerStats(16, diag_only=True)
    diag.add(x)
    with pytest.raises(SparsecraftError, match="full Gram"):
        sparsegpt(w, diag, 0.5, get_pattern("unstructured"))


def test_magnitude_needs_no_stats() -> None:
    w = torch.tensor([[0.1, -3.0, 0.2, 4.0]])
    assert magnitude(w, None, 0.5, get_pattern("unstructured")).mask.tolist() == [[False, True, False, True]]


def test_outlier_ratio_counts_scores_above_m_times_mean() -> None:
    scores = [torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 31.0])]
    # mean = 40/10 = 4; only 31 > 2 * 4
    assert outlier_ratio(scores, m=2.0) == pytest.approx(0.1)


def test_owl_sparsities_keep_mean_and_favour_outlier_blocks() -> None:
    ratios = [0.01, 0.05, 0.02, 0.03]
    out = owl_sparsities(ratios, 0.7, lam=0.08)
    assert np.mean(out) == pytest.approx(0.7)
    assert max(out) - min(out) == pytest.approx(0.16)
    assert np.argsort(out).tolist() == np.argsort(ratios)[::-1].tolist()
    assert owl_sparsities([0.02, 0.02], 0.5) == [0.5, 0.5]
    with pytest.raises(SparsecraftError):
        owl_sparsities(ratios, 0.5, lam=1.5)
