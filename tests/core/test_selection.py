"""The k lowest scores chosen in chunks: the same choice as a stable sort, in bounded memory (issue 20 item 9)."""
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsecraft import selection
from sparsecraft.oneshot import plan_masks
from sparsecraft.selection import lowest, lowest_counts

SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, 3e38, float("inf"), float("-inf"), float("nan")]


def _reference_keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """All but the k first of a stable ascending sort (NaN last, -0.0 equal to 0.0)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.sort(scores.reshape(-1).float(), stable=True).indices[:k]] = False
    return keep.reshape(scores.shape)


@pytest.fixture(autouse=True, scope="module")
def _small_chunks():
    """Chunks of 7 scores, so every test here crosses chunk boundaries (the subprocess keeps its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(selection, "CHUNK", 7)
        yield


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-4, 4, width=32)), min_size=1, max_size=60),
       data=st.data())
def test_lowest_is_a_stable_sort_with_ties_by_position(values, data):
    scores = torch.tensor(values)
    k = data.draw(st.integers(0, scores.numel()))
    assert torch.equal(lowest(scores, k), _reference_keep(scores, k))


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4), seed=st.integers(0, 1000), data=st.data())
def test_counts_split_one_stable_sort_of_the_concatenation(sizes, seed, data):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randint(-3, 4, (n,), generator=g).float() for n in sizes]  # many ties
    k = data.draw(st.integers(0, sum(sizes)))
    dropped = ~_reference_keep(torch.cat(tensors), k)
    assert lowest_counts(tensors, k) == [int(part.sum()) for part in dropped.split(sizes)]


def test_dtypes_are_ranked_as_float32():
    scores = torch.tensor([3.0, -2.0, 0.5, -0.0, 0.0, 7.0], dtype=torch.float64)
    assert lowest(scores.half(), 3).tolist() == [True, False, True, False, False, True]
    assert lowest(scores.reshape(2, 3), 2).tolist() == [[True, False, True], [False, True, True]]


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.61, 0.99])
def test_global_plan_is_one_topk_over_the_concatenation(sparsity):
    # what global allocation did before: topk over every layer's scores concatenated (no ties here)
    g = torch.Generator().manual_seed(0)
    scores = {f"l{i}": torch.rand(shape, generator=g) for i, shape in enumerate([(7, 5), (3, 3, 2, 2), (40,)])}
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    expected = torch.ones_like(flat, dtype=torch.bool)
    expected[torch.topk(flat, round(sparsity * flat.numel()), largest=False).indices] = False
    masks = plan_masks(sparsity, "unstructured", scores, "global")
    assert torch.equal(torch.cat([m.reshape(-1) for m in masks.values()]), expected)


PEAK = textwrap.dedent("""
    import resource, sys, torch
    from torch import nn
    import sparsecraft
    torch.set_num_threads(1)
    sparsecraft.prune(nn.Sequential(nn.Linear(64, 64)), 0.5, allocation=sys.argv[2])  # lazy set-up
    model = nn.Sequential(nn.Linear(int(sys.argv[1]), int(sys.argv[1]), bias=False))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sparsecraft.prune(model, 0.5, allocation=sys.argv[2])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_one_shot_pruning_peaks_under_twice_the_weights(allocation):
    # 4096x4096 fp32 is 64 MiB: the 8192x8192 scaled down; topk over a concatenation
    # took 7.8x the weights on top of them (now the scores 1x, the bool masks 0.25x and the chunks)
    n = 4096
    out = subprocess.run([sys.executable, "-c", PEAK, str(n), allocation], capture_output=True, text=True,
                         check=True)
    extra = int(out.stdout) * 1024
    assert extra < 2 * n * n * 4, f"pruning took {extra / (n * n * 4):.2f}x the weights"
