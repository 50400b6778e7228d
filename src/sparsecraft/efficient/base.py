"""The one interface of the parameter-efficient fine-tuning methods: ``apply`` then train, then ``merge``.

``apply(model, "lora", rank=4)`` freezes ``model``, rewires it in place for the method and returns an
:class:`Adapter`. Train ``adapter.trainable_parameters()`` with any optimizer, calling
``adapter.attach(optimizer)`` once, ``adapter.step(step, total)`` after every optimizer step and adding
``adapter.regularizer()`` to the loss; ``adapter.merge()`` then returns the plain model (every wrapped
layer an ``nn.Linear`` of the original shape again, so inference costs what it cost before). Methods
that prune (PST, movement pruning) also leave their masks in ``adapter.sparsifier``.
"""
from __future__ import annotations

import weakref
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from ..errors import SparsecraftError
from ..options import Option
from ..registry import Registry
from ..target import Target, find_targets

METHODS: Registry[type["Adapter"]] = Registry("parameter-efficient method")


class Adapter:
    """Base class: a method rewires a frozen model; only :meth:`trainable_parameters` train.

    Subclasses set ``options`` (what :func:`apply` accepts) and implement ``__init__(model, targets,
    **options)``, :meth:`trainable_parameters` and :meth:`_merge`.

    Attributes
    ----------
    model : nn.Module
        The model being fine-tuned (modified in place).
    sparsifier : Sparsifier or None
        The masks of a pruning method, set by :meth:`merge`.
    """

    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.sparsifier = None
        self.merged = False
        self._optimizers: list[weakref.ReferenceType] = []

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters to give the optimizer (nothing else in the model requires grad)."""
        raise NotImplementedError

    def num_trainable(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.trainable_parameters())

    def attach(self, optimizer: torch.optim.Optimizer) -> "Adapter":
        """Remember ``optimizer`` so that a method that re-selects its parameters can reset their state."""
        self._optimizers.append(weakref.ref(optimizer))
        return self

    def _reset_state(self, param: torch.Tensor) -> None:
        for ref in self._optimizers:
            opt = ref()
            if opt is not None:
                opt.state.pop(param, None)

    def step(self, step: int, total: int) -> None:
        """Called after optimizer step ``step`` (1-based) of ``total``: schedules live here (default: none)."""

    def regularizer(self) -> torch.Tensor | float:
        """Term to add to the training loss (default 0)."""
        return 0.0

    def merge(self) -> nn.Module:
        """Fold the trained parameters into plain ``nn.Linear`` layers; return the model (every
        parameter requires grad again).

        Raises
        ------
        SparsecraftError
            If called twice.
        """
        if self.merged:
            raise SparsecraftError("this adapter is already merged; apply the method again to fine-tune more")
        self._merge()
        self.merged = True
        for p in self.model.parameters():
            p.requires_grad_(True)
        return self.model

    def _merge(self) -> None:
        raise NotImplementedError


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule ``name`` of ``model``."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` ``(out, in)`` and ``bias`` ``(out,)``."""
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def linear_targets(model: nn.Module, layers: Iterable[str] | None, keep_dense: Iterable[str],
                   within: nn.Module | str | None) -> list[Target]:
    """The ``nn.Linear`` layers a method acts on (:func:`sparsecraft.target.find_targets`)."""
    return find_targets(model, layers, keep_dense, types=(nn.Linear,), within=within)


def apply(model: nn.Module, method: str, layers: Iterable[str] | None = None, keep_dense: Iterable[str] = (),
          within: nn.Module | str | None = None, **options: Any) -> Adapter:
    """Freeze ``model`` and prepare it for parameter-efficient fine-tuning with ``method``.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    method : str
        A name in ``METHODS``: ``lora``, ``s2ft``, ``pst``, ``movement``, ``sara``.
    layers, keep_dense, within
        Which ``nn.Linear`` layers the method may touch (see :func:`sparsecraft.target.find_targets`);
        S2FT instead finds the attention/FFN blocks inside ``within`` (default: the whole model).
    **options
        The method's options (``METHODS.get(method).options``); an unknown one raises.

    Returns
    -------
    Adapter

    Raises
    ------
    SparsecraftError
        Unknown method or option, an option value out of its bounds, or nothing to adapt.
    """
    cls = METHODS.get(method)
    known = {o.name: o for o in cls.options}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SparsecraftError(f"method {method!r} has no option {unknown[0]!r}; its options are: "
                               f"{', '.join(known) or 'none'}")
    values = {name: opt.check(options.get(name, opt.default)) for name, opt in known.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    return cls(model, layers=layers, keep_dense=keep_dense, within=within, **values)
