"""Sparse Iso-FLOP Transformations (Sparse-IFT; Thangarasa, Saxena, Gupta and Lie 2023, "Sparse
Iso-FLOP Transformations for Maximizing Training Efficiency").

Each transformation replaces a dense layer ``W`` (``d_in -> d_out``, reduction size ``K d_in`` for a
convolution with ``K`` kernel positions) by a larger sparse structure with the same forward FLOPs,
for one knob, the sparsity ``s`` of its sparse parts:

============  =====================================================  ================================
name          replacement                                            iso-FLOP size
============  =====================================================  ================================
wide          the layer ``k`` times wider on both sides, sparse      ``k = 1 / sqrt(1 - s)``
parallel      ``n`` sparse copies of the layer, outputs summed       ``n = 1 / (1 - s)``
factorized    sparse ``U: d_in -> d`` (the original kernel) then      ``d = K d_in d_out / ((1 - s)
              sparse 1x1 ``V: d -> d_out``                            (K d_in + d_out))``
doped         dense low rank ``V U`` (rank ``r``) plus a sparse       ``r = s K d_in d_out / (K d_in +
              copy of the layer                                      d_out)``
============  =====================================================  ================================

``parallel``, ``factorized`` and ``doped`` are drop-in replacements of one Linear/Conv
(:func:`iso_flop_layer`, :func:`apply_sparse_ift`); ``wide`` changes the widths of neighbouring
layers, so it builds the in-project MLP/CNN wider (:func:`iso_flop_model`). As in the paper the
first and last layers stay dense (for ``wide`` they grow on their hidden side only, which
:func:`~sparsecraft.architectures.flops.forward_macs` reports). The sparse parts are trained by
any sparse-training updater (``static``, ``set``, ``rigl``, ...) restricted to
:attr:`IftModel.sparse_layers` with ``allocation="uniform"``, so each sparse part has sparsity ``s``.
Sizes are rounded to integers, so FLOPs are equal up to rounding.
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..registry import Registry
from ..target import find_targets
from ..training import SparsityConfig, Updater, fit, make_updater
from .flops import macs_by_layer

Layer = Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d]
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_knob(sparsity: float) -> float:
    s = check_sparsity(sparsity)
    if s == 0.0:
        raise SparsecraftError("a Sparse-IFT needs sparsity in (0, 1): at 0 every transformation is the dense layer")
    return s


def _check_layer(layer: nn.Module) -> Layer:
    if not isinstance(layer, _LAYER_TYPES):
        raise SparsecraftError(f"Sparse-IFT replaces a Linear or Conv layer, got {type(layer).__name__}")
    if not isinstance(layer, nn.Linear) and layer.groups != 1:
        raise SparsecraftError(f"Sparse-IFT needs an ungrouped convolution, got groups={layer.groups}")
    return layer


def _sizes(layer: Layer) -> tuple[int, int, int]:
    """``(d_in, d_out, K)``: input and output features/channels and kernel positions (1 for Linear)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, 1
    return layer.in_channels, layer.out_channels, math.prod(layer.kernel_size)


