"""Fake (meta) implementations of the native ops (block_linear, nm_linear, bitmask_linear, q8_linear,
sddmm, conv_cf):
output shape and dtype only, so converted models trace under torch.compile. ``residual`` and ``act``
are the fused epilogue (``y = act(x W^T + bias + residual)``, act 0: none, 1: GELU)."""
from __future__ import annotations

from typing import Optional

import torch


@torch.library.register_fake("sparsecraft::block_linear")
def _block_linear_fake(x: torch.Tensor, rowptr: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor,
                       bias: Optional[torch.Tensor], out_features: int, R: int, C: int,
                       residual: Optional[torch.Tensor] = None, act: int = 0) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features))


@torch.library.register_fake("sparsecraft::nm_linear")
def _nm_linear_fake(x: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, bias: Optional[torch.Tensor],
                    N: int, M: int, residual: Optional[torch.Tensor] = None, act: int = 0) -> torch.Tensor:
    return x.new_empty((x.shape[0], vals.shape[0]))


@torch.library.register_fake("sparsecraft::bitmask_linear")
def _bitmask_linear_fake(x: torch.Tensor, rowptr: torch.Tensor, masks: torch.Tensor, vals: torch.Tensor,
                         bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                         act: int = 0) -> torch.Tensor:
    return x.new_empty((x.shape[0], masks.shape[0]))


@torch.library.register_fake("sparsecraft::q8_linear")
def _q8_linear_fake(x: torch.Tensor, rowptr: Optional[torch.Tensor], cols: Optional[torch.Tensor], q: torch.Tensor,
                    scales: torch.Tensor, bias: Optional[torch.Tensor], out_features: int, group: int,
                    residual: Optional[torch.Tensor] = None, act: int = 0, R: int = 1) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features))


@torch.library.register_fake("sparsecraft::sddmm")
def _sddmm_fake(dy: torch.Tensor, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return x.new_empty((rows.shape[0],))


@torch.library.register_fake("sparsecraft::conv_cf")
def _conv_cf_fake(x: torch.Tensor, rowptr: torch.Tensor, xoff: torch.Tensor, vals: torch.Tensor,
                  bias: Optional[torch.Tensor], out_channels: int, P: int, R: int = 1) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_channels, P))
