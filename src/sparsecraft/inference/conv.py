"""SparseConv: a Conv1d/Conv2d replacement that runs a sparse weight as a direct convolution over pixels.

After "Fast Sparse ConvNets" (Elsen et al. 2019): activations stay channels-first (NCHW), the weight
W (out, in * kh * kw) is CSR over the outputs, and each output channel's row streams its nonzeros
over a panel of pixels held in registers (``torch.ops.sparsecraft.conv_cf``). A pointwise (1x1)
convolution is a sparse matmul over the pixels; a k x k stride-1 convolution needs no im2col:
the input is zero-padded once and flattened per channel, and a nonzero at (channel c, kernel row
i, column j) reads the input slab starting at ``c * L + i * Wp + j`` (Wp = padded width), so the
outputs come out on the padded-width grid and the last ``kw - 1`` columns of each row are cut.
Strided 1x1 convolutions subsample the input first; strided k x k, dilated and grouped convolutions
are not handled (``convert`` leaves them dense).

When the zeros form R x 1 kernel groups (R = 8 or 4 consecutive output channels share each (input
channel, kernel position): SparseByteNN's fine-grained group pattern, Xu et al. 2023, which is
sparsecraft's ``block8x1`` / ``block4x1`` on the (out, in * kh * kw) view), the weight is R x 1
block-CSR and the same op runs the block kernel: each stored block loads the input pixel panel once
and multiplies it by R broadcast weights into R rows of accumulators, so the SIMD lanes stay full
and the input is read once per block instead of once per weight. :func:`conv_format` picks it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..formats import PackedWeight, pack
from ..formats.blocks import fills_row_blocks
from ..kernels import available as kernels_available

CONV_BLOCK_ROWS = (8, 4)  # R x 1 block heights the block kernel vectorizes, preferred first


def conv_format(flat: torch.Tensor) -> tuple[str, dict[str, int]]:
    """The format for a convolution weight viewed as (out_channels, in_channels * prod(kernel)).

    Returns
    -------
    (str, dict)
        ``('block', {'R': R, 'C': 1})`` for the first R in :data:`CONV_BLOCK_ROWS` whose R x 1 blocks the
        nonzeros fill whole (the blockRx1 pattern), else ``('csr16', {})``.
    """
    for r in CONV_BLOCK_ROWS:
        if fills_row_blocks(flat, r):
            return "block", {"R": r, "C": 1}
    return "csr16", {}


def conv_unsupported(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` cannot become a :class:`SparseConv`, or None when it can.

    Parameters
    ----------
    conv : nn.Conv1d or nn.Conv2d

    Returns
    -------
    str or None
        One phrase (e.g. ``'stride 2 with a 3x3 kernel'``), None when supported.
    """
    ks = tuple(conv.kernel_size)
    pointwise = all(k == 1 for k in ks)
    if conv.groups != 1:
        return f"groups={conv.groups}"
    if any(d != 1 for d in conv.dilation) and not pointwise:
        return f"dilation {tuple(conv.dilation)}"
    if not pointwise and any(s != 1 for s in conv.stride):
        return f"stride {tuple(conv.stride)} with a {'x'.join(map(str, ks))} kernel"
    if isinstance(conv.padding, str) and conv.padding != "valid" and not pointwise:
        return f"padding={conv.padding!r}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if pointwise and any(p != 0 for p in (conv.padding if not isinstance(conv.padding, str) else ())):
        return "a padded 1x1 kernel"
    return None


