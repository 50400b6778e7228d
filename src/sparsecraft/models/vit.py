"""A tiny vision transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") whose
attention can be restricted to a set of keys per query.

Images ``(N, C, H, W)`` are optionally upsampled (bilinear) by an integer factor, cut into
``patch x patch`` patches in row-major order (``T = (H s / p) (W s / p)`` tokens of ``C p^2``
features), embedded by a Linear plus learned positions, run through pre-LayerNorm blocks and
mean-pooled into the class logits. Every :class:`PatchAttention` computes dense softmax attention,
or, when given ``keys`` (``(N, heads, T, B)`` indices), attention over only those ``B`` keys per query:
the gathered computation costs ``O(T B)`` instead of ``O(T^2)``. Who chooses the keys is outside the
model: ``sparsecraft.representations.sparsifiner`` (a learned connectivity predictor) or fixed local
windows (:func:`local_window_keys`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError, check_positive_int
from .base import MODELS, DataSpec, require_task
from .transformer import FeedForward

KeySelector = Callable[["PatchAttention", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PatchAttention(nn.Module):
    """Multi-head self-attention ``(N, T, d) -> (N, T, d)`` with optional per-query key sets.

    ``selector``, when set (:meth:`set_selector`), is called as ``selector(self, x, q, k)`` with the
    block input ``x`` ``(N, T, d)`` and the split queries/keys ``(N, heads, T, head_dim)`` and returns
    key indices ``(N, heads, T, B)``; attention then runs over those keys only. With ``record`` set,
    a forward keeps ``last_attention`` (the dense map ``(N, heads, T, T)``, dense layers) or
    ``last_keys`` (the key indices, sparse layers).
    """

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise SparsecraftError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.selector: KeySelector | None = None
        self.last_attention: torch.Tensor | None = None
        self.last_keys: torch.Tensor | None = None
        self.record = False

    def set_selector(self, selector: KeySelector | None) -> None:
        """Install (or, with ``None``, remove) the key selector; an ``nn.Module`` selector becomes a
        submodule, so its parameters train and save with the model."""
        self._modules.pop("selector", None)
        self.__dict__.pop("selector", None)
        self.selector = selector

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if self.selector is None:
            if self.record:  # the dense attention map, for distillation targets
                probs = (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).softmax(-1)
                self.last_attention = probs
                out = probs @ v
            else:
                out = F.scaled_dot_product_attention(q, k, v)
        else:
            keys = self.selector(self, x, q, k)
            if self.record:
                self.last_keys = keys
            out = attend_to_keys(q, k, v, keys)
        return self.out_proj(out.transpose(1, 2).flatten(2))


def attend_to_keys(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Softmax attention of each query over its own key set, computed on the gathered keys only.

    Parameters
    ----------
    q, k, v : torch.Tensor of shape (N, H, T, D)
    keys : torch.Tensor of int64, shape (N, H, T, B)
        Key positions per query (``B`` of them, each in ``[0, T)``).

    Returns
    -------
    torch.Tensor of shape (N, H, T, D)
    """
    n, h, t, d = q.shape
    bi = torch.arange(n, device=q.device).view(n, 1, 1, 1)
    hi = torch.arange(h, device=q.device).view(1, h, 1, 1)
    k_sel, v_sel = k[bi, hi, keys], v[bi, hi, keys]  # (N, H, T, B, D)
    scores = (q.unsqueeze(3) * k_sel).sum(-1) / math.sqrt(d)
    return (scores.softmax(-1).unsqueeze(-1) * v_sel).sum(3)


def local_window_keys(grid: int, budget: int) -> torch.Tensor:
    """Fixed local attention: each patch's ``budget`` nearest patches on the ``grid x grid`` lattice.

    Parameters
    ----------
    grid : int
        Patches per side (``T = grid^2``, row-major).
    budget : int
        Keys per query, in ``[1, T]``; nearest by Euclidean distance, ties by index (itself first).

    Returns
    -------
    torch.Tensor of int64, shape (T, budget)
    """
    grid = check_positive_int(grid, "grid")
    tokens = grid * grid
    if not 1 <= budget <= tokens:
        raise SparsecraftError(f"budget must be in [1, {tokens}] keys per query, got {budget}")
    pos = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    dist = (pos[:, None] - pos[None]).float().pow(2).sum(-1)
    order = (dist * tokens + torch.arange(tokens).float()).argsort(dim=1)  # distance, then index
    return order[:, :budget]


class ViTBlock(nn.Module):
    """Pre-LN block ``x + attn(ln1(x))``, ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = PatchAttention(d_model, num_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, mlp_ratio * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


@MODELS.register("vit")
class TinyViT(nn.Module):
    """Patch-based image classifier ``(N, C, H, W) -> (N, num_classes)``.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    image_size : int
        H = W of the input (before upsampling).
    patch_size : int, default=2
        Side of a square patch, after upsampling; must divide ``image_size * upsample``.
    upsample : int, default=2
        Integer bilinear upsampling factor applied first (8x8 digits -> 16x16 -> 64 patches of 2x2).
    d_model, num_heads, num_layers, mlp_ratio : int
    """

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, patch_size: int = 2, upsample: int = 2,
        d_model: int = 64, num_heads: int = 4, num_layers: int = 4, mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.upsample = check_positive_int(upsample, "upsample")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        side = check_positive_int(image_size, "image_size") * self.upsample
        if side % self.patch_size:
            raise SparsecraftError(f"patch_size {patch_size} does not divide the upsampled image side {side}")
        self.image_size = image_size
        self.grid = side // self.patch_size
        in_features = check_positive_int(in_channels, "in_channels") * self.patch_size ** 2
        self.embed = nn.Linear(in_features, check_positive_int(d_model, "d_model"))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 2, d_model))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            ViTBlock(d_model, check_positive_int(num_heads, "num_heads"), check_positive_int(mlp_ratio, "mlp_ratio"))
            for _ in range(check_positive_int(num_layers, "num_layers"))
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, check_positive_int(num_classes, "num_classes"))

    @property
    def num_tokens(self) -> int:
        """Patches per image, T."""
        return self.grid ** 2

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` images -> ``(N, T, C p^2)`` patches in row-major order."""
        if x.dim() != 4 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise SparsecraftError(
                f"TinyViT expects images (N, C, {self.image_size}, {self.image_size}), got {tuple(x.shape)}"
            )
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        p = self.patch_size
        n, c = x.shape[:2]
        x = x.unfold(2, p, p).unfold(3, p, p)  # (N, C, g, g, p, p)
        return x.permute(0, 2, 3, 1, 4, 5).reshape(n, self.grid ** 2, c * p * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.patches(x)) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h.mean(dim=1)))

    def attentions(self) -> list[PatchAttention]:
        """The attention modules, first block first."""
        return [block.attn for block in self.blocks]

    @classmethod
    def for_data(cls, spec: DataSpec, **kwargs: Any) -> "TinyViT":
        """Sized for square images ``(C, S, S)``."""
        require_task("vit", spec, "classification")
        shape = spec.input_shape
        if len(shape) != 3 or shape[1] != shape[2]:
            raise SparsecraftError(f"model 'vit' needs square images shaped (C, S, S), got {shape}")
        return cls(spec.num_classes, in_channels=shape[0], image_size=shape[1], **kwargs)


__all__ = ["PatchAttention", "TinyViT", "ViTBlock", "attend_to_keys", "local_window_keys"]
