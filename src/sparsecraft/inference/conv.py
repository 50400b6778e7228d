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

:meth:`SparseConv.trainable` trains the kept weights on the same kernels (:mod:`.conv_grad`: the input
gradient is ``conv_cf`` over the flipped transposed weight, the weight gradient one SDDMM per kernel
position), for every convolution this class runs whose padding is at most ``kernel - 1``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..formats import PackedWeight, pack
from ..formats.blocks import MAX_BLOCK_COLS, fills_row_blocks
from ..formats.grad import pack_mask
from ..kernels import available as kernels_available
from .conv_grad import ConvGradLayout, Geometry, PackedConvFn
from .dispatch import Dispatcher, batch_bucket, default_dispatcher
from .linear import MODES
from .trainable import TrainableValues

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


def conv_train_unsupported(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` cannot train as a :class:`SparseConv` (:meth:`SparseConv.trainable`), or None when it can.

    Parameters
    ----------
    conv : nn.Conv1d or nn.Conv2d

    Returns
    -------
    str or None
        One phrase; None when supported (everything :func:`conv_unsupported` accepts, with padding at
        most ``kernel - 1`` per side, under 65536 output channels and in_channels x kernel columns).
    """
    why = conv_unsupported(conv)
    if why is not None:
        return why
    padding = (0,) * len(conv.kernel_size) if isinstance(conv.padding, str) else tuple(conv.padding)
    if any(p > k - 1 for p, k in zip(padding, conv.kernel_size)):
        return f"padding {padding} wider than kernel - 1"
    cols = conv.weight[0].numel()
    if cols > MAX_BLOCK_COLS or conv.weight.shape[0] > MAX_BLOCK_COLS:
        return f"a {conv.weight.shape[0]} x {cols} weight exceeds the 16-bit indices"
    return None


class SparseConv(TrainableValues, nn.Module):
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
    mode : {'sparse', 'auto', 'dense'}
        'sparse': always the kernel; 'auto': per input shape (batch bucket and spatial size), the faster
        of the kernel and torch's dense convolution, measured once by the dispatcher (``choices`` keeps
        each decision); 'dense': torch's convolution on the unpacked weight. Inference only: a trainable
        layer under autograd always trains as :meth:`forward` says.
    dispatcher : Dispatcher, optional
        Where 'auto' measures and caches; :func:`default_dispatcher` when None.
    """

    def __init__(self, packed: PackedWeight, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], bias: Optional[torch.Tensor] = None, mode: str = "sparse",
                 dispatcher: Optional[Dispatcher] = None) -> None:
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
        self.format, self.format_params = packed.format, packed.params()
        self.weight_shape = (self.out_channels, self.in_channels, *self.kernel_size)
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}
        self._conv_layout: Optional[ConvGradLayout] = None
        if mode not in MODES:
            raise SparsecraftError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode, self.dispatcher = mode, dispatcher
        self.choices: dict[tuple[int, ...], str] = {}
        self._init_values()

    @classmethod
    def from_conv(cls, conv: nn.Module, weight: Optional[torch.Tensor] = None, format: str = "auto",
                  mode: str = "sparse", dispatcher: Optional[Dispatcher] = None) -> "SparseConv":
        """Pack a Conv1d/Conv2d (its ``weight``, or the given masked copy); one-line error when unsupported.

        ``format``: 'auto' (R x 1 blocks when the zeros form them, see :func:`conv_format`) or 'csr16';
        ``mode``, ``dispatcher``: as in the class.
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
                   None if conv.bias is None else conv.bias, mode, dispatcher)

    @classmethod
    def trainable(cls, conv: nn.Module, mask: torch.Tensor, format: str = "auto") -> "SparseConv":
        """A layer over ``conv``'s kept weights (``mask``) that trains them: ``w_vals`` is a parameter
        holding only those; ``conv.bias`` is kept as this very parameter.

        Parameters
        ----------
        conv : nn.Conv1d or nn.Conv2d
            Supported when :func:`conv_train_unsupported` says None.
        mask : torch.Tensor
            Bool, ``conv.weight``'s shape: the kept positions (kept zeros stay stored and train).
        format : {'auto', 'csr16'}
            'auto': R x 1 block-CSR when the mask fills whole R x 1 kernel groups (:func:`conv_format`).

        Returns
        -------
        SparseConv
            Output and gradients equal those of the convolution with weight ``conv.weight * mask``
            (to fp32 rounding).
        """
        why = conv_train_unsupported(conv)
        if why is not None:
            raise SparsecraftError(f"cannot train this convolution sparse ({why}); keep it masked-dense")
        if format not in ("auto", "csr16"):
            raise SparsecraftError(f"convolution format must be 'auto' or 'csr16', got {format!r}")
        w = conv.weight.detach()
        if tuple(mask.shape) != tuple(w.shape):
            raise SparsecraftError(f"mask shape {tuple(mask.shape)} does not match weight {tuple(w.shape)}")
        flat_mask = mask.reshape(w.shape[0], -1).to(torch.bool)
        fmt, params = conv_format(flat_mask.to(torch.float32)) if format == "auto" else ("csr16", {})
        packed = pack_mask(w.reshape(w.shape[0], -1), flat_mask, fmt, **params)
        padding = (0,) * (w.dim() - 2) if isinstance(conv.padding, str) else tuple(conv.padding)
        layer = cls(packed, tuple(conv.kernel_size), tuple(conv.stride), padding)
        layer._set_values(nn.Parameter(packed.tensors()["vals"]))
        layer.bias = conv.bias
        return layer

    def conv_layout(self) -> ConvGradLayout:
        """The backward's index structures (:class:`~.conv_grad.ConvGradLayout`), built once per mask."""
        layout = self.grad_layout()
        if self._conv_layout is None or self._conv_layout.base is not layout:
            kh, kw = (1,) * (2 - self.dims) + self.kernel_size
            self._conv_layout = ConvGradLayout(layout, self.in_channels, kh, kw)
        return self._conv_layout

    def _forget_mask_derived(self) -> None:
        self._offsets, self._conv_layout, self.choices = {}, None, {}

    def path_for(self, x: torch.Tensor) -> str:
        """'sparse' or 'dense': the path an inference call on ``x`` takes (see ``mode``); in 'auto' the first
        call with a new (batch bucket, spatial size) measures (eager mode only; compiling takes 'sparse')."""
        if self.mode != "auto":
            return self.mode
        key = (batch_bucket(int(x.shape[0])), *x.shape[2:])
        choice = self.choices.get(key)
        if choice is None:
            if torch.compiler.is_compiling():
                return "sparse"
            choice = (self.dispatcher or default_dispatcher()).choose_conv(self, x)
            self.choices[key] = choice
        return choice

    def dense_module(self) -> nn.Module:
        """A plain Conv1d / Conv2d with this layer's weight (pruned weights exactly zero) and bias."""
        cls = nn.Conv2d if self.dims == 2 else nn.Conv1d
        conv = cls(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                   bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

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
        """The dense weight (out_channels, in_channels, *kernel_size), a copy."""
        return self._dense_view().clone()

    def _dense_view(self) -> torch.Tensor:
        """:attr:`weight` (rebuilt only when the values changed) over the current value buffer."""
        if not self.is_trainable:
            self.packed.vals = self.w_vals.view_as(self.packed.vals)
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of x (N, in_channels, *spatial). A trainable layer under autograd runs its backward
        on the kernels too (:class:`~.conv_grad.PackedConvFn`) unless its density is above
        ``DENSE_BACKWARD_DENSITY`` (then torch's dense convolution over the dense view trains it); otherwise
        torch's dense convolution when x is not float32, needs gradients or the native kernels are unavailable."""
        if x.dim() != self.dims + 2 or x.shape[1] != self.in_channels:
            raise SparsecraftError(f"input must be (N, {self.in_channels}, {'H, W' if self.dims == 2 else 'L'}), "
                                   f"got {tuple(x.shape)}")
        native = x.dtype == torch.float32 and kernels_available()
        conv = F.conv2d if self.dims == 2 else F.conv1d
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.is_trainable and torch.is_grad_enabled():
            if native and not self.grad_layout().dense_backward:
                return PackedConvFn.apply(x, self.w_vals, self.bias, self)
            return conv(x, self.differentiable_dense().to(x.dtype), bias, self.stride, self.padding)
        if not native or (torch.is_grad_enabled() and x.requires_grad) or self.path_for(x) == "dense":
            return conv(x, self._dense_view().to(x.dtype), bias, self.stride, self.padding)
        flat, geo = self.lower(x)
        return self.run_lowered(flat, geo, self.w_vals, self.bias)

    def lower(self, x: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """x (N, in_channels, *spatial) as ``conv_cf`` reads it: (N, L) per image, zero-padded and flattened
        (1x1: subsampled by the stride), and the call's :class:`~.conv_grad.Geometry`."""
        x4 = x if self.dims == 2 else x.unsqueeze(2)
        height, width_in = x4.shape[2], x4.shape[3]
        kh, kw = (1,) * (2 - self.dims) + self.kernel_size
        sh, sw = (1,) * (2 - self.dims) + self.stride
        ph, pw = (0,) * (2 - self.dims) + self.padding
        if kh == kw == 1:
            if sh > 1 or sw > 1:
                x4 = x4[:, :, ::sh, ::sw]
            n, c, ho, width = x4.shape
            wo, plane = width, ho * width
            flat = x4.reshape(n, c * plane)
        else:
            x4 = F.pad(x4, (pw, pw, ph, ph)) if ph or pw else x4
            n, c, hp, width = x4.shape
            ho, wo, plane = hp - kh + 1, width - kw + 1, hp * width
            if ho <= 0 or wo <= 0:
                raise SparsecraftError(f"input {tuple(x.shape)} is smaller than the kernel {self.kernel_size}")
            flat = F.pad(x4.reshape(n, c * plane), (0, kw - 1))  # the last channel's last row reads kw - 1 past
        geo = Geometry(n, height, width_in, ho, wo, width, plane, kh, kw, ph, pw, sh, sw)
        return flat.contiguous(), geo

    def run_lowered(self, flat: torch.Tensor, geo: Geometry, vals: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``conv_cf`` over a :meth:`lower`-ed input; returns (N, out_channels, *output spatial)."""
        y = torch.ops.sparsecraft.conv_cf(flat, self.w_rowptr, self._xoff(geo.plane, geo.width), vals.reshape(-1),
                                          bias, self.out_channels, geo.ho * geo.width, self.R)
        y = y.view(geo.n, self.out_channels, geo.ho, geo.width)
        if geo.wo != geo.width:
            y = y[..., :geo.wo]
        return y if self.dims == 2 else y.squeeze(2)

    def extra_repr(self) -> str:
        density = self.packed.stored_values / max(1, self.packed.shape[0] * self.packed.shape[1])
        fmt = f"block{self.R}x1" if self.R > 1 else "csr16"
        return (f"{self.in_channels}, {self.out_channels}, format={fmt}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, density={density:.3f}, "
                f"mode={self.mode}")
