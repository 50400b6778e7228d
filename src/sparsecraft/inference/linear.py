"""SparseLinear: an nn.Linear replacement that runs a packed weight through the native kernels."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparsecraftError
from ..formats import FORMATS, PackedWeight
from ..kernels import available as kernels_available
from .dispatch import Dispatcher, batch_bucket, default_dispatcher

MODES = ("auto", "sparse", "dense")


def _forget_dense(module: "SparseLinear", incompatible_keys: Any) -> None:
    """After load_state_dict copied new values into the buffers, drop the cached dense weight."""
    module.packed._dense = None


class SparseLinear(nn.Module):
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
        self.register_load_state_dict_post_hook(_forget_dense)

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

    def _sync_packed(self) -> None:
        """Rebuild the packed view if its buffers were replaced."""
        tensors = self.packed.tensors()
        if any(getattr(self, f"w_{k}") is not v for k, v in tensors.items()):
            self.packed = FORMATS.get(self.format).from_tensors(
                (self.out_features, self.in_features), self.format_params,
                {k: getattr(self, f"w_{k}") for k in tensors})

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

        Runs the kernel for float32 inputs that do not require grad when the path is 'sparse',
        else torch's dense matmul on the unpacked weight. ``residual`` (x's leading shape,
        out_features) is added after the bias and ``gelu`` applies the exact GELU last; the kernel
        fuses both into its output pass.
        """
        if x.shape[-1] != self.in_features:
            raise SparsecraftError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        x2 = x.reshape(-1, self.in_features) if x.dim() != 2 else x
        r2 = None if residual is None else residual.reshape(-1, self.out_features)
        if (x2.dtype != torch.float32 or x2.requires_grad or not kernels_available()
                or self.path_for(x2.shape[0]) == "dense"):
            dtype = x2.dtype if x2.is_floating_point() else None  # int input: torch raises as nn.Linear does
            y = F.linear(x2, self.packed.dense_cached().to(dtype),
                         None if self.bias is None else self.bias.to(dtype))
            y = y if r2 is None else y + r2
            y = F.gelu(y) if gelu else y
        else:
            y = self.packed._native_linear(x2, self.bias, None if r2 is None else r2.contiguous(), int(gelu))
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], self.out_features)

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the stored (packed) weight."""
        return self.packed.nbytes

    def extra_repr(self) -> str:
        density = self.packed.stored_values / max(1, self.out_features * self.in_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"format={self.format}{self.format_params or ''}, density={density:.3f}, mode={self._mode}")
