"""Post-training top-k sparse attention, optionally with Double Sparsity's label channels.

Every query keeps only its ``k`` highest-scoring keys; the softmax runs over those. Which keys are
"highest" is decided either from the exact scores ``q . k`` or, as in Double Sparsity (Yang et al.
2024, "Post-Training Sparse Attention with Double Sparsity"), from approximate scores using only
``r`` "label" channels per head chosen offline on calibration data: the channels with the largest
mean ``|q_c| * |k_c|`` (the outlier channels that dominate ``q . k``). Token sparsity plus channel
sparsity means a decoder reads ``r / head_dim`` of every key and ``k / T`` of the full keys/values.
This module computes the top-k mask for whole sequences (every query at once); the decode-time path
with a label KV cache is :mod:`.double_sparsity`.

Sparsifiner (Wei et al. 2023) learns an instance-dependent connectivity predictor for the same
top-k mask; here the predictor is the calibrated channel subset (training-free).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from ..models.transformer import SelfAttention


def check_label_channels(channels: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Validate label channel ids for a layer of ``num_heads`` heads of ``head_dim`` channels.

    Parameters
    ----------
    channels : array-like of shape (num_heads, r)
    num_heads, head_dim : int

    Returns
    -------
    torch.Tensor of shape (num_heads, r), int64
    """
    channels = torch.as_tensor(channels, dtype=torch.int64)
    if channels.dim() != 2 or channels.shape[0] != num_heads:
        raise SparsecraftError(f"label_channels must be (num_heads={num_heads}, r), got {tuple(channels.shape)}")
    if bool(((channels < 0) | (channels >= head_dim)).any()):
        raise SparsecraftError(f"label_channels must lie in [0, head_dim={head_dim})")
    return channels


