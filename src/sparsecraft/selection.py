"""The k lowest of many scores, chosen in a few passes over chunks instead of one ``topk``.

``torch.topk`` over n scores on the CPU holds n (value, index) pairs (16 bytes each) besides the
k indices it returns (8 bytes each), and global pruning concatenated every layer's scores first:
one-shot pruning of a model took about 8x its weights on top of them. Here the k-th lowest score
is found by a radix select, two passes of 16-bit histograms over the scores' bit patterns read
``CHUNK`` elements at a time, so the extra memory is a few chunks whatever the model's size.

Scores are ranked as ``topk(largest=False)`` ranks them as float32: -0.0 ties with 0.0 and NaN
ranks above inf. Scores equal to the k-th lowest are taken in position order (tensor by tensor,
then by flat index), a choice ``topk`` leaves unspecified.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

CHUNK = 1 << 18
_BINS = 1 << 16
_HALF = 1 << 15


def _keys(scores: torch.Tensor) -> torch.Tensor:
    """Int32 keys of 1-D ``scores`` whose order is the scores' float32 order (a fresh tensor)."""
    values = scores.to(torch.float32) + 0.0  # a copy; -0.0 becomes 0.0
    nan = torch.isnan(values)
    bits = values.view(torch.int32)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats: flip all but the sign bit
    return bits.masked_fill_(nan, 0x7FFFFFFF)


def _chunks(scores: torch.Tensor) -> Iterator[torch.Tensor]:
    """The keys of ``scores`` (any shape, flattened) ``CHUNK`` at a time."""
    flat = scores.reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        yield _keys(flat[start:start + CHUNK])


def _histogram(tensors: Sequence[torch.Tensor], high: int | None) -> torch.Tensor:
    """Counts of the keys' high 16 bits (``high is None``) or of the low 16 bits of those whose
    high bits are ``high``, shape ``(65536,)``."""
    counts = torch.zeros(_BINS, dtype=torch.int64)
    for scores in tensors:
        for keys in _chunks(scores):
            digits = (keys >> 16) + _HALF if high is None else keys[(keys >> 16) == high] & 0xFFFF
            counts += torch.bincount(digits, minlength=_BINS)
    return counts


def _bin_of(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The bin holding the k-th lowest (1-based) of a histogram and how many lie in lower bins."""
    cum = counts.cumsum(0)
    b = int((cum < k).sum())
    return b, int(cum[b - 1]) if b else 0


def kth_lowest(tensors: Sequence[torch.Tensor], k: int) -> tuple[int, int]:
    """Key of the k-th lowest score over all ``tensors`` and how many scores lie below it.

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Scores of any shapes, read in order.
    k : int
        1-based rank, in [1, total number of scores].

    Returns
    -------
    key : int
        The k-th lowest score as its int32 key.
    below : int
        Number of scores whose key is lower, so ``k - below`` of the ties at ``key`` are taken.
    """
    high, below_high = _bin_of(_histogram(tensors, None), k)
    low, below_low = _bin_of(_histogram(tensors, high - _HALF), k - below_high)
    return ((high - _HALF) << 16) + low, below_high + below_low


def lowest_counts(tensors: Sequence[torch.Tensor], k: int) -> list[int]:
    """How many of the ``k`` lowest scores over all ``tensors`` each one holds.

    Parameters
    ----------
    tensors : sequence of torch.Tensor
        Scores of any shapes, as if concatenated flat in this order.
    k : int
        In [0, total number of scores].

    Returns
    -------
    list of int
        One count per tensor, summing to ``k``; ties at the k-th lowest go to the earlier tensors.
    """
    if k == 0:
        return [0] * len(tensors)
    key, below = kth_lowest(tensors, k)
    ties, counts = k - below, []
    for scores in tensors:
        n_below = n_equal = 0
        for keys in _chunks(scores):
            n_below += int((keys < key).sum())
            n_equal += int((keys == key).sum())
        counts.append(n_below + min(n_equal, ties))
        ties -= min(n_equal, ties)
    return counts


def lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of ``scores``' shape keeping all but its ``k`` lowest (ties: lowest flat index first).

    Parameters
    ----------
    scores : torch.Tensor
    k : int
        In [0, scores.numel()].

    Returns
    -------
    torch.Tensor
        Bool, True where kept.
    """
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k == 0:
        return keep.reshape(scores.shape)
    key, below = kth_lowest([scores], k)
    ties, start = k - below, 0
    for keys in _chunks(scores):
        part = keep[start:start + keys.numel()]
        torch.gt(keys, key, out=part)
        tied = (keys == key).nonzero().squeeze(1)
        part[tied[ties:]] = True
        ties -= min(ties, tied.numel())
        start += keys.numel()
    return keep.reshape(scores.shape)
