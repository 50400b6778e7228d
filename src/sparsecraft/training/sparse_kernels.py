"""Sparse training on the native kernels: the masked Linear and convolution layers of a run become
trainable SparseLinear / SparseConv layers, so forward, backward and the optimizer cost in proportion
to the kept weights.

Masks sit on dense tensors everywhere else in sparsecraft, so a 90%-sparse step costs as much as a
dense one. Here, once an updater has set its masks (``make_updater(..., sparse_kernels=True)``, or
:func:`use_sparse_kernels` on an attached updater), every masked ``nn.Linear`` is replaced by
:meth:`SparseLinear.trainable <sparsecraft.inference.SparseLinear.trainable>`: only the kept
values are a parameter (the optimizer's moments are nnz long), the forward runs the packed
kernel, the input gradient runs the kernel over the transposed weight and the weight gradient is
an SDDMM at the kept positions (:mod:`sparsecraft.formats.grad`). Every masked Conv1d / Conv2d that
:class:`~sparsecraft.inference.SparseConv` runs (1x1 with any stride, stride-1 k x k, padding at most
k - 1) becomes :meth:`SparseConv.trainable <sparsecraft.inference.SparseConv.trainable>` the same way
(:mod:`sparsecraft.inference.conv_grad`); any other target stays masked-dense, and
:attr:`KernelSparsifier.masked_dense` says why.

The updater keeps working unchanged through :class:`KernelSparsifier`, a :class:`Sparsifier`
whose targets are those layers: it reads their dense ``weight`` views (rebuilt only when read,
i.e. on update steps), a mask change repacks the layer and remaps its optimizer state exactly as
:meth:`Sparsifier.set_mask` treats a masked dense weight (SET, RigL), and turning ``mask_grads``
off (RigL before an update step) makes those layers also compute the dense gradient, on that step
only. For the same seed, training equals masked-dense training to fp32 rounding.
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import SparsecraftError
from ..inference.conv import SparseConv, conv_train_unsupported
from ..inference.linear import SparseLinear
from ..inference.trainable import TrainableValues
from ..patterns import NM, Block, Pattern, Unstructured
from ..sparsifier import Sparsifier
from ..target import Target

if TYPE_CHECKING:
    from .base import Updater


def kernel_format(pattern: Pattern, shape: tuple[int, ...]) -> tuple[str, dict[str, int]] | None:
    """The packed format that trains a mask of ``pattern`` on a weight of ``shape``.

    Parameters
    ----------
    pattern : Pattern
    shape : tuple of int
        The weight's (out_features, in_features).

    Returns
    -------
    (str, dict) or None
        ``('csr16', {})`` for unstructured masks, ``('nm', {N, M})`` for N:M along in_features,
        ``('block', {R, C})`` for blocks that tile the weight exactly; None when no packed
        format fits (the layer then trains masked-dense).
    """
    if isinstance(pattern, Unstructured):
        return "csr16", {}
    if isinstance(pattern, NM) and pattern.layout != "flat" and shape[1] % pattern.m == 0:
        return "nm", {"N": pattern.n, "M": pattern.m}
    if isinstance(pattern, Block) and shape[0] % pattern.rows == 0 and shape[1] % pattern.cols == 0 \
            and pattern.rows <= 16 and pattern.cols <= 16:
        return "block", {"R": pattern.rows, "C": pattern.cols}
    return None


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _swap_param(optimizer: torch.optim.Optimizer | None, old: torch.Tensor, new: nn.Parameter,
                index: torch.Tensor) -> None:
    """Let ``optimizer`` train ``new`` (the values of ``old`` at the flat ``index``) instead of ``old``;
    its state tensors shaped like ``old`` are gathered the same way."""
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if state:
        optimizer.state[new] = {k: (v.detach().reshape(-1)[index].view(new.shape).clone()
                                    if isinstance(v, torch.Tensor) and v.shape == old.shape else v)
                                for k, v in state.items()}


KernelLayer = TrainableValues  # a trainable SparseLinear or SparseConv


class KernelSparsifier(Sparsifier):
    """A :class:`Sparsifier` whose Linear and convolution targets are trainable SparseLinear / SparseConv layers.

    Targets that are kernel layers store only their kept weights, so :meth:`apply` has nothing
    to zero there and :meth:`set_mask` repacks them; any other target (an unsupported conv, an
    Embedding) is a masked dense parameter handled as by the base class.

    Parameters
    ----------
    model, masks, patterns, mask_grads
        As :class:`Sparsifier`; the modules holding the kernel targets' ``weight`` must be trainable
        :class:`~sparsecraft.inference.SparseLinear` / :class:`~sparsecraft.inference.SparseConv`
        layers with exactly these masks.
    masked_dense : dict, optional
        ``{target name: why}`` for the targets left masked-dense (kept as :attr:`masked_dense`).

    Attributes
    ----------
    repack_seconds : list of float
        Wall-clock seconds of each layer repack (mask change), in order.
    masked_dense : dict
        ``{target name: one phrase}``: the targets that train masked-dense and why.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor],
                 patterns: dict[str, str | Pattern] | None = None, mask_grads: bool = True,
                 masked_dense: dict[str, str] | None = None) -> None:
        self.repack_seconds: list[float] = []
        self.masked_dense = dict(masked_dense or {})
        self._mask_grads = mask_grads
        super().__init__(model, masks, patterns, mask_grads)
        self.mask_grads = mask_grads  # now that the targets are known: their layers' dense_grad follows

    def kernel_layers(self) -> dict[str, KernelLayer]:
        """``{target name: layer}`` of the targets trained on the kernels (SparseLinear or SparseConv)."""
        return {n: t.module for n, t in getattr(self, "targets", {}).items() if _is_kernel(t.module)}

    @property  # type: ignore[override]
    def mask_grads(self) -> bool:
        """False makes the kernel layers also store the dense weight gradient (in ``weight.grad``)."""
        return self._mask_grads

    @mask_grads.setter
    def mask_grads(self, value: bool) -> None:
        self._mask_grads = bool(value)
        for layer in self.kernel_layers().values():
            layer.dense_grad = not self._mask_grads

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights of the masked dense targets (kernel layers store none)."""
        for t in self.targets.values():
            if not _is_kernel(t.module):
                t.param.masked_fill_(~self.mask(t), 0)

    @torch.no_grad()
    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        """Replace a mask; a kernel layer repacks (its values and optimizer state follow the mask)."""
        t = self.targets.get(name)
        if t is None or not _is_kernel(t.module):
            return super().set_mask(name, mask)
        mask = mask.to(torch.bool)
        self._check_mask(name, t, mask, self.patterns[name])
        old = self.mask(t)
        if torch.equal(old, mask):
            return
        start = time.perf_counter()
        t.module.repack(mask, [o for o in (ref() for ref in self._optimizers) if o is not None])
        old.copy_(mask)
        self.repack_seconds.append(time.perf_counter() - start)

    def dense_model(self) -> nn.Module:
        """A copy of the model with every kernel layer back as an ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``
        (pruned weights exactly zero).

        Returns
        -------
        nn.Module
            The copy; this sparsifier's model is unchanged.
        """
        model = copy.deepcopy(self.model)
        for name in self.kernel_layers():
            module_name = name.rpartition(".")[0]
            _set_submodule(model, module_name, model.get_submodule(module_name).dense_module())
        return model

    def save(self, path: str, force: bool = False, model_spec: dict | None = None, extra: dict | None = None) -> None:
        """Write the weights (as plain Linear / conv weights, :meth:`dense_model`) and masks to one checkpoint."""
        from ..checkpoint import save_checkpoint

        save_checkpoint(path, self.dense_model(), self.masks, {n: str(p) for n, p in self.patterns.items()},
                        force=force, model_spec=model_spec, extra=extra)


def _is_kernel(module: nn.Module) -> bool:
    return isinstance(module, TrainableValues) and module.is_trainable


def _kernel_layer(t: Target, mask: torch.Tensor, pattern: Pattern) -> tuple[KernelLayer | None, str]:
    """The trainable layer for target ``t``, or None and why it stays masked-dense."""
    module = t.module
    if t.param_name != "weight":
        return None, f"parameter {t.param_name!r} is not a layer weight"
    if type(module) is nn.Linear:
        fmt = kernel_format(pattern, tuple(t.param.shape))
        if fmt is None:
            return None, f"pattern {pattern} has no packed format for a {tuple(t.param.shape)} weight"
        return SparseLinear.trainable(module.weight.detach(), mask, module.bias, fmt[0], **fmt[1]), ""
    if type(module) in (nn.Conv1d, nn.Conv2d):
        why = conv_train_unsupported(module)
        return (None, why) if why is not None else (SparseConv.trainable(module, mask), "")
    return None, f"{type(module).__name__} layers have no sparse kernel"


def to_kernel_layers(model: nn.Module, sparsifier: Sparsifier,
                     optimizer: torch.optim.Optimizer | None = None) -> KernelSparsifier:
    """Replace the masked ``nn.Linear`` / Conv1d / Conv2d layers of ``sparsifier`` by trainable
    SparseLinear / SparseConv layers.

    Parameters
    ----------
    model : nn.Module
        The model ``sparsifier`` masks (not a DDP wrapper: wrap after converting).
    sparsifier : Sparsifier
        Its masks; it is finalized (hooks removed) and replaced by the returned one.
    optimizer : torch.optim.Optimizer, optional
        Moved from each dense weight to the layer's kept values (state gathered at the kept
        positions); the returned sparsifier is attached to it.

    Returns
    -------
    KernelSparsifier
        The same masks over the converted model. Targets that are neither ``nn.Linear`` nor a supported
        convolution (:func:`~sparsecraft.inference.conv.conv_train_unsupported`), and Linears whose pattern
        has no packed format (:func:`kernel_format`), stay masked-dense (listed in ``masked_dense``).
    """
    if isinstance(sparsifier, KernelSparsifier):
        raise SparsecraftError("the model already trains on sparse kernels")
    masks = {n: m.detach().clone() for n, m in sparsifier.masks.items()}
    patterns = dict(sparsifier.patterns)
    mask_grads = sparsifier.mask_grads
    targets: dict[str, Target] = dict(sparsifier.targets)
    sparsifier.finalize()
    masked_dense: dict[str, str] = {}
    for name, t in targets.items():
        layer, why = _kernel_layer(t, masks[name], patterns[name])
        if layer is None:
            masked_dense[name] = why
            continue
        rows, cols = layer.packed.positions()
        _swap_param(optimizer, t.param, getattr(layer, "w_vals"), rows * layer.packed.shape[1] + cols)
        _set_submodule(model, t.module_name, layer)
    out = KernelSparsifier(model, masks, patterns, mask_grads, masked_dense)
    if optimizer is not None:
        out.attach(optimizer)
    return out


def use_sparse_kernels(updater: "Updater") -> KernelSparsifier:
    """Move an attached updater's run onto the sparse kernels (after its masks are set).

    Parameters
    ----------
    updater : Updater
        Attached (``updater.attach(model, optimizer)`` done), with masks (``updater.sparsifier``).

    Returns
    -------
    KernelSparsifier
        Now ``updater.sparsifier``; the updater's later mask updates repack the layers.
    """
    if type(updater).no_sparse_kernels:
        raise SparsecraftError(f"method {updater.name!r} cannot train on the sparse kernels "
                               f"({type(updater).no_sparse_kernels}); train it without sparse kernels")
    if updater.model is None or updater.sparsifier is None:
        raise SparsecraftError("sparse kernels need an attached updater with masks: call updater.attach(model, "
                               "optimizer) first (method 'dense' and mask-free methods have no sparse layers)")
    if updater.wrapped is not updater.model:
        raise SparsecraftError("cannot move a DDP-wrapped model onto sparse kernels: attach the updater to the "
                               "plain model, call use_sparse_kernels, then wrap it with sparse_kernels.wrap_ddp")
    updater.sparsifier = to_kernel_layers(updater.model, updater.sparsifier, updater.optimizer)
    return updater.sparsifier


def wrap_ddp(model: nn.Module, **kwargs: Any) -> nn.parallel.DistributedDataParallel:
    """DistributedDataParallel over a model whose layers were moved onto the kernels.

    The buffers (masks, packed int16 indices, which gloo cannot broadcast) are identical on every
    rank by construction (masks broadcast from rank 0 at attach, updates computed identically), so
    they are not broadcast (``broadcast_buffers=False``; BatchNorm statistics then stay per rank).
    RigL's dense gradients are averaged over the ranks inside the layers' backward.

    Parameters
    ----------
    model : nn.Module
        After :func:`use_sparse_kernels` (or an updater made with ``sparse_kernels=True`` attached).
    **kwargs
        Passed to DistributedDataParallel.

    Returns
    -------
    nn.parallel.DistributedDataParallel
    """
    return nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, **kwargs)


def summary(sparsifier: Sparsifier) -> dict[str, Any]:
    """Facts for a run report: kernel layers, those left masked-dense and why, repacks and their mean cost.

    Parameters
    ----------
    sparsifier : Sparsifier

    Returns
    -------
    dict
        ``kernel_layers`` (count), ``masked_dense`` (``{target: why}``), ``repacks`` and
        ``repack_ms_mean`` (zeros and an empty dict for a plain Sparsifier).
    """
    if not isinstance(sparsifier, KernelSparsifier):
        return {"kernel_layers": 0, "masked_dense": {}, "repacks": 0, "repack_ms_mean": 0.0}
    s = sparsifier.repack_seconds
    return {"kernel_layers": len(sparsifier.kernel_layers()), "masked_dense": dict(sparsifier.masked_dense),
            "repacks": len(s), "repack_ms_mean": 1e3 * sum(s) / len(s) if s else 0.0}