class TopKSelfAttention(SelfAttention):
    """:class:`SelfAttention` where each query attends to its ``k`` best keys only.

    Build with :meth:`from_dense` (shares the dense layer's projections). With ``k >= T``, causal
    or not, it computes dense attention. Dropout is not applied.

    Attributes
    ----------
    k : int
        Keys kept per query.
    label_channels : torch.Tensor of shape (num_heads, r), int64, or None
        Channels used to rank keys; None ranks by the exact scores.
    """

    k: int
    label_channels: torch.Tensor | None

    @classmethod
    def from_dense(
        cls, attn: SelfAttention, k: int, label_channels: torch.Tensor | None = None
    ) -> "TopKSelfAttention":
        """A top-k layer sharing the projections of a dense one.

        Parameters
        ----------
        attn : SelfAttention
            The dense layer (its projections are shared, not copied).
        k : int
            Keys kept per query (>= 1).
        label_channels : torch.Tensor of shape (num_heads, r), optional
            Channel ids in [0, head_dim) used to rank keys (see :func:`calibrate_label_channels`).

        Returns
        -------
        TopKSelfAttention
        """
        sparse = cls(attn.q_proj.in_features, attn.num_heads, attn.causal, attn.dropout)
        sparse.num_heads, sparse.head_dim = attn.num_heads, attn.head_dim
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(sparse, name, getattr(attn, name))
        sparse.k = check_positive_int(k, "k")
        if label_channels is not None:
            label_channels = check_label_channels(label_channels, attn.num_heads, attn.head_dim)
        # a non-persistent buffer: moves with .to(), stays out of the state dict (dense-compatible)
        sparse.register_buffer("label_channels", label_channels, persistent=False)
        return sparse

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def _keep(self, q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        length = q.shape[2]
        if self.label_channels is None:
            rank = scores
        else:
            ch = self.label_channels.to(q.device)[None, :, None, :]
            qc = q.gather(-1, ch.expand(*q.shape[:3], ch.shape[-1]))
            kc = k.gather(-1, ch.expand(*k.shape[:3], ch.shape[-1]))
            rank = qc @ kc.transpose(-2, -1)
        valid = self._valid(length, q.device)
        rank = rank.masked_fill(~valid, float("-inf"))
        idx = rank.topk(min(self.k, length), dim=-1).indices
        keep = torch.zeros_like(rank, dtype=torch.bool).scatter_(-1, idx, True)
        return keep & valid

    def _valid(self, length: int, device: torch.device) -> torch.Tensor:
        ones = torch.ones(length, length, dtype=torch.bool, device=device)
        return ones.tril() if self.causal else ones

    def attention_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Which keys each query attends to.

        Parameters
        ----------
        x : torch.Tensor of shape (N, T, d_model)

        Returns
        -------
        torch.Tensor of bool, shape (N, num_heads, T, T)
        """
        q, k, _ = self._qkv(x)
        return self._keep(q, k, q @ k.transpose(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Top-k attention output ``(N, T, d_model)`` for ``x`` ``(N, T, d_model)``."""
        q, k, v = self._qkv(x)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        keep = self._keep(q, k, scores)
        probs = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        return self.out_proj((probs @ v).transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        r = "all" if self.label_channels is None else self.label_channels.shape[1]
        return f"k={self.k}, label_channels={r}"


def _attention_layers(model: nn.Module) -> list[tuple[str, SelfAttention]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, SelfAttention)]
    if not layers:
        raise SparsecraftError("model has no SelfAttention layers (TinyTransformer attention)")
    return layers


@torch.no_grad()
def calibrate_label_channels(model: nn.Module, inputs: torch.Tensor, r: int) -> dict[str, torch.Tensor]:
    """Double Sparsity's offline calibration of label channels.

    For every :class:`SelfAttention` of ``model``, the ``r`` channels per head with the largest
    ``mean|q_c| * mean|k_c|`` over the tokens of ``inputs``.

    Parameters
    ----------
    model : nn.Module
        Run once in eval mode (its training flag is restored).
    inputs : torch.Tensor
        Calibration inputs of the model, e.g. token ids (N, T).
    r : int
        Channels per head, in [1, head_dim].

    Returns
    -------
    dict of str to torch.Tensor
        Layer name -> (num_heads, r) int64 channel ids, sorted ascending.
    """
    r = check_positive_int(r, "r")
    layers = _attention_layers(model)
    sums: dict[str, list[torch.Tensor]] = {}
    handles = []

    def hook(name: str, attn: SelfAttention):  # noqa: ANN202 - torch hook signature
        def pre(module: nn.Module, args: tuple) -> None:
            x = args[0]
            q, k = attn._split(attn.q_proj(x)), attn._split(attn.k_proj(x))
            stats = (q.abs().mean(dim=(0, 2)), k.abs().mean(dim=(0, 2)))
            if name in sums:
                sums[name][0] += stats[0]
                sums[name][1] += stats[1]
            else:
                sums[name] = list(stats)

        return pre

    for name, attn in layers:
        if r > attn.head_dim:
            raise SparsecraftError(f"r ({r}) exceeds head_dim ({attn.head_dim}) of layer {name!r}")
        handles.append(attn.register_forward_pre_hook(hook(name, attn)))
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: (qs * ks).topk(r, dim=-1).indices.sort(dim=-1).values for name, (qs, ks) in sums.items()}


def sparsify_attention(
    model: nn.Module, k: int, label_channels: dict[str, torch.Tensor] | None = None
) -> list[str]:
    """Replace every :class:`SelfAttention` of ``model`` by a :class:`TopKSelfAttention` (in place).

    Projections are shared, not copied. A replaced layer is replaced again (with the new settings)
    on a second call.

    Parameters
    ----------
    model : nn.Module
        Contains the attention layers (not the layer itself).
    k : int
        Keys kept per query.
    label_channels : dict of str to torch.Tensor, optional
        From :func:`calibrate_label_channels`: rank keys with those channels only.

    Returns
    -------
    list of str
        Names of the replaced layers.
    """
    k = check_positive_int(k, "k")
    replaced = []
    modules = dict(model.named_modules())
    for name, attn in _attention_layers(model):
        channels = None
        if label_channels is not None:
            if name not in label_channels:
                raise SparsecraftError(f"label_channels has no entry for attention layer {name!r}")
            channels = label_channels[name]
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        if not child:
            raise SparsecraftError("pass a model that contains SelfAttention, not the layer itself")
        setattr(parent, child, TopKSelfAttention.from_dense(attn, k, channels))
        replaced.append(name)
    return replaced