class SparseConv(nn.Module):
    """``conv(x, W, b)`` for a Conv1d/Conv2d whose weight W is stored as csr16 (any pruning pattern) or as
    R x 1 block-CSR (R = 8 or 4: zeros in kernel groups of R output channels).

    The packed tensors are buffers ``w_rowptr``, ``w_cols``, ``w_vals`` (of the weight viewed as
    (out_channels, in_channels * prod(kernel)); ``w_vals`` flattened, R values per stored block).

    Parameters
    ----------
    packed : PackedWeight
        csr16, or 'block' with C = 1 and R in :data:`CONV_BLOCK_ROWS`, of the flattened weight.
    kernel_size, stride, padding : tuple of int
        As the convolution's (one entry per spatial dimension: 1 for Conv1d, 2 for Conv2d).
    bias : torch.Tensor, optional
        (out_channels,).
    """

    def __init__(self, packed: PackedWeight, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], bias: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        block = packed.format == "block" and packed.params().get("C") == 1 and packed.params()["R"] in CONV_BLOCK_ROWS
        if packed.format != "csr16" and not block:
            raise SparsecraftError(f"SparseConv runs csr16 or R x 1 blocks (R in {CONV_BLOCK_ROWS}), got "
                                   f"{packed.format!r} {packed.params()}; pack with format='csr16'")
        self.R = int(packed.params()["R"]) if block else 1
        self.out_channels = packed.shape[0]
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), tuple(padding)
        self.dims = len(self.kernel_size)
        kk = int(torch.tensor(self.kernel_size).prod())
        if packed.shape[1] % kk:
            raise SparsecraftError(f"weight has {packed.shape[1]} columns, not a multiple of the kernel's {kk}")
        self.in_channels = packed.shape[1] // kk
        self.packed = packed
        for name, t in packed.tensors().items():
            self.register_buffer(f"w_{name}", t.reshape(-1) if name == "vals" else t)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_conv(cls, conv: nn.Module, weight: Optional[torch.Tensor] = None, format: str = "auto") -> "SparseConv":
        """Pack a Conv1d/Conv2d (its ``weight``, or the given masked copy); one-line error when unsupported.

        ``format``: 'auto' (R x 1 blocks when the zeros form them, see :func:`conv_format`) or 'csr16'.
        """
        why = conv_unsupported(conv)
        if why is not None:
            raise SparsecraftError(f"cannot run this convolution sparse ({why}); keep it dense")
        if format not in ("auto", "csr16"):
            raise SparsecraftError(f"convolution format must be 'auto' or 'csr16', got {format!r}")
        w = (conv.weight if weight is None else weight).detach()
        padding = (0,) * (w.dim() - 2) if isinstance(conv.padding, str) else tuple(conv.padding)
        flat = w.reshape(w.shape[0], -1)
        fmt, params = conv_format(flat) if format == "auto" else ("csr16", {})
        return cls(pack(flat, fmt, **params), tuple(conv.kernel_size), tuple(conv.stride), padding,
                   None if conv.bias is None else conv.bias)

    def _xoff(self, plane: int, width: int) -> torch.Tensor:
        """Each nonzero's start in an image's flattened padded input of ``plane`` values per channel."""
        key = (plane, width)
        if key not in self._offsets:
            col = self.w_cols.to(torch.int64) & 0xFFFF
            kk = col.new_tensor(self.kernel_size).prod()
            chan, kpos = col // kk, col % kk
            kw = self.kernel_size[-1]
            off = chan * plane + (kpos // kw) * width + kpos % kw
            self._offsets = {key: off.to(torch.int32)}
        return self._offsets[key]

    def dense_weight(self) -> torch.Tensor:
        """The dense weight (out_channels, in_channels, *kernel_size)."""
        self.packed.vals = self.w_vals.view_as(self.packed.vals)
        return self.packed.to_dense().view(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of x (N, in_channels, *spatial); dense torch conv when x is not float32, needs
        gradients or the native kernels are unavailable."""
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise SparsecraftError(f"input must be (N, {self.in_channels}, {'H, W' if self.dims == 2 else 'L'}), "
                                   f"got {tuple(x.shape)}")
        if x.dtype != torch.float32 or (torch.is_grad_enabled() and x.requires_grad) or not kernels_available():
            conv = F.conv2d if self.dims == 2 else F.conv1d
            return conv(x, self.dense_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                        self.stride, self.padding)
        x4 = x if self.dims == 2 else x.unsqueeze(2)
        kh, kw = (1,) * (2 - self.dims) + self.kernel_size
        if kh == kw == 1:
            sh, sw = (1,) * (2 - self.dims) + self.stride
            if sh > 1 or sw > 1:
                x4 = x4[:, :, ::sh, ::sw]
            n, c, ho, width = x4.shape
            wo, plane = width, ho * width
            flat = x4.reshape(n, c * plane)
        else:
            ph, pw = (0,) * (2 - self.dims) + self.padding
            x4 = F.pad(x4, (pw, pw, ph, ph)) if ph or pw else x4
            n, c, hp, width = x4.shape
            ho, wo, plane = hp - kh + 1, width - kw + 1, hp * width
            if ho <= 0 or wo <= 0:
                raise SparsecraftError(f"input {tuple(x.shape)} is smaller than the kernel {self.kernel_size}")
            flat = F.pad(x4.reshape(n, c * plane), (0, kw - 1))  # the last channel's last row reads kw - 1 past
        y = torch.ops.sparsecraft.conv_cf(flat.contiguous(), self.w_rowptr, self._xoff(plane, width), self.w_vals,
                                          self.bias, self.out_channels, ho * width, self.R)
        y = y.view(n, self.out_channels, ho, width)
        if wo != width:
            y = y[..., :wo]
        return y if self.dims == 2 else y.squeeze(2)

    def extra_repr(self) -> str:
        density = self.packed.stored_values / max(1, self.packed.shape[0] * self.packed.shape[1])
        fmt = f"block{self.R}x1" if self.R > 1 else "csr16"
        return (f"{self.in_channels}, {self.out_channels}, format={fmt}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, density={density:.3f}")
