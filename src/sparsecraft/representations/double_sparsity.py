"""Double Sparsity at decode time: a label cache, token selection from it, attention over the selection.

Yang et al. 2024, "Post-Training Sparse Attention with Double Sparsity". Offline, a few channels
per head (the *label channels*, :func:`~sparsecraft.representations.attention.calibrate_label_channels`)
are chosen where ``|q_c| * |k_c|`` is largest. At every decode step the new query is scored against
the cached keys *on those channels only*, the ``k`` best tokens are kept, and exact attention runs
over those ``k`` tokens. The cache layout is what makes this read fewer bytes:

* the **label cache** ``(N, H, capacity, r)`` holds the ``r`` label channels of every cached key,
  contiguous, apart from the full keys; ranking ``T`` tokens reads ``T * r`` numbers, not ``T * D``;
* the **full cache** (keys and values, ``(N, H, capacity, D)`` each) is read only at the ``k``
  selected rows. It may live on another device (``kv_device``, the paper's offloading): only the
  selected rows travel to the compute device.

:class:`DoubleSparseDecoder` decodes a :class:`~sparsecraft.models.TinyTransformer` token by token
with one cache per attention layer, ranking by label channels, by all channels (exact top-k), or
densely. The token budget is a fraction of the current context (``ceil(budget * t)`` tokens at
context length ``t``, at least 1) or a fixed count.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..models.transformer import SelfAttention, TinyTransformer
from .attention import _attention_layers, check_label_channels


class LabelKVCache:
    """A preallocated KV cache for one attention layer plus a separate, contiguous label cache.

    Layout: the label cache is channel-major, ``labels[n, h, c, t]``, so ranking the cached tokens
    streams ``r`` contiguous rows of ``length`` numbers per head. Keys and values are token-major
    ``(N, H, capacity, D)`` tensors: a selected token is one contiguous row of each. Selected keys
    are gathered (their exact scores are needed); selected values are never copied: their
    probability-weighted sum is read straight from the cache (``embedding_bag``).

    Parameters
    ----------
    batch, num_heads, head_dim : int
        Cache geometry ``(N, H, D)``.
    capacity : int
        Most tokens the cache holds.
    channels : torch.Tensor of shape (H, r), int64, optional
        Label channels per head; None keeps no label cache (exact or dense ranking only).
    dtype : torch.dtype, default=torch.float32
    device : torch.device or str, default="cpu"
        Device of the label cache and of the attention computation.
    kv_device : torch.device or str, optional
        Device of the full keys/values (default ``device``); only selected rows leave it.

    Attributes
    ----------
    length : int
        Tokens cached so far.
    key_store, value_store : torch.Tensor of shape (N, H, capacity, D)
    labels : torch.Tensor of shape (N, H, r, capacity) or None
    """

    def __init__(
        self, batch: int, num_heads: int, head_dim: int, capacity: int, channels: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
        kv_device: torch.device | str | None = None,
    ) -> None:
        self.batch = check_positive_int(batch, "batch")
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.capacity = check_positive_int(capacity, "capacity")
        self.device = torch.device(device)
        self.kv_device = torch.device(kv_device) if kv_device is not None else self.device
        shape = (batch, num_heads, capacity, head_dim)
        self.key_store = torch.empty(shape, dtype=dtype, device=self.kv_device)
        self.value_store = torch.empty(shape, dtype=dtype, device=self.kv_device)
        self.channels: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        if channels is not None:
            self.channels = check_label_channels(channels, num_heads, head_dim).to(self.device)
            self.labels = torch.empty(batch, num_heads, self.channels.shape[1], capacity, dtype=dtype,
                                      device=self.device)
        self.length = 0
        # row offset of each (batch, head) in a store viewed as (N * H * capacity, D)
        self._row_base = (torch.arange(batch * num_heads, device=self.kv_device) * capacity).view(batch, num_heads, 1)

    @property
    def keys(self) -> torch.Tensor:
        """Cached keys ``(N, H, length, D)`` (a view)."""
        return self.key_store[:, :, : self.length]

    @property
    def values(self) -> torch.Tensor:
        """Cached values ``(N, H, length, D)`` (a view)."""
        return self.value_store[:, :, : self.length]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Cache new tokens.

        Parameters
        ----------
        keys, values : torch.Tensor of shape (N, H, t, D)
        """
        expected = (self.batch, self.num_heads, keys.shape[2], self.head_dim)
        if tuple(keys.shape) != expected or tuple(values.shape) != expected:
            raise SparsecraftError(
                f"keys/values must be (N, H, t, D) = {expected}, got {tuple(keys.shape)} and {tuple(values.shape)}"
            )
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise SparsecraftError(f"cache holds {self.capacity} tokens, appending would make {end}; build it larger")
        self.key_store[:, :, self.length : end] = keys.to(self.kv_device)
        self.value_store[:, :, self.length : end] = values.to(self.kv_device)
        if self.labels is not None:
            index = self.channels[None, :, None, :].expand(self.batch, -1, keys.shape[2], -1)
            self.labels[:, :, :, self.length : end] = keys.to(self.device).gather(-1, index).transpose(-1, -2)
        self.length = end

    def label_bytes(self) -> int:
        """Bytes of the label cache in use (0 without label channels)."""
        return 0 if self.labels is None else self.labels[..., : self.length].numel() * self.labels.element_size()

    def kv_bytes(self) -> int:
        """Bytes of the full keys and values in use."""
        return 2 * self.keys.numel() * self.key_store.element_size()

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        return idx.to(self.kv_device) + self._row_base

    def gather_keys(self, idx: torch.Tensor) -> torch.Tensor:
        """Keys of selected tokens, on the compute device.

        Parameters
        ----------
        idx : torch.Tensor of shape (N, H, k), int64
            Token positions in ``[0, length)``.

        Returns
        -------
        torch.Tensor of shape (N, H, k, D)
        """
        picked = self.key_store.view(-1, self.head_dim).index_select(0, self._rows(idx).flatten())
        return picked.to(self.device).view(*idx.shape, self.head_dim)

    def weighted_values(self, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_i weights[..., i] * value[idx[..., i]]`` read straight from the value store.

        Parameters
        ----------
        idx : torch.Tensor of shape (N, H, k), int64
        weights : torch.Tensor of shape (N, H, k)

        Returns
        -------
        torch.Tensor of shape (N, H, D), on the compute device
        """
        rows = self._rows(idx).view(-1, idx.shape[-1])
        w = weights.to(self.kv_device, self.value_store.dtype).reshape(rows.shape)
        out = F.embedding_bag(rows, self.value_store.view(-1, self.head_dim), per_sample_weights=w, mode="sum")
        return out.to(self.device).view(*idx.shape[:2], self.head_dim)


def dense_decode_attention(q: torch.Tensor, cache: LabelKVCache) -> torch.Tensor:
    """Softmax attention of one query per (batch, head) over every cached token.

    Parameters
    ----------
    q : torch.Tensor of shape (N, H, D)
    cache : LabelKVCache

    Returns
    -------
    torch.Tensor of shape (N, H, D)
    """
    return F.scaled_dot_product_attention(
        q.unsqueeze(2), cache.keys.to(q.device), cache.values.to(q.device)
    ).squeeze(2)


def _top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest entries along the last axis, in no particular order."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        # introselect: linear time, where torch.topk sorts a heap (several times slower at 16k tokens)
        return torch.from_numpy(np.argpartition(scores.numpy(), -k, axis=-1)[..., -k:])
    return scores.topk(k, dim=-1, sorted=False).indices


def select_tokens(q: torch.Tensor, cache: LabelKVCache, k: int, exact: bool = False) -> torch.Tensor:
    """The ``k`` cached tokens per (batch, head) with the highest approximate score ``q . key``.

    Parameters
    ----------
    q : torch.Tensor of shape (N, H, D)
    cache : LabelKVCache
    k : int
        Tokens kept, ``1 <= k <= cache.length``.
    exact : bool, default=False
        Rank with all ``D`` channels of the full keys (exact top-k) instead of the label cache.

    Returns
    -------
    torch.Tensor of shape (N, H, k), int64
        Token positions, on the label cache's device.
    """
    if exact:
        scores = (cache.keys @ q.to(cache.kv_device).unsqueeze(-1)).squeeze(-1)
    else:
        if cache.labels is None:
            raise SparsecraftError("this cache has no label channels; build it with channels= or rank exactly")
        qc = q.gather(-1, cache.channels[None].expand(q.shape[0], -1, -1))
        scores = (qc.unsqueeze(-2) @ cache.labels[..., : cache.length]).squeeze(-2)
    return _top_indices(scores.detach(), k).to(cache.device)


def sparse_decode_attention(q: torch.Tensor, cache: LabelKVCache, k: int, exact: bool = False) -> torch.Tensor:
    """Double Sparsity decode attention: rank tokens, gather their keys, attend over them.

    With ``k >= cache.length`` this is dense attention over every cached token.

    Parameters
    ----------
    q : torch.Tensor of shape (N, H, D)
    cache : LabelKVCache
    k : int
        Token budget (>= 1).
    exact : bool, default=False
        Rank with the full keys (exact top-k) rather than the label channels.

    Returns
    -------
    torch.Tensor of shape (N, H, D)
    """
    k = check_positive_int(k, "k")
    if k >= cache.length:
        return dense_decode_attention(q, cache)
    idx = select_tokens(q, cache, k, exact)
    probs = (cache.gather_keys(idx) @ q.unsqueeze(-1)).squeeze(-1).mul_(1 / math.sqrt(cache.head_dim)).softmax(-1)
    return cache.weighted_values(idx, probs)


class DoubleSparseDecoder:
    """Token-by-token decoding of a causal :class:`TinyTransformer` with Double Sparsity attention.

    Parameters
    ----------
    model : TinyTransformer
        A causal token LM (its weights are used as they are, in eval mode).
    ranking : {"label", "exact", "dense"}
        How tokens are chosen: by the label channels (``label_channels`` required), by the full
        keys (exact top-k), or not at all (dense attention, the reference).
    label_channels : dict of str to torch.Tensor, optional
        Attention layer name -> (num_heads, r) channel ids, e.g. from
        :func:`~sparsecraft.representations.attention.calibrate_label_channels`.
    budget : float, optional
        Tokens kept as a fraction of the context, in (0, 1]: ``max(1, ceil(budget * t))``.
    k : int, optional
        A fixed token count instead of ``budget``.
    """

    def __init__(
        self, model: nn.Module, ranking: str = "label", label_channels: dict[str, torch.Tensor] | None = None,
        budget: float | None = None, k: int | None = None,
    ) -> None:
        if not isinstance(model, TinyTransformer) or not model.causal or not isinstance(model.embed, nn.Embedding):
            raise SparsecraftError("DoubleSparseDecoder needs a causal token TinyTransformer (load_decoder().model)")
        if ranking not in ("label", "exact", "dense"):
            raise SparsecraftError(f"unknown ranking {ranking!r}; choose one of: dense, exact, label")
        if ranking != "dense" and (budget is None) == (k is None):
            raise SparsecraftError("give exactly one of budget (a fraction of the context) or k (a token count)")
        if budget is not None and not 0.0 < float(budget) <= 1.0:
            raise SparsecraftError(f"budget must be a fraction in (0, 1], got {budget}")
        self.k = None if k is None else check_positive_int(k, "k")
        self.budget = None if budget is None else float(budget)
        self.model, self.ranking = model, ranking
        self.layers: list[tuple[str, SelfAttention]] = [
            (f"blocks.{i}.attn", block.attn) for i, block in enumerate(model.blocks)
        ]
        self.channels: dict[str, torch.Tensor | None] = {name: None for name, _ in self.layers}
        if ranking == "label":
            if label_channels is None:
                raise SparsecraftError("ranking='label' needs label_channels (from calibrate_label_channels)")
            for name, attn in self.layers:
                if name not in label_channels:
                    raise SparsecraftError(f"label_channels has no entry for attention layer {name!r}")
                self.channels[name] = check_label_channels(label_channels[name], attn.num_heads, attn.head_dim)
        self.caches: list[LabelKVCache] = []

    def tokens_kept(self, length: int) -> int:
        """Tokens attended to at context length ``length`` (all of them when dense)."""
        if self.ranking == "dense":
            return length
        if self.k is not None:
            return min(self.k, length)
        return min(length, max(1, math.ceil(self.budget * length)))

    def reset(self, batch: int, capacity: int | None = None) -> None:
        """Empty caches for ``batch`` sequences of up to ``capacity`` tokens (default ``model.max_len``)."""
        capacity = check_positive_int(capacity or self.model.max_len, "capacity")
        if capacity > self.model.max_len:
            raise SparsecraftError(f"capacity {capacity} exceeds the model's max_len {self.model.max_len}")
        p = self.model.head.weight
        self.caches = [
            LabelKVCache(batch, attn.num_heads, attn.head_dim, capacity, self.channels[name], p.dtype, p.device)
            for name, attn in self.layers
        ]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence; return next-token logits.

        Parameters
        ----------
        tokens : torch.Tensor of shape (N,), int64

        Returns
        -------
        torch.Tensor of shape (N, vocab)
        """
        if not self.caches or self.caches[0].batch != tokens.shape[0]:
            raise SparsecraftError("call reset(batch) with the batch size before step()")
        pos = self.caches[0].length
        model = self.model
        h = model.embed(tokens) + model.pos_embed[0, pos]
        for block, (_, attn), cache in zip(model.blocks, self.layers, self.caches):
            a = block.ln1(h)
            n = a.shape[0]
            q = attn.q_proj(a).view(n, attn.num_heads, attn.head_dim)
            cache.append(attn.k_proj(a).view(n, attn.num_heads, 1, attn.head_dim),
                         attn.v_proj(a).view(n, attn.num_heads, 1, attn.head_dim))
            if self.ranking == "dense":
                out = dense_decode_attention(q, cache)
            else:
                out = sparse_decode_attention(q, cache, self.tokens_kept(cache.length), self.ranking == "exact")
            h = h + attn.out_proj(out.flatten(1))
            h = h + block.mlp(block.ln2(h))
        return model.head(model.norm(h))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Decode whole windows token by token (teacher forcing).

        Parameters
        ----------
        x : torch.Tensor of shape (N, T), int64

        Returns
        -------
        torch.Tensor of shape (N, T, vocab)
            Position ``t`` holds the logits after reading ``x[:, : t + 1]``.
        """
        self.reset(x.shape[0], x.shape[1])
        return torch.stack([self.step(x[:, t]) for t in range(x.shape[1])], dim=1)


@torch.no_grad()
def decode_quality(decoder: DoubleSparseDecoder, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 64) -> tuple[float, float]:
    """Perplexity and next-token accuracy of token-by-token decoding.

    Parameters
    ----------
    decoder : DoubleSparseDecoder
    x, y : torch.Tensor of shape (N, T), int64
        Inputs and next-token targets.
    batch_size : int, default=64

    Returns
    -------
    perplexity, accuracy : float
        ``exp`` of the mean cross-entropy, and the share of positions whose argmax is the target.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise SparsecraftError(f"x and y must both be (N, T), got {tuple(x.shape)} and {tuple(y.shape)}")
    total, correct, count = 0.0, 0, 0
    for i in range(0, len(x), check_positive_int(batch_size, "batch_size")):
        logits = decoder.logits(x[i : i + batch_size])
        target = y[i : i + batch_size]
        total += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum"))
        correct += int((logits.argmax(-1) == target).sum())
        count += target.numel()
    return math.exp(total / count), correct / count


def random_label_channels(model: nn.Module, r: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``r`` random channels per head for every attention layer (the paper's random-channel baseline).

    Parameters
    ----------
    model : nn.Module
        Contains :class:`SelfAttention` layers.
    r : int
        Channels per head, in [1, head_dim].
    seed : int, default=0

    Returns
    -------
    dict of str to torch.Tensor
        Layer name -> (num_heads, r) int64 channel ids, sorted ascending.
    """
    r = check_positive_int(r, "r")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, attn in _attention_layers(model):
        if r > attn.head_dim:
            raise SparsecraftError(f"r ({r}) exceeds head_dim ({attn.head_dim}) of layer {name!r}")
        picks = [torch.randperm(attn.head_dim, generator=g)[:r].sort().values for _ in range(attn.num_heads)]
        out[name] = torch.stack(picks)
    return out
