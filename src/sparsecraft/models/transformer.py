"""A tiny pre-LayerNorm transformer (Vaswani et al. 2017, "Attention Is All You Need") built only
from ``nn.Linear``, ``nn.LayerNorm`` and ``nn.Embedding`` so pruning code sees plain layers.

Attention uses separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linears (not
``nn.MultiheadAttention``): head ``h`` owns rows ``h*head_dim:(h+1)*head_dim`` of q/k/v and the
same columns of ``out_proj``, so heads can be masked or removed like channels.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from .base import MODELS, DataSpec


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``(N, T, d_model) -> (N, T, d_model)``.

    ``num_heads`` and ``head_dim`` are read at every forward, so code that removes heads may shrink
    the projections and update these attributes.
    """

    def __init__(self, d_model: int, num_heads: int, causal: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise SparsecraftError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.causal = causal
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=self.causal)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """``fc2(act(fc1(x)))`` with hidden width ``mlp_ratio * d_model``; ``act`` is an ``nn.GELU``
    module (not a function call) so activation hooks and top-k activation sparsity can reach it."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.act: nn.Module = nn.GELU()
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN residual block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads, causal, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, mlp_ratio * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


@MODELS.register("transformer")
class TinyTransformer(nn.Module):
    """Encoder classifier or causal decoder LM.

    Inputs, by constructor arguments:

    * ``vocab_size`` set: int64 token ids ``(N, T)``, embedded by ``self.embed`` (``nn.Embedding``).
    * ``in_channels`` and ``patch_size`` set: float ``(N, C, *spatial)``; the flattened spatial axis
      is cut into patches of ``patch_size`` positions, giving ``T = prod(spatial) / patch_size``
      tokens of ``C * patch_size`` features, projected by ``self.embed`` (``nn.Linear``). For an
      8x8 image with ``patch_size=8`` each row is a token.

    ``causal=False``: mean-pool the tokens, final LayerNorm, ``head`` -> ``(N, num_classes)``.
    ``causal=True``: causal attention, ``head`` on every token -> ``(N, T, num_classes)`` (for an
    LM, ``num_classes == vocab_size``). ``T`` may not exceed ``max_len``.
    """

    def __init__(
        self,
        num_classes: int,
        vocab_size: int | None = None,
        in_channels: int | None = None,
        patch_size: int | None = None,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        mlp_ratio: int = 4,
        max_len: int = 128,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (vocab_size is None) == (in_channels is None or patch_size is None):
            raise SparsecraftError(
                "TinyTransformer needs either vocab_size (token inputs) or in_channels and patch_size "
                "(float inputs), not both"
            )
        d_model = check_positive_int(d_model, "d_model")
        self.patch_size = patch_size
        self.causal = causal
        self.max_len = check_positive_int(max_len, "max_len")
        if vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(check_positive_int(vocab_size, "vocab_size"), d_model)
        else:
            in_features = check_positive_int(in_channels, "in_channels") * check_positive_int(
                patch_size, "patch_size"
            )
            self.embed = nn.Linear(in_features, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, d_model))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(d_model, check_positive_int(num_heads, "num_heads"), mlp_ratio, causal, dropout)
            for _ in range(check_positive_int(num_layers, "num_layers"))
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, check_positive_int(num_classes, "num_classes"))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Turn a raw input batch into ``(N, T, d_model)`` embeddings plus positions."""
        if isinstance(self.embed, nn.Embedding):
            h = self.embed(x)
        else:
            n, c = x.shape[:2]
            flat = x.reshape(n, c, -1)
            if flat.shape[-1] % self.patch_size:
                raise SparsecraftError(
                    f"input length {flat.shape[-1]} is not divisible by patch_size {self.patch_size}"
                )
            patches = flat.view(n, c, -1, self.patch_size).permute(0, 2, 1, 3).flatten(2)
            h = self.embed(patches)
        if h.shape[1] > self.max_len:
            raise SparsecraftError(f"sequence of {h.shape[1]} tokens exceeds max_len {self.max_len}")
        return h + self.pos_embed[:, : h.shape[1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)
        for block in self.blocks:
            h = block(h)
        if self.causal:
            return self.head(self.norm(h))
        return self.head(self.norm(h.mean(dim=1)))

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> "TinyTransformer":
        """Token LM for ``task == "lm"`` (causal, vocab = num_classes); otherwise a patch classifier
        (rows of an image, or ~sqrt(L)-long patches of a signal)."""
        if spec.task == "lm":
            kwargs.setdefault("causal", True)
            kwargs.setdefault("max_len", spec.input_shape[0])
            return cls(spec.num_classes, vocab_size=spec.num_classes, **kwargs)
        if len(spec.input_shape) < 2:
            raise SparsecraftError(
                f"model 'transformer' needs inputs shaped (C, ...), got {spec.input_shape}"
            )
        spatial = spec.input_shape[1:]
        length = math.prod(spatial)
        if "patch_size" not in kwargs:
            kwargs["patch_size"] = spatial[-1] if len(spatial) > 1 else _patch_for(length)
        kwargs.setdefault("max_len", max(length // kwargs["patch_size"], 1))
        return cls(spec.num_classes, in_channels=spec.input_shape[0], **kwargs)


def _patch_for(length: int) -> int:
    """The largest divisor of ``length`` not above ``sqrt(length)`` (40 -> 5, so 8 tokens)."""
    return max(d for d in range(1, math.isqrt(length) + 1) if length % d == 0)
