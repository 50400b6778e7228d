"""Which parameters may be sparsified.

By default every ``weight`` of a Linear, Conv1d/2d/3d or Embedding layer is a target (this covers
the linear layers of Hugging Face transformers models, which are ``nn.Linear``). Biases, norms and
BatchNorm scales are never targets. ``keep_dense`` names layers to leave dense: exact module names,
``fnmatch`` globs (``"encoder.*.attention.*"``), or the shortcuts ``"first"`` / ``"last"``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .errors import SparsecraftError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


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


def find_targets(
    model: nn.Module,
    layers: Iterable[str] | None = None,
    keep_dense: Iterable[str] = (),
) -> list[Target]:
    """List the prunable targets of ``model`` in module order.

    A weight shared by several modules (tied input/output embeddings) is listed once, under the
    first module that holds it, so it gets exactly one mask.

    ``layers``: restrict to these module names or globs (default: all prunable layers).
    ``keep_dense``: exclude these names, globs, or ``"first"``/``"last"``.
    Unknown names raise :class:`SparsecraftError` listing the prunable layers.
    """
    found, seen = [], set()
    for n, m in model.named_modules():
        if isinstance(m, PRUNABLE) and id(m.weight) not in seen:  # tied weights: one target, one mask
            seen.add(id(m.weight))
            found.append(Target(n, m))
    if not found:
        raise SparsecraftError("model has no Linear, Conv or Embedding layers to sparsify")
    names = [t.module_name for t in found]

    def match(patterns: Iterable[str], what: str) -> set[str]:
        chosen: set[str] = set()
        for p in patterns:
            if p == "first":
                hits = names[:1]
            elif p == "last":
                hits = names[-1:]
            else:
                hits = [n for n in names if n == p or fnmatch.fnmatch(n, p)]
            if not hits:
                shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
                raise SparsecraftError(f"{what} {p!r} matches no prunable layer; layers are: {shown}")
            chosen.update(hits)
        return chosen

    selected = match(layers, "layer") if layers else set(names)
    dense = match(keep_dense, "keep_dense layer")
    targets = [t for t in found if t.module_name in selected and t.module_name not in dense]
    if not targets:
        raise SparsecraftError("every prunable layer was excluded; nothing left to sparsify")
    return targets


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
