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
    Subclasses register themselves in :data:`FORMATS` under their ``format`` name.

    Parameters
    ----------
    shape : tuple[int, int]
        (out_features, in_features) of the dense weight.
    """

    format: ClassVar[str]

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._dense: Optional[torch.Tensor] = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def pack(cls, weight: torch.Tensor, **params: Any) -> "PackedWeight":
        """Compress a dense weight; zeros are dropped (exact: ``to_dense()`` gives it back bit for bit).

        Parameters
        ----------
        weight : torch.Tensor
            Floating (out_features, in_features), any device; packed as float32 on the CPU.
        **params
            The format's parameters (R, C for block; N, M for nm; none for csr16 and bitmask).

        Returns
        -------
        PackedWeight
            An instance of the class called; a one-line SparsecraftError when the weight does
            not fit the format (e.g. not N:M sparse).
        """

    @classmethod
    @abstractmethod
    def from_tensors(cls, shape: tuple[int, int], params: dict[str, Any],
                     tensors: dict[str, torch.Tensor]) -> "PackedWeight":
        """Rebuild from stored tensors, validating dtypes, shapes and index ranges.

        Parameters
        ----------
        shape : tuple[int, int]
            (out_features, in_features).
        params : dict[str, Any]
            As returned by :meth:`params`.
        tensors : dict[str, torch.Tensor]
            As returned by :meth:`tensors` (e.g. read from a file).

        Returns
        -------
        PackedWeight
            The packed weight over these tensors; a one-line SparsecraftError when they are
            inconsistent (the file is corrupt or does not match its metadata).
        """

    # ---- views --------------------------------------------------------------------------------
    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors by name (CPU; float32 values, integer indices)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-able parameters (block shape, N and M, ...)."""

    @abstractmethod
    def to_dense(self) -> torch.Tensor:
        """The dense float32 weight (out_features, in_features)."""

    @abstractmethod
    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each stored value sits in W.

        Returns
        -------
        rows, cols : torch.Tensor
            int64 (stored_values,): the output and input index of ``vals.flatten()[k]``; positions
            padded past the edge of W (blocks at the border) lie outside (out, in).
        """

    @abstractmethod
    def _native_linear(self, x: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor] = None,
                       act: int = 0) -> torch.Tensor:
        """``act(x @ W.T + bias + residual)`` with the native op (act 0: none, 1: GELU); x (batch,
        in_features) float32 CPU, residual contiguous float32 (batch, out_features), unchecked."""

    @property
    def stored_values(self) -> int:
        """Number of stored weight values (nonzeros plus the explicit zeros the format keeps)."""
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

    def linear(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
               gelu: bool = False) -> torch.Tensor:
        """``y = x @ W.T + bias (+ residual)``, then GELU if asked, with the native kernel (epilogue fused).

        Parameters
        ----------
        x : torch.Tensor
            (batch, in_features). float32 runs the kernel; other dtypes, or a build without the
            native kernels, run torch's dense matmul on the unpacked weight.
        bias : torch.Tensor, optional
            (out_features,).
        residual : torch.Tensor, optional
            (batch, out_features), added after the bias (the residual add before a LayerNorm).
        gelu : bool
            Apply the exact (erf) GELU last (the kernel's is within 2e-6 of torch's).

        Returns
        -------
        torch.Tensor
            (batch, out_features), the dtype of ``x``.
        """
        if x.dim() != 2 or x.shape[1] != self.shape[1]:
            raise SparsecraftError(
                f"x must have shape (batch, {self.shape[1]}), got {tuple(x.shape)}; reshape the input"
            )
        if residual is not None and tuple(residual.shape) != (x.shape[0], self.shape[0]):
            raise SparsecraftError(f"residual must have shape ({x.shape[0]}, {self.shape[0]}), "
                                   f"got {tuple(residual.shape)}")
        if x.dtype != torch.float32 or not available():
            y = F.linear(x.float(), self.dense_cached(), None if bias is None else bias.float())
            y = y if residual is None else y + residual.float()
            return (F.gelu(y) if gelu else y).to(x.dtype)
        res = None if residual is None else residual.to(torch.float32).contiguous()
        return self._native_linear(x, bias, res, int(gelu))

    def describe(self) -> str:
        """One line: ``<format>{params as JSON} <out>x<in>``, e.g. ``block{"C": 1, "R": 4} 64x128``."""
        return f"{self.format}{json.dumps(self.params(), sort_keys=True)} {self.shape[0]}x{self.shape[1]}"


FORMATS: Registry[type[PackedWeight]] = Registry("format")
"""Format name -> PackedWeight subclass: 'csr16', 'bitmask', 'block', 'nm', 'csr16_int8', 'block_int8',
'dense_int8'."""


def as_weight(weight: torch.Tensor) -> torch.Tensor:
    """Check a weight to pack.

    Parameters
    ----------
    weight : torch.Tensor
        Expected 2-D floating (out_features, in_features).

    Returns
    -------
    torch.Tensor
        Detached, contiguous float32 on the CPU; a one-line SparsecraftError otherwise.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise SparsecraftError("weight must be a 2-D floating-point tensor (out_features, in_features)")
    return weight.detach().to("cpu", torch.float32).contiguous()


def expect(tensors: dict[str, torch.Tensor], name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Fetch a stored tensor, checking it.

    Parameters
    ----------
    tensors : dict[str, torch.Tensor]
        The stored tensors.
    name : str
        The one to fetch.
    dtype, shape
        What it must be.

    Returns
    -------
    torch.Tensor
        ``tensors[name]``, contiguous; a one-line SparsecraftError when missing or different.
    """
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
    """Fetch an integer format parameter.

    Parameters
    ----------
    params : dict[str, Any]
        The format's parameters.
    name : str
        The one to fetch.
    lo, hi : int
        Its allowed range, inclusive.

    Returns
    -------
    int
        ``params[name]``; a one-line SparsecraftError unless it is an int (not bool) in [lo, hi].
    """
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SparsecraftError(f"format parameter {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value
