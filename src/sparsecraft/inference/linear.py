"""SparseLinear: an nn.Linear replacement that runs a packed weight through the native kernels, and trains.

Training (:meth:`SparseLinear.trainable`) keeps only the stored values as a parameter, so the
optimizer's state is nnz long; forward, input gradient and weight gradient all run sparse
(see :mod:`sparsecraft.formats.grad`).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..formats import PackedWeight
from ..formats.grad import GradLayout, pack_mask
from ..kernels import available as kernels_available
from .dispatch import Dispatcher, batch_bucket, default_dispatcher
from .trainable import TrainableValues

MODES = ("auto", "sparse", "dense")


def _forget_dense(module: "SparseLinear", incompatible_keys: Any) -> None:
    """After load_state_dict copied new values into the buffers, drop what was derived from them."""
    module.packed._dense = None
    module._layout = None


class _PackedLinearFn(torch.autograd.Function):
    """``y = x W^T + b`` over a packed W: forward by the format's kernel, ``dx`` by the csr16 kernel
    over W^T, ``dW`` at the stored positions by the SDDMM, ``db`` as the batch sum of dy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, vals: torch.Tensor, bias: Optional[torch.Tensor],
                layer: "SparseLinear") -> torch.Tensor:
        ctx.layer, ctx.layout = layer, layer.grad_layout()
        ctx.save_for_backward(x, vals)
        return layer.packed._native_linear(x.contiguous(), None if bias is None else bias.detach())

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, vals = ctx.saved_tensors
        layout: GradLayout = ctx.layout
        dy = dy.contiguous()
        dx = layout.input_grad(dy, vals) if ctx.needs_input_grad[0] else None
        dv = layout.weight_grad(dy, x).view_as(vals) if ctx.needs_input_grad[1] else None
        db = dy.sum(0) if ctx.needs_input_grad[2] else None
        if ctx.layer.dense_grad:
            ctx.layer.store_dense_grad(dy.t() @ x)
        return dx, dv, db, None


