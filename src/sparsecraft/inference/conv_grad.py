"""The backward pass of a sparse convolution, with the two ops the forward already uses.

:class:`~sparsecraft.inference.SparseConv` runs ``y = conv(x, W)`` directly over channels-first pixels
(``conv_cf``: one flattened, zero-padded input per image, each nonzero reading the slab at its offset).
Its gradients, for dy of shape (N, out, Ho, Wo), lower onto the same kernels:

* input gradient: a stride-1 convolution's adjoint is the convolution of dy, zero-padded by
  ``k - 1 - padding``, with the transposed, spatially flipped weight
  ``W'[c, o, kh-1-i, kw-1-j] = W[o, c, i, j]`` - so ``conv_cf`` again, over W' as csr16 with one row
  per input channel (its rows and value permutation are :class:`~sparsecraft.formats.grad.GradLayout`'s
  W^T, read every ``prod(kernel)``-th row). A strided 1x1 convolution scatters the result back onto
  the input's stride grid.
* weight gradient at the kept positions only: ``dW[o, c, i, j] = sum_{n,p} dy[n, o, p] xpad[n, c, p + i Wp + j]``.
  The padded input is copied once channel-major, (in, N x plane) with plane = Hp x Wp, and dy placed on
  the same grid (zero at the cut columns and the bottom ``kh - 1`` rows, so reads that run past an image
  into the next meet zeros). For each kernel position (i, j) the shifted input is then the same buffer
  offset by ``i Wp + j``, and the kept weights at that position are SDDMMs (``torch.ops.sparsecraft.sddmm``)
  over the N x plane pixel rows, taken in chunks whose dy and input rows stay in cache (every kept weight
  re-reads them): ~2 x pixels x nnz flops in all.
* bias gradient: dy summed over the batch and pixels.

References: Elsen et al. 2019, "Fast Sparse ConvNets" (the channels-first direct sparse convolution);
the adjoint of a convolution is the standard "full" correlation with the flipped kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..formats.grad import GradLayout

SDDMM_CHUNK_FLOATS = 1 << 18  # pixel rows per SDDMM call x max(channels): ~256 KB of dy and of input rows per
# chunk, so the dot products of every kept weight over that chunk read cached rows instead of streaming memory


@dataclass(frozen=True)
class Geometry:
    """One call's shapes on the 2-D (N, C, H, W) view (a Conv1d has H = 1).

    Attributes
    ----------
    n, height, width_in : int
        Batch and the input's spatial size as given (before padding or subsampling).
    ho, wo : int
        The output's spatial size.
    width, plane : int
        The flattened input's row width (padded) and values per channel.
    kh, kw, ph, pw, sh, sw : int
        Kernel, padding and stride (stride > 1 only for 1x1 kernels).
    """

    n: int
    height: int
    width_in: int
    ho: int
    wo: int
    width: int
    plane: int
    kh: int
    kw: int
    ph: int
    pw: int
    sh: int
    sw: int


class ConvGradLayout:
    """Per-mask index structures of a sparse convolution's backward, derived from its :class:`GradLayout`.

    Parameters
    ----------
    layout : GradLayout
        Of the weight viewed as (out, in * kh * kw).
    in_channels, kh, kw : int

    Attributes
    ----------
    base : GradLayout
        ``layout``.
    by_position : list of (int, Tensor, Tensor, Tensor)
        For each kernel position (flattened ``i * kw + j``) holding kept weights: the position, the
        kept weights' indices in stored order (int64), their output channels and input channels (int32).
    t_rowptr : torch.Tensor
        int32 (in_channels + 1,): W' rows (one per input channel) into ``base.perm``.
    """

    def __init__(self, layout: GradLayout, in_channels: int, kh: int, kw: int) -> None:
        kk = kh * kw
        self.base, self.kh, self.kw = layout, kh, kw
        cols = layout.cols.to(torch.int64)
        chan, kpos = cols // kk, cols % kk
        self.by_position: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for p in torch.unique(kpos).tolist():
            idx = torch.nonzero(kpos == p).view(-1)
            self.by_position.append((p, idx, layout.rows[idx].contiguous(), chan[idx].to(torch.int32)))
        self.t_rowptr = layout.t_rowptr[::kk].contiguous()
        out = layout.rows.to(torch.int64)[layout.perm]
        tk = kpos[layout.perm]
        self._t_out, self._t_i, self._t_j = out, kh - 1 - tk // kw, kw - 1 - tk % kw
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}
        self.in_channels = in_channels

    def transposed_offsets(self, plane: int, width: int) -> torch.Tensor:
        """int32 offsets of W' into a flattened padded dy of ``plane`` values per channel, rows ``width`` wide."""
        key = (plane, width)
        if key not in self._offsets:
            self._offsets = {key: (self._t_out * plane + self._t_i * width + self._t_j).to(torch.int32)}
        return self._offsets[key]

    def weight_grad(self, dy: torch.Tensor, flat: torch.Tensor, geo: Geometry,
                    dense: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``dL/dW`` at the kept positions (stored order, (nnz,)); also the full one into ``dense``.

        Parameters
        ----------
        dy : torch.Tensor
            float32 (N, out, Ho, Wo).
        flat : torch.Tensor
            float32 (N, L): the forward's flattened padded input.
        geo : Geometry
        dense : torch.Tensor, optional
            float32 (out, in, kh * kw), zero on entry: the dense weight gradient is added into it.

        Returns
        -------
        torch.Tensor
            float32 (nnz,).
        """
        out, cin, plane = dy.shape[1], self.in_channels, geo.plane
        rows = geo.n * plane
        g = dy.new_zeros(out, geo.n, plane // geo.width, geo.width)  # dy on the padded input's grid
        g[:, :, : geo.ho, : geo.wo] = dy.transpose(0, 1)
        g = g.view(out, rows)
        tail = (self.kh - 1) * geo.width + self.kw - 1
        xcm = flat.new_empty(cin * rows + tail)
        xcm[cin * rows:] = 0
        xcm[: cin * rows].view(cin, geo.n, plane).copy_(flat[:, : cin * plane].view(geo.n, cin, plane).transpose(0, 1))
        dv = flat.new_zeros(self.base.rows.numel())
        positions = range(self.kh * self.kw) if dense is not None else [p for p, *_ in self.by_position]
        kept = {p: (idx, r, c) for p, idx, r, c in self.by_position}
        chunk = max(256, SDDMM_CHUNK_FLOATS // max(cin, out))
        for c0 in range(0, rows, chunk):
            c1 = min(rows, c0 + chunk)
            gc = g[:, c0:c1].contiguous()
            for p in positions:
                x = xcm.as_strided((cin, c1 - c0), (rows, 1), c0 + (p // self.kw) * geo.width + p % self.kw)
                x = x.contiguous()
                if p in kept:
                    idx, r, c = kept[p]
                    dv[idx] += torch.ops.sparsecraft.sddmm(gc.t(), x.t(), r, c)
                if dense is not None:
                    dense[:, :, p] += gc @ x.t()
        return dv

    def input_grad(self, dy: torch.Tensor, vals: torch.Tensor, geo: Geometry) -> torch.Tensor:
        """``dL/dx`` for dy (N, out, Ho, Wo); returns float32 (N, in, H, W) (the unpadded input's shape)."""
        ph, pw = self.kh - 1 - geo.ph, self.kw - 1 - geo.pw
        dyp = F.pad(dy, (pw, pw, ph, ph)) if ph or pw else dy
        n, out, hq, wq = dyp.shape
        dflat = dyp.reshape(n, out * hq * wq)
        if self.kw > 1:
            dflat = F.pad(dflat, (0, self.kw - 1))
        hx = hq - self.kh + 1
        vt = vals.detach().reshape(-1)[self.base.perm]
        dx = torch.ops.sparsecraft.conv_cf(dflat.contiguous(), self.t_rowptr, self.transposed_offsets(hq * wq, wq),
                                           vt, None, self.in_channels, hx * wq, 1).view(n, self.in_channels, hx, wq)
        dx = dx[..., : wq - self.kw + 1]
        if geo.sh == 1 and geo.sw == 1:
            return dx
        full = dx.new_zeros(n, self.in_channels, geo.height, geo.width_in)
        full[:, :, :: geo.sh, :: geo.sw] = dx
        return full


class PackedConvFn(torch.autograd.Function):
    """``y = conv(x, W) + b`` over a trainable SparseConv's packed W: forward by ``conv_cf``, ``dx`` by
    ``conv_cf`` over the flipped W^T, ``dW`` by one SDDMM per kernel position, ``db`` as dy's sum."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, vals: torch.Tensor, bias: Optional[torch.Tensor],
                layer: Any) -> torch.Tensor:
        flat, geo = layer.lower(x)
        ctx.layer, ctx.geo, ctx.layout, ctx.dims = layer, geo, layer.conv_layout(), x.dim() - 2
        ctx.save_for_backward(flat, vals)
        return layer.run_lowered(flat, geo, vals.detach(), None if bias is None else bias.detach())

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        flat, vals = ctx.saved_tensors
        layout: ConvGradLayout = ctx.layout
        geo: Geometry = ctx.geo
        dy4 = (dy if ctx.dims == 2 else dy.unsqueeze(2)).contiguous()
        dx = dv = db = None
        if ctx.needs_input_grad[0]:
            dx = layout.input_grad(dy4, vals, geo)
            dx = dx if ctx.dims == 2 else dx.squeeze(2)
        dense = None
        if ctx.layer.dense_grad:
            dense = dy4.new_zeros(dy4.shape[1], layout.in_channels, layout.kh * layout.kw)
        if ctx.needs_input_grad[1] or dense is not None:
            dv = layout.weight_grad(dy4, flat, geo, dense).view_as(vals)
        if dense is not None:
            ctx.layer.store_dense_grad(dense)
        if ctx.needs_input_grad[2]:
            db = dy4.sum((0, 2, 3))
        return dx, dv if ctx.needs_input_grad[1] else None, db, None
