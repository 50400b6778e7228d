"""Which parameters may be sparsified: the one place that selects target layers.

Every caller that needs "the layers to prune / convert / calibrate" (``sparsecraft.prune``, the
training updaters, post-training pruning, ``inference.convert``, the CLI and the benchmarks) asks
:func:`find_targets`. By default every ``weight`` of a Linear, Conv1d/2d/3d or Embedding layer is a
target (this covers the linear layers of Hugging Face transformers models, which are
``nn.Linear``). Biases, norms and BatchNorm scales are never targets.

Layers are named as in ``model.named_modules()``. ``layers`` / ``keep_dense`` accept exact module
names, ``fnmatch`` globs (``"encoder.*.attention.*"``), the name of a parent module (everything
inside it), or the shortcuts ``"first"`` / ``"last"``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .errors import SparsecraftError

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


@dataclass
class Target:
    """One prunable parameter: ``module.<param_name>``, known in the model as ``name``."""

    module_name: str
    module: nn.Module
    param_name: str = "weight"

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name

    @property
    def param(self) -> nn.Parameter:
        return getattr(self.module, self.param_name)

    @property
    def fan_in_out(self) -> tuple[int, ...]:
        """Dimensions ER/ERK use: (out, in) for Linear/Embedding, (out, in, *kernel) for Conv."""
        return tuple(self.param.shape)


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatch(name, pattern) or name.startswith(pattern + ".")


def find_targets(
    model: nn.Module,
    layers: Iterable[str] | None = None,
    keep_dense: Iterable[str] = (),
    *,
    types: tuple[type[nn.Module], ...] = PRUNABLE,
    within: nn.Module | str | None = None,
) -> list[Target]:
    """List the prunable targets of ``model`` in module order.

    A weight shared by several modules (tied input/output embeddings) is listed once, under the
    first module that holds it, so it gets exactly one mask.

    Parameters
    ----------
    model : nn.Module
    layers : iterable of str, optional
        Restrict to these module names, globs or parent modules (default: every prunable layer).
    keep_dense : iterable of str
        Exclude these names, globs, parent modules, or ``"first"`` / ``"last"``.
    types : tuple of module classes
        Layer types that count as prunable (default Linear, Conv1d/2d/3d, Embedding).
    within : nn.Module or str, optional
        Only layers inside this submodule of ``model`` (or the submodule of that name), e.g. the
        list of transformer blocks; ``"first"``/``"last"`` then refer to this scope.

    Returns
    -------
    list of Target
        Module order; names are full names in ``model``.

    Raises
    ------
    SparsecraftError
        When a name matches no prunable layer (the message lists the layers), or nothing is left.
    """
    scope = _scope(model, within)
    found, seen = [], set()
    for n, m in model.named_modules():
        in_scope = not scope or n == scope or n.startswith(scope + ".")
        if in_scope and isinstance(m, types) and id(m.weight) not in seen:  # tied weights: one target
            seen.add(id(m.weight))
            found.append(Target(n, m))
    if not found:
        kinds = ", ".join(t.__name__ for t in types)
        where = f" inside {scope!r}" if scope else ""
        raise SparsecraftError(f"model has no {kinds} layers{where} to sparsify")
    names = [t.module_name for t in found]

    def match(patterns: Iterable[str], what: str) -> set[str]:
        chosen: set[str] = set()
        for p in patterns:
            if p == "first":
                hits = names[:1]
            elif p == "last":
                hits = names[-1:]
            else:
                hits = [n for n in names if _matches(n, p)]
            if not hits:
                shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise SparsecraftError(f"{what} {p!r} matches no prunable layer; layers are: {shown}")
            chosen.update(hits)
        return chosen

    layers = list(layers or ())
    selected = match(layers, "layer") if layers else set(names)
    dense = match(keep_dense, "keep_dense layer")
    targets = [t for t in found if t.module_name in selected and t.module_name not in dense]
    if not targets:
        raise SparsecraftError("every prunable layer was excluded; nothing left to sparsify")
    return targets


def _scope(model: nn.Module, within: nn.Module | str | None) -> str | None:
    """The module name of ``within`` in ``model`` (``""`` for the model itself), or None."""
    if within is None or isinstance(within, str):
        if within:
            try:
                model.get_submodule(within)
            except AttributeError:
                raise SparsecraftError(f"model has no submodule {within!r} to select layers within") from None
        return within
    for name, module in model.named_modules():
        if module is within:
            return name
    raise SparsecraftError("the module to select layers within is not part of the model")


def target_by_name(model: nn.Module, name: str) -> Target:
    """The Target for a parameter name such as ``"fc1.weight"``."""
    module_name, _, param_name = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        raise SparsecraftError(f"model has no layer {module_name!r}") from None
    if not isinstance(getattr(module, param_name, None), torch.Tensor):
        raise SparsecraftError(f"layer {module_name!r} has no parameter {param_name!r}")
    return Target(module_name, module, param_name)