def _like(layer: Layer, d_in: int, d_out: int, bias: bool, pointwise: bool = False) -> Layer:
    """A fresh layer of ``layer``'s kind from ``d_in`` to ``d_out``: same kernel, stride and padding,
    or a 1x1 convolution when ``pointwise``."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(d_in, d_out, bias=bias)
    if pointwise:
        return type(layer)(d_in, d_out, 1, bias=bias)
    return type(layer)(d_in, d_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, bias=bias, padding_mode=layer.padding_mode)


class IftBlock(nn.Module):
    """A replacement of one dense layer; :attr:`sparse_parts` names its sub-layers trained sparse."""

    sparse_parts: tuple[str, ...] = ()


class SparseParallel(IftBlock):
    """``sum_i branch_i(x)`` over ``n`` copies of the layer's shape (the bias only in the first).

    Input and output shapes are those of the replaced layer.
    """

    def __init__(self, layer: Layer, branches: int) -> None:
        super().__init__()
        d_in, d_out, _ = _sizes(layer)
        has_bias = layer.bias is not None
        self.branches = nn.ModuleList(_like(layer, d_in, d_out, has_bias and i == 0) for i in range(branches))
        self.sparse_parts = tuple(f"branches.{i}" for i in range(branches))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class SparseFactorized(IftBlock):
    """``v(u(x))``: ``u`` has the layer's kernel, stride and padding (``d_in -> inner``), ``v`` is a
    1x1 map ``inner -> d_out`` with the layer's bias; both sparse. Shapes as the replaced layer."""

    sparse_parts = ("u", "v")

    def __init__(self, layer: Layer, inner: int) -> None:
        super().__init__()
        d_in, d_out, _ = _sizes(layer)
        self.u = _like(layer, d_in, inner, bias=False)
        self.v = _like(layer, inner, d_out, bias=layer.bias is not None, pointwise=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(self.u(x))


class SparseDoped(IftBlock):
    """``sparse(x) + low_v(low_u(x))``: a sparse copy of the layer plus a dense rank-``rank`` path
    (``low_u`` with the layer's kernel, ``low_v`` 1x1). Shapes as the replaced layer."""

    sparse_parts = ("sparse",)

    def __init__(self, layer: Layer, rank: int) -> None:
        super().__init__()
        d_in, d_out, _ = _sizes(layer)
        self.sparse = _like(layer, d_in, d_out, bias=layer.bias is not None)
        self.low_u = _like(layer, d_in, rank, bias=False)
        self.low_v = _like(layer, rank, d_out, bias=False, pointwise=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sparse(x) + self.low_v(self.low_u(x))


class IsoFlopTransform:
    """One Sparse-IFT family member: its iso-FLOP size and (unless it changes widths) its block."""

    name: ClassVar[str] = ""
    changes_width: ClassVar[bool] = False

    def width_factor(self, sparsity: float) -> float:
        """Factor on hidden widths (1 unless the transformation widens the network)."""
        return 1.0

    def size(self, layer: Layer, sparsity: float) -> int:
        """The integer size parameter (branches, inner width or rank) for ``layer`` at ``sparsity``."""
        raise NotImplementedError

    def block(self, layer: Layer, sparsity: float) -> IftBlock:
        """The replacement of ``layer`` at ``sparsity``; same input and output shapes."""
        raise NotImplementedError


TRANSFORMS: Registry[IsoFlopTransform] = Registry("Sparse-IFT transformation")


def _register(cls: type[IsoFlopTransform]) -> type[IsoFlopTransform]:
    TRANSFORMS.register(cls.name)(cls())
    return cls


@_register
class Wide(IsoFlopTransform):
    """Hidden widths ``x 1/sqrt(1 - s)``: an interior layer has ``1/(1 - s)`` times the weights."""

    name = "wide"
    changes_width = True

    def width_factor(self, sparsity: float) -> float:
        return 1.0 / math.sqrt(1.0 - _check_knob(sparsity))

    def size(self, layer: Layer, sparsity: float) -> int:
        raise SparsecraftError("Sparse Wide changes the widths of neighbouring layers, so it is no drop-in for "
                               "one layer: build the model with iso_flop_model(..., 'wide', sparsity)")

    def block(self, layer: Layer, sparsity: float) -> IftBlock:
        return self.size(layer, sparsity)  # raises


@_register
class Parallel(IsoFlopTransform):
    """``round(1 / (1 - s))`` sparse branches of the layer's shape."""

    name = "parallel"

    def size(self, layer: Layer, sparsity: float) -> int:
        return max(1, round(1.0 / (1.0 - _check_knob(sparsity))))

    def block(self, layer: Layer, sparsity: float) -> IftBlock:
        return SparseParallel(_check_layer(layer), self.size(layer, sparsity))


@_register
class Factorized(IsoFlopTransform):
    """Inner width ``K d_in d_out / ((1 - s)(K d_in + d_out))``."""

    name = "factorized"

    def size(self, layer: Layer, sparsity: float) -> int:
        d_in, d_out, k = _sizes(_check_layer(layer))
        return max(1, round(k * d_in * d_out / ((1.0 - _check_knob(sparsity)) * (k * d_in + d_out))))

    def block(self, layer: Layer, sparsity: float) -> IftBlock:
        return SparseFactorized(_check_layer(layer), self.size(layer, sparsity))


@_register
class Doped(IsoFlopTransform):
    """Rank ``s K d_in d_out / (K d_in + d_out)`` of the dense low-rank path."""

    name = "doped"

    def size(self, layer: Layer, sparsity: float) -> int:
        d_in, d_out, k = _sizes(_check_layer(layer))
        return max(1, round(_check_knob(sparsity) * k * d_in * d_out / (k * d_in + d_out)))

    def block(self, layer: Layer, sparsity: float) -> IftBlock:
        return SparseDoped(_check_layer(layer), self.size(layer, sparsity))


def iso_flop_layer(layer: nn.Module, transform: str, sparsity: float) -> IftBlock:
    """The Sparse-IFT replacement of one dense Linear/Conv layer.

    Parameters
    ----------
    layer : nn.Linear or nn.Conv1d/2d/3d (ungrouped)
        Input ``(N, ..., d_in)`` or ``(N, d_in, *spatial)``.
    transform : str
        ``parallel``, ``factorized`` or ``doped`` (``wide`` is a model-level change).
    sparsity : float
        In (0, 1): the sparsity its sparse parts are trained at.

    Returns
    -------
    IftBlock
        Fresh weights; maps the same input shape to the same output shape as ``layer``.
    """
    return TRANSFORMS.get(transform).block(layer, sparsity)


@dataclass
class IftModel:
    """A model after a Sparse-IFT, and what to train sparse.

    Attributes
    ----------
    model : nn.Module
    sparse_layers : list of str
        Module names of the layers to sparsify at the knob's sparsity (``SparsityConfig(s,
        allocation="uniform", layers=sparse_layers)``); every other layer stays dense.
    transform : str
    sparsity : float
    """

    model: nn.Module
    sparse_layers: list[str]
    transform: str
    sparsity: float


def apply_sparse_ift(model: nn.Module, transform: str, sparsity: float, layers: list[str] | None = None,
                     keep_dense: tuple[str, ...] = ("first", "last")) -> IftModel:
    """Replace the targeted Linear/Conv layers of a copy of ``model`` by their Sparse-IFT blocks.

    Parameters
    ----------
    model : nn.Module
        Left unchanged.
    transform : str
        ``parallel``, ``factorized`` or ``doped``.
    sparsity : float
        In (0, 1).
    layers, keep_dense
        Which layers to transform, as :func:`sparsecraft.target.find_targets` (default: all but the
        first and last, as the paper).

    Returns
    -------
    IftModel
    """
    method = TRANSFORMS.get(transform)
    _check_knob(sparsity)
    if method.changes_width:
        method.block(nn.Linear(1, 1), sparsity)  # raises the one-line explanation
    out = copy.deepcopy(model)
    targets = find_targets(out, layers, keep_dense, types=_LAYER_TYPES)
    sparse_layers = []
    for t in targets:
        block = method.block(t.module, sparsity)
        parent_name, _, child = t.module_name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, child, block)
        sparse_layers += [f"{t.module_name}.{part}" for part in block.sparse_parts]
    return IftModel(out, sparse_layers, transform, sparsity)


#: The constructor argument holding the hidden widths of each in-project model that Sparse Wide widens.
WIDTH_ARGUMENT = {"mlp": "hidden", "cnn": "channels"}


def iso_flop_model(model_name: str, data: Any, transform: str, sparsity: float, exact_flops: bool = True,
                   **kwargs: Any) -> IftModel:
    """An in-project model (``mlp`` or ``cnn``) sized for ``data`` with a Sparse-IFT applied.

    Parameters
    ----------
    model_name : {"mlp", "cnn"}
    data : DataSplits or DataSpec
        What :func:`sparsecraft.models.model_for_data` accepts (``input_shape`` is read).
    transform : str
        A name in :data:`TRANSFORMS`, or ``"dense"`` for the dense reference (no sparse layers).
    sparsity : float
        In (0, 1) (ignored for ``"dense"``).
    exact_flops : bool
        For ``wide``: the paper's factor ``1/sqrt(1 - s)`` keeps interior layers iso-FLOP, but the
        dense first and last layers grow with the width; ``True`` (default) instead solves
        ``a k + b (1 - s) k^2 = a + b`` for the width factor ``k`` (``a``: MACs of the first and last
        layers, ``b``: of the interior ones, in the dense model), so the whole model is iso-FLOP.
        It equals the paper's factor when the edge layers cost nothing.
    **kwargs
        Constructor arguments of the dense model; for ``wide`` its ``hidden`` / ``channels`` are
        multiplied by the width factor and rounded.

    Returns
    -------
    IftModel
        For ``wide`` the sparse layers are all but the first and last.
    """
    from ..models import MODELS, model_for_data

    if model_name not in WIDTH_ARGUMENT:
        raise SparsecraftError(f"Sparse-IFT models are built for {', '.join(WIDTH_ARGUMENT)}, got {model_name!r}")
    dense = model_for_data(model_name, data, **kwargs)
    if transform == "dense":
        return IftModel(dense, [], "dense", 0.0)
    method = TRANSFORMS.get(transform)
    if not method.changes_width:
        return apply_sparse_ift(dense, transform, sparsity)
    factor = method.width_factor(sparsity)
    if exact_flops:
        per_layer = macs_by_layer(dense, torch.zeros(1, *data.input_shape))
        interior = {t.module_name for t in find_targets(dense, keep_dense=("first", "last"), types=_LAYER_TYPES)}
        b = (1.0 - sparsity) * sum(v for n, v in per_layer.items() if n in interior)
        a = sum(v for n, v in per_layer.items() if n not in interior)
        factor = (-a + math.sqrt(a * a + 4.0 * b * sum(per_layer.values()))) / (2.0 * b)
    arg = WIDTH_ARGUMENT[model_name]
    widths = kwargs.get(arg, inspect.signature(MODELS.get(model_name)).parameters[arg].default)
    wide = model_for_data(model_name, data, **{**kwargs, arg: tuple(max(1, round(w * factor)) for w in widths)})
    names = [t.module_name for t in find_targets(wide, keep_dense=("first", "last"), types=_LAYER_TYPES)]
    return IftModel(wide, names, transform, sparsity)

def train_ift(ift: IftModel, data: Any, method: str = "rigl", epochs: int = 5, lr: float = 3e-3,
              batch_size: int = 64, seed: int = 0, progress: bool = False, **options: Any) -> Updater | None:
    """Train ``ift.model`` in place with its sparse layers at ``ift.sparsity`` (uniform), the rest dense.

    Parameters
    ----------
    ift : IftModel
        A ``"dense"`` one is trained plainly.
    data : DataSplits or (Tensor, Tensor)
    method : str
        A sparse-training method of :data:`sparsecraft.training.UPDATERS` (``static``, ``set``,
        ``rigl``, ...); ``**options`` are its options.
    epochs, lr, batch_size, seed, progress
        As :func:`sparsecraft.training.fit` (AdamW, cosine LR).

    Returns
    -------
    Updater or None
        The attached updater (its Sparsifier holds the masks; ``None`` for a dense model).
    """
    if not ift.sparse_layers:
        fit(ift.model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
        return None
    config = SparsityConfig(ift.sparsity, allocation="uniform", layers=ift.sparse_layers)
    updater = make_updater(method, config, seed=seed, **options)
    fit(ift.model, data, updater, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
    return updater
