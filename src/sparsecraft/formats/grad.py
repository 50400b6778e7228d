"""Packing by mask and the backward pass of ``y = x W^T + b`` over a packed W.

Training a packed layer needs three products per step (for dy = dL/dy of shape (batch, out)):

* forward ``y = x W^T`` - the format's own kernel;
* input gradient ``dx = dy W`` = ``dy (W^T)^T`` - the csr16 kernel over W^T, whose layout
  (row pointer, 16-bit column indices and the permutation from W's value order) is built once per
  mask by :class:`GradLayout`; each step only gathers the current values through the permutation;
* weight gradient at the stored positions only, ``dW[r, c] = sum_b dy[b, r] x[b, c]`` - a sampled
  dense-dense product (SDDMM, ``torch.ops.sparsecraft.sddmm``): 2 * batch * nnz flops instead of
  2 * batch * out * in.

As in "Fast Sparse ConvNets" (Elsen et al. 2019), the sparse operand is the weight and the dense
batch streams through it, so every product costs in proportion to the kept weights. Above
``DENSE_BACKWARD_DENSITY`` of the weights kept (2:4 keeps half) the two backward products run as
dense GEMMs instead (the dense gradient gathered at the kept positions): there the sparse kernels,
at a fraction of a tuned GEMM's flop rate, lose to it (bench/results/sparse_training_speed.md).
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import SparsecraftError
from ..kernels import available
from .base import FORMATS, PackedWeight
from .blocks import MAX_BLOCK_COLS, _to_u16_bits

DENSE_BACKWARD_DENSITY = 0.3


def pack_mask(weight: torch.Tensor, mask: torch.Tensor, format: str = "csr16", **params: Any) -> PackedWeight:
    """Pack the positions ``mask`` keeps, zeros included (a trained weight may pass through zero).

    Parameters
    ----------
    weight : torch.Tensor
        Floating (out_features, in_features).
    mask : torch.Tensor
        Bool, same shape: True where a weight is kept (and will be trained).
    format : str
        A name in :data:`FORMATS`; its stored positions must be exactly the mask's (csr16 and
        bitmask always; block when the mask fills whole blocks; nm when every group keeps N).
    **params
        The format's parameters.

    Returns
    -------
    PackedWeight
        Storing ``weight[mask]`` at the mask's positions, in the format's value order.
    """
    if tuple(mask.shape) != tuple(weight.shape) or weight.dim() != 2:
        raise SparsecraftError(f"mask shape {tuple(mask.shape)} does not match weight {tuple(weight.shape)}")
    mask = mask.to("cpu", torch.bool)
    packed = FORMATS.get(format).pack(mask.to(torch.float32), **params)
    rows, cols = packed.positions()
    out, inp = mask.shape
    inside = (rows < out) & (cols < inp)
    kept = torch.zeros(rows.numel(), dtype=torch.bool)
    kept[inside] = mask[rows[inside], cols[inside]]
    if not bool(kept.all()):
        raise SparsecraftError(f"format {packed.describe()} would store {int((~kept).sum())} weights outside the "
                               "mask (partial blocks or groups); use format 'csr16' to train this mask")
    vals = packed.tensors()["vals"].view(-1)
    vals.copy_(weight.detach().to("cpu", torch.float32)[rows, cols])
    return packed


class GradLayout:
    """The index structures of a packed W's backward pass, built once per mask.

    Parameters
    ----------
    packed : PackedWeight
        W (out, in), every stored position inside W (see :func:`pack_mask`); out <= 65536.

    Attributes
    ----------
    rows, cols : torch.Tensor
        int32 (nnz,): W coordinates of each stored value (the SDDMM's sample positions).
    dense_backward : bool
        More than ``DENSE_BACKWARD_DENSITY`` of W is stored: the backward products run dense.
    flat : torch.Tensor
        int64 (nnz,): ``rows * in + cols``.
    t_rowptr, t_cols, perm : torch.Tensor
        W^T (in, out) as csr16: int32 (in + 1,), int16 (nnz,) and the int64 permutation such that
        W^T's values are ``vals.flatten()[perm]``.
    """

    def __init__(self, packed: PackedWeight) -> None:
        out, inp = packed.shape
        if out > MAX_BLOCK_COLS:
            raise SparsecraftError(f"out_features={out} is above {MAX_BLOCK_COLS}: the transposed weight's 16-bit "
                                   "indices cannot address it; keep this layer dense")
        rows, cols = packed.positions()
        if rows.numel() and (int(rows.max()) >= out or int(cols.max()) >= inp):
            raise SparsecraftError("the packed weight stores positions past its edge (padded blocks); "
                                   "pack it with pack_mask to train it")
        self.shape = (out, inp)
        self.dense_backward = rows.numel() > DENSE_BACKWARD_DENSITY * out * inp
        self.rows, self.cols = rows.to(torch.int32), cols.to(torch.int32)
        self.flat = rows * inp + cols  # int64 position of each stored value in W.view(-1)
        self.perm = torch.argsort(cols * out + rows)
        self.t_rowptr = torch.zeros(inp + 1, dtype=torch.int32)
        self.t_rowptr[1:] = torch.cumsum(torch.bincount(cols, minlength=inp), 0).to(torch.int32)
        self.t_cols = _to_u16_bits(rows[self.perm])

    def input_grad(self, dy: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        """``dx = dy W``.

        Parameters
        ----------
        dy : torch.Tensor
            float32 (batch, out).
        vals : torch.Tensor
            The packed values (any shape, flattened in stored order).

        Returns
        -------
        torch.Tensor
            float32 (batch, in).
        """
        flat = vals.detach().reshape(-1)
        if self.dense_backward or not available():
            return dy @ self.dense(flat)
        vt = flat[self.perm].view(-1, 1, 1)
        return torch.ops.sparsecraft.block_linear(dy.contiguous(), self.t_rowptr, self.t_cols, vt, None,
                                                  self.shape[1], 1, 1)

    def weight_grad(self, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``(dy^T x)`` at the stored positions only.

        Parameters
        ----------
        dy : torch.Tensor
            float32 (batch, out).
        x : torch.Tensor
            float32 (batch, in).

        Returns
        -------
        torch.Tensor
            float32 (nnz,) in stored order.
        """
        if self.dense_backward or not available():
            return (dy.t() @ x).view(-1)[self.flat]
        return torch.ops.sparsecraft.sddmm(dy.contiguous(), x.contiguous(), self.rows, self.cols)

    def dense(self, vals: torch.Tensor) -> torch.Tensor:
        """The dense W (out, in) with ``vals`` (stored order) at the stored positions; differentiable in vals."""
        out, inp = self.shape
        return vals.new_zeros(out * inp).index_put((self.flat,), vals.reshape(-1)).view(out, inp)
