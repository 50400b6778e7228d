"""The packed-weight interface shared by every compressed format, and the format registry."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F

from ..errors import SparsecraftError
from ..kernels import available
from ..registry import Registry


class PackedWeight(ABC):
    """A Linear weight W (out_features, in_features) stored compressed, exactly.

    ``tensors()`` are what gets stored (safetensors); ``params()`` is the small JSON-able rest.
    ``linear(x, bias)`` computes ``x @ W.T + bias`` for 2-D float32 ``x`` (batch, in_features)
    with the native kernel, or with torch's dense matmul when the kernels are unavailable.
    """

    format: ClassVar[str]

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._dense: Optional[torch.Tensor] = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def pack(cls, weight: torch.Tensor, **params: Any) -> "PackedWeight":
        """Compress a dense 2-D weight; zeros are dropped (exact: ``to_dense()`` returns it back)."""

    @classmethod
    @abstractmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "PackedWeight":
        """Rebuild from stored tensors, validating dtypes, shapes and index ranges."""

    # ---- views --------------------------------------------------------------------------------
    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by name."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-able parameters (block shape, N and M, ...)."""

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The dense float32 weight (out_features, in_features)."""

    @abstractmethod
    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``x @ W.T + bias`` with the native op (x: 2-D float32 CPU)."""

    @property
    def stored_values(self) -> int:
        """Number of stored weight values (nonzeros plus explicit zeros kept by the format)."""
        return int(self.tensors()["vals"].numel())

    @property
    def nbytes(self) -> int:
        """Bytes of all stored tensors (values + indices + pointers)."""
        return int(sum(t.numel() * t.element_size() for t in self.tensors().values()))

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the same weight stored dense in float32."""
        return 4 * self.shape[0] * self.shape[1]

    def dense_cached(self) -> torch.Tensor:
        """``to_dense()``, computed once and kept (used when dense is the faster path)."""
        if self._dense is None:
            self._dense = self.to_dense()
        return self._dense

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x @ W.T + bias`` for x (batch, in_features) float32; returns (batch, out_features)."""
        if x.dim() != 2 or x.shape[1] != self.shape[1]:
            raise SparsecraftError(
                f"x must have shape (batch, {self.shape[1]}), got {tuple(x.shape)}; reshape the input"
            )
        if x.dtype != torch.float32 or not available():
            return F.linear(x.float(), self.dense_cached(), None if bias is None else bias.float()).to(x.dtype)
        return self._native_linear(x, bias)

    def describe(self) -> str:
        return f"{self.format}{json.dumps(self.params(), sort_keys=True)} {self.shape[0]}x{self.shape[1]}"


FORMATS: Registry[type[PackedWeight]] = Registry("format")


def as_weight(weight: torch.Tensor) -> torch.Tensor:
    """Check ``weight`` is a 2-D floating tensor and return it as contiguous float32 on the CPU."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise SparsecraftError("weight must be a 2-D floating-point tensor (out_features, in_features)")
    return weight.detach().to("cpu", torch.float32).contiguous()


def expect(tensors: dict[str, torch.Tensor], name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Fetch ``tensors[name]`` checking dtype and shape; a one-line SparsecraftError otherwise."""
    if name not in tensors:
        raise SparsecraftError(f"packed weight is missing tensor {name!r}; the file is corrupt or of another format")
    t = tensors[name]
    if t.dtype != dtype or tuple(t.shape) != tuple(shape):
        raise SparsecraftError(
            f"packed tensor {name!r} has dtype {t.dtype} shape {tuple(t.shape)}, expected {dtype} {tuple(shape)}; "
            "the file is corrupt or does not match its metadata"
        )
    return t.contiguous()


def int_param(params: dict[str, Any], name: str, lo: int, hi: int) -> int:
    """An integer parameter in [lo, hi], or a one-line SparsecraftError."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SparsecraftError(f"format parameter {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value
