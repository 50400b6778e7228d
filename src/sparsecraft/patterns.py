"""Sparsity patterns: which shapes of zeros are allowed.

Every weight is seen as a 2-D matrix ``(rows, cols)``: rows are outputs (``out_features``,
``out_channels``, embedding rows) and cols the flattened reduction dimension (``in_features``, or
``in_channels * kh * kw`` for convolutions). A pattern cuts that matrix into *groups* (single
weights, blocks, rows, heads, or N:M groups) and keeps or drops whole groups.

A pattern answers three questions:

* ``group_scores(scores)``: one score per group, the sum of its elements' scores, shape ``(G,)``;
* ``mask(scores, n_prune)``: the bool mask of the weight's shape with the ``n_prune`` lowest-scoring
  groups dropped (N:M patterns ignore ``n_prune``: their density is fixed at N/M);
* ``validate(mask)``: raise :class:`SparsecraftError` unless ``mask`` has this pattern.

Spec strings (``get_pattern``): ``"unstructured"``, ``"N:M"`` (e.g. ``"2:4"``), ``"blockRxC"``
(R consecutive rows by C consecutive columns, e.g. ``"block4x1"``), ``"channel"`` (whole output
rows: filters / neurons), ``"headD"`` (groups of D consecutive output rows, one attention head of
size D in a q/k/v projection). N:M on a convolution groups M input channels at each kernel
position (NVIDIA ASP / NM-sparsity layout, what sparse tensor cores and NHWC kernels need);
``"N:M-flat"`` groups M consecutive weights of the flattened ``in_channels * kh * kw`` axis instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import torch

from .errors import SparsecraftError
from .registry import Registry
from .selection import lowest

PATTERNS: Registry[type["Pattern"]] = Registry("pattern")


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """View a weight of shape ``(out, *rest)`` as ``(out, prod(rest))``; 1-D tensors as ``(1, n)``."""
    if t.dim() == 0:
        raise SparsecraftError("cannot sparsify a scalar parameter; select weight matrices only")
    return t.reshape(1, -1) if t.dim() == 1 else t.reshape(t.shape[0], -1)


class Pattern:
    """Base class; subclasses define how a matrix splits into groups and parse their own spec.

    Attributes
    ----------
    name : str
        The spec string of this pattern (``"2:4"``, ``"block4x1"``, ...).
    fixed_density : float or None
        Fraction of weights kept when the pattern fixes it (N:M), else ``None``.
    spec_help : str
        How the spec is written, for error messages and ``--help`` (e.g. ``"N:M (e.g. 2:4)"``).
    """

    name: str = ""
    fixed_density: float | None = None  # set by patterns whose density is fixed (N:M)
    spec_help: ClassVar[str] = ""

    @classmethod
    def parse(cls, spec: str) -> "Pattern | None":
        """The pattern that ``spec`` (stripped, lower case) names, or ``None`` if it is not this kind.

        The default fits patterns without sizes, whose spec is one word (``spec_help``); patterns
        with sizes override it.

        Parameters
        ----------
        spec : str
            A spec string such as ``"2:4"``.

        Returns
        -------
        Pattern or None
            ``None`` when ``spec`` is not written like this pattern; raises
            :class:`SparsecraftError` when it is, but its sizes are invalid.
        """
        return cls() if spec == cls.spec_help else None

    def n_groups(self, shape: torch.Size) -> int:
        """Number of groups a weight of ``shape`` splits into."""
        return self.group_scores(torch.zeros(shape)).numel()

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """One score per group: the sum of its elements' ``scores``, shape ``(G,)``."""
        raise NotImplementedError

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Turn a bool vector of kept groups, shape ``(G,)``, into a mask of ``shape``."""
        raise NotImplementedError

    def mask(self, scores: torch.Tensor, n_prune: int = 0) -> torch.Tensor:
        """Mask of ``scores.shape`` dropping the ``n_prune`` lowest-scoring groups."""
        g = self.group_scores(scores.detach().float())
        if not 0 <= n_prune <= g.numel():
            raise SparsecraftError(f"cannot prune {n_prune} of {g.numel()} groups with pattern {self}")
        return self.expand(lowest(g, n_prune), scores.shape)

    def mask_for_sparsity(self, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        """Mask dropping ``round(sparsity * G)`` groups (the rounding ``torch.nn.utils.prune`` uses)."""
        return self.mask(scores, round(sparsity * self.n_groups(scores.shape)))

    def validate(self, mask: torch.Tensor) -> None:
        """Raise SparsecraftError unless ``mask`` keeps or drops whole groups of this pattern."""
        m = mask.to(torch.bool)
        rebuilt = self.expand(self.group_scores(m.float()) > 0, m.shape)
        if not torch.equal(rebuilt, m):
            raise SparsecraftError(f"mask does not follow pattern {self}: some groups are partly kept")

    def __str__(self) -> str:
        return self.name


@PATTERNS.register("unstructured")
@dataclass(frozen=True)
class Unstructured(Pattern):
    """Any single weight may be zero."""

    name: str = "unstructured"
    spec_help: ClassVar[str] = "unstructured"

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.reshape(-1)

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return group_keep.reshape(shape)

    def validate(self, mask: torch.Tensor) -> None:
        if mask.dtype != torch.bool:
            raise SparsecraftError(f"a mask must be a bool tensor, got {mask.dtype}")


def _positive_sizes(regex: str, spec: str, what: str) -> tuple[int, ...] | None:
    """The integers ``regex`` captures from the whole of ``spec`` (``None`` if it does not match);
    one-line error unless each is at least 1."""
    match = re.fullmatch(regex, spec)
    if match is None:
        return None
    sizes = tuple(int(g) for g in match.groups())
    if min(sizes) < 1:
        raise SparsecraftError(f"{what} must be positive, got {spec!r}")
    return sizes


def _blocks(m: torch.Tensor, r: int, c: int, label: str) -> torch.Tensor:
    """Reshape matrix ``(rows, cols)`` into ``(rows/r, cols/c, r, c)`` blocks."""
    rows, cols = m.shape
    if rows % r or cols % c:
        raise SparsecraftError(
            f"a {rows}x{cols} weight does not split into {r}x{c} groups for pattern {label}; "
            f"rows must be divisible by {r} and the reduction dimension by {c}"
        )
    return m.reshape(rows // r, r, cols // c, c).permute(0, 2, 1, 3)


@PATTERNS.register("block")
@dataclass(frozen=True)
class Block(Pattern):
    """Blocks of ``rows`` consecutive outputs by ``cols`` consecutive inputs, kept or dropped whole."""

    rows: int = 4
    cols: int = 1
    spec_help: ClassVar[str] = "blockRxC (e.g. block4x1)"

    @classmethod
    def parse(cls, spec: str) -> "Block | None":
        sizes = _positive_sizes(r"block(\d+)x(\d+)", spec, "block sizes")
        return None if sizes is None else cls(*sizes)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"block{self.rows}x{self.cols}"

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return _blocks(as_matrix(scores), self.rows, self.cols, self.name).sum((2, 3)).reshape(-1)

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        rows, cols = as_matrix(torch.empty(shape, device="meta")).shape
        g = group_keep.reshape(rows // self.rows, 1, cols // self.cols, 1)
        return g.expand(-1, self.rows, -1, self.cols).reshape(shape)


@PATTERNS.register("channel")
@dataclass(frozen=True)
class Channel(Pattern):
    """Whole output rows: a neuron of a Linear, a filter of a Conv, a row of an Embedding."""

    name: str = "channel"
    spec_help: ClassVar[str] = "channel"

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return as_matrix(scores).sum(1)

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        rows, cols = as_matrix(torch.empty(shape, device="meta")).shape
        return group_keep.reshape(rows, 1).expand(rows, cols).reshape(shape)


@PATTERNS.register("head")
@dataclass(frozen=True)
class Head(Pattern):
    """Attention heads: groups of ``head_dim`` consecutive output rows of a q/k/v projection."""

    head_dim: int = 64
    spec_help: ClassVar[str] = "headD (e.g. head64)"

    @classmethod
    def parse(cls, spec: str) -> "Head | None":
        sizes = _positive_sizes(r"head(\d+)", spec, "head size")
        return None if sizes is None else cls(*sizes)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"head{self.head_dim}"

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        m = as_matrix(scores)
        return _blocks(m, self.head_dim, m.shape[1], self.name).sum((2, 3)).reshape(-1)

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        rows, cols = as_matrix(torch.empty(shape, device="meta")).shape
        return group_keep.reshape(-1, 1).expand(-1, self.head_dim * cols).reshape(shape)


@PATTERNS.register("n:m")
@dataclass(frozen=True)
class NM(Pattern):
    """At most N non-zeros in every group of M weights along the reduction dimension.

    The mask keeps exactly the N highest-scoring weights of every group (ties broken by position).
    For a convolution weight ``(out, in, *kernel)`` a group is M input channels at one output and
    kernel position (``layout="cin"``, the default); ``layout="flat"`` (spec ``"N:M-flat"``) groups
    M consecutive weights of the flattened ``in * prod(kernel)`` axis. Both are the same for Linears.
    """

    n: int = 2
    m: int = 4
    layout: str = "cin"
    spec_help: ClassVar[str] = "N:M (e.g. 2:4) or N:M-flat (convolutions: groups along the flattened C_in x kernel)"

    @classmethod
    def parse(cls, spec: str) -> "NM | None":
        match = re.fullmatch(r"(\d+):(\d+)(-flat)?", spec)
        return None if match is None else cls(int(match[1]), int(match[2]), "flat" if match[3] else "cin")

    def __post_init__(self) -> None:
        if not 0 < self.n < self.m:
            raise SparsecraftError(f"N:M needs 0 < N < M, got {self.n}:{self.m} (for example 2:4)")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.n}:{self.m}" + ("-flat" if self.layout == "flat" else "")

    @property
    def fixed_density(self) -> float:  # type: ignore[override]
        return self.n / self.m

    def _per_position(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is grouped along input channels at each kernel position (a conv, layout cin)."""
        return self.layout == "cin" and t.dim() > 2

    def _groups(self, t: torch.Tensor) -> torch.Tensor:
        if self._per_position(t):
            if t.shape[1] % self.m:
                raise SparsecraftError(
                    f"{t.shape[1]} input channels are not divisible by M={self.m} for pattern {self.name} "
                    f"(groups run along input channels at each kernel position); use {self.n}:{self.m}-flat to "
                    "group the flattened in_channels x kernel axis, or keep this layer dense")
            return t.movedim(1, -1).reshape(-1, self.m)
        m = as_matrix(t)
        if m.shape[1] % self.m:
            raise SparsecraftError(
                f"reduction dimension {m.shape[1]} is not divisible by M={self.m} for pattern "
                f"{self.name}; choose an M that divides it or keep this layer dense"
            )
        return m.reshape(-1, self.m)

    def group_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return self._groups(scores).sum(1)

    def mask(self, scores: torch.Tensor, n_prune: int = 0) -> torch.Tensor:
        g = self._groups(scores.detach().float())
        keep = torch.zeros_like(g, dtype=torch.bool)
        keep.scatter_(1, torch.topk(g, self.n, dim=1).indices, True)
        if self._per_position(scores):
            return keep.reshape(scores.movedim(1, -1).shape).movedim(-1, 1)
        return keep.reshape(scores.shape)

    def mask_for_sparsity(self, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        return self.mask(scores)

    def expand(self, group_keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        raise TypeError("N:M masks are built per group by mask(), not expanded from group choices")

    def validate(self, mask: torch.Tensor) -> None:
        counts = self._groups(mask.to(torch.bool)).sum(1)
        if bool((counts > self.n).any()):
            bad = int((counts > self.n).sum())
            raise SparsecraftError(f"mask breaks pattern {self.name}: {bad} groups of {self.m} keep more than {self.n}")


def pattern_specs() -> str:
    """How every registered pattern's spec is written, e.g. ``"unstructured, blockRxC (e.g. block4x1), ..."``."""
    return ", ".join(cls.spec_help for _, cls in PATTERNS.items())


def get_pattern(spec: str | Pattern) -> Pattern:
    """Parse a pattern spec string into a :class:`Pattern` (a Pattern is returned as is).

    Parameters
    ----------
    spec : str or Pattern
        ``"unstructured"``, ``"N:M"``, ``"blockRxC"``, ``"channel"`` or ``"headD"`` (case and
        surrounding spaces ignored); each registered pattern class parses its own kind.

    Returns
    -------
    Pattern

    Raises
    ------
    SparsecraftError
        One line: an unknown spec (listing the valid ones) or invalid sizes.
    """
    if isinstance(spec, Pattern):
        return spec
    text = str(spec).strip().lower()
    for _, cls in PATTERNS.items():
        pattern = cls.parse(text)
        if pattern is not None:
            return pattern
    raise SparsecraftError(f"unknown pattern {spec!r}; choose one of: {pattern_specs()}")