class SparseLinear(TrainableValues, nn.Module):
    """``y = x W^T + b`` with W stored in a compressed format (any leading batch dims on x).

    The packed tensors are buffers named ``w_<tensor>``, so ``state_dict`` holds them and nothing
    dense.

    Parameters
    ----------
    packed : PackedWeight
        The weight W (out_features, in_features).
    bias : torch.Tensor, optional
        (out_features,), copied as a float32 parameter that does not require grad.
    mode : {'auto', 'sparse', 'dense'}
        'auto': per batch bucket, the faster of sparse and dense, measured once by the
        dispatcher; 'sparse': always the kernel; 'dense': torch matmul on the unpacked weight.
    dispatcher : Dispatcher, optional
        Where 'auto' measures and caches; :func:`default_dispatcher` when None.
    """

    def __init__(self, packed: PackedWeight, bias: Optional[torch.Tensor] = None, mode: str = "auto",
                 dispatcher: Optional[Dispatcher] = None) -> None:
        super().__init__()
        self.out_features, self.in_features = packed.shape
        self.format = packed.format
        self.format_params: dict[str, Any] = packed.params()
        self.packed = packed
        for name, t in packed.tensors().items():
            self.register_buffer(f"w_{name}", t)
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().to(torch.float32).clone(), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.mode = mode
        self.dispatcher = dispatcher
        self.choices: dict[int, str] = {}
        self.weight_shape = (self.out_features, self.in_features)
        self._init_values()
        self.register_load_state_dict_post_hook(_forget_dense)

    @classmethod
    def trainable(cls, weight: torch.Tensor, mask: torch.Tensor, bias: Optional[nn.Parameter] = None,
                  format: str = "csr16", mode: str = "sparse", **params: Any) -> "SparseLinear":
        """A layer whose kept weights train: ``w_vals`` is a parameter holding only them.

        Parameters
        ----------
        weight : torch.Tensor
            (out_features, in_features); the values at ``mask`` are copied.
        mask : torch.Tensor
            Bool, same shape: the kept positions (zeros at kept positions stay stored and train).
        bias : nn.Parameter, optional
            (out_features,); kept as this very parameter (an optimizer holding it keeps working).
        format : str
            'csr16' (any mask), 'bitmask', 'nm' (``N``, ``M``: every group keeps N) or 'block'
            (``R``, ``C``: the mask fills whole blocks).
        mode : {'sparse', 'auto', 'dense'}
            As in the class; 'sparse' by default (the dispatcher times the forward only).
        **params
            The format's parameters.

        Returns
        -------
        SparseLinear
            Gradients equal those of ``F.linear(x, weight * mask, bias)`` (to fp32 rounding).
        """
        if format.endswith("_int8"):
            raise SparsecraftError(f"format {format!r} is inference only; train in fp32 and convert with "
                                   "weights='int8'")
        packed = pack_mask(weight, mask, format, **params)
        layer = cls(packed, None, mode=mode)
        layer._set_values(nn.Parameter(packed.tensors()["vals"]))
        if bias is not None:
            if tuple(bias.shape) != (layer.out_features,):
                raise SparsecraftError(f"bias has shape {tuple(bias.shape)}, expected ({layer.out_features},)")
            layer.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias.detach().float().clone())
        return layer

    def _forget_mask_derived(self) -> None:
        self.choices = {}

    def dense_module(self) -> nn.Linear:
        """A plain nn.Linear with this layer's weight (pruned weights exactly zero) and bias."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @property
    def mode(self) -> str:
        """'auto', 'sparse' or 'dense' (see the class); setting another value raises SparsecraftError."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise SparsecraftError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
        self._mode = value

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "SparseLinear":
        """After .to() / .float() / ... replaced the buffers, rebuild the packed view over them.

        A dtype change (``.half()``, ``.to(torch.bfloat16)``) is refused, this layer unchanged: the
        packed values and the kernels are float32 only.
        """
        dtype = fn(torch.zeros(0)).dtype
        if dtype != torch.float32:
            raise SparsecraftError(f"SparseLinear keeps its packed values float32 and cannot become {dtype}; "
                                   f"leave the converted model float32 (it takes {dtype} inputs and returns "
                                   f"{dtype}) or use the pruned dense model in {dtype}")
        out = super()._apply(fn, *args, **kwargs)
        self._sync_packed()
        return out

    def path_for(self, rows: int) -> str:
        """The path a call with ``rows`` input rows takes.

        Parameters
        ----------
        rows : int
            Rows of the 2-D input (batch x sequence for 3-D inputs).

        Returns
        -------
        str
            'sparse' or 'dense'. In mode 'auto' the first call in a batch bucket measures (eager
            mode only; under torch.compile an unmeasured bucket takes 'sparse').
        """
        if self._mode != "auto":
            return self._mode
        bucket = batch_bucket(rows)
        choice = self.choices.get(bucket)
        if choice is None:
            if torch.compiler.is_compiling():
                return "sparse"
            self._sync_packed()
            choice = (self.dispatcher or default_dispatcher()).choose(self.packed, self.bias, rows)
            self.choices[bucket] = choice
        return choice

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None, gelu: bool = False) -> torch.Tensor:
        """``x W^T + b`` for x (..., in_features); returns (..., out_features) in x's dtype.

        Runs the kernel for float32 inputs when the path is 'sparse', else torch's dense matmul on
        the unpacked weight. ``residual`` (x's leading shape, out_features) is added after the bias
        and ``gelu`` applies the exact GELU last; the kernel fuses both into its output pass when no
        gradient is needed. A trainable layer (:meth:`trainable`) under autograd runs its backward
        sparse too (:class:`~sparsecraft.formats.grad.GradLayout`); an inference layer given an
        x that requires grad runs dense.
        """
        if x.shape[-1] != self.in_features:
            raise SparsecraftError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        x2 = x.reshape(-1, self.in_features) if x.dim() != 2 else x
        r2 = None if residual is None else residual.reshape(-1, self.out_features)
        native = x2.dtype == torch.float32 and kernels_available()
        if self.is_trainable and torch.is_grad_enabled():
            if native and self.path_for(x2.shape[0]) == "sparse":
                y = _PackedLinearFn.apply(x2, self.w_vals, self.bias, self)
            else:
                y = F.linear(x2, self.differentiable_dense().to(x2.dtype),
                             None if self.bias is None else self.bias.to(x2.dtype))
            y = y if r2 is None else y + r2
            y = F.gelu(y) if gelu else y
        elif not native or x2.requires_grad or self.path_for(x2.shape[0]) == "dense":
            dtype = x2.dtype if x2.is_floating_point() else None  # int input: torch raises as nn.Linear does
            y = F.linear(x2, self.packed.dense_cached().to(dtype),
                         None if self.bias is None else self.bias.to(dtype))
            y = y if r2 is None else y + r2
            y = F.gelu(y) if gelu else y
        else:
            y = self.packed._native_linear(x2, self.bias, None if r2 is None else r2.contiguous(), int(gelu))
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        density = self.packed.stored_values / max(1, self.out_features * self.in_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}{self.format_params or ''}, density={density:.3f}, mode={self._mode}")
