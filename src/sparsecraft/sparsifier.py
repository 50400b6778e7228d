"""The Sparsifier: masks held on the modules and kept applied through training.

Design (why not ``torch.nn.utils.parametrize``): each mask is a non-persistent bool buffer
``<param>_mask`` on its module and the parameter itself is kept *exactly zero* where the mask is
False. Gradients are masked by a tensor hook, so optimizer state (momentum, Adam moments) never
accumulates for pruned weights, and a step post-hook on each attached optimizer re-applies the mask
(covering weight decay and any optimizer that moves zero-gradient weights). Hence:

* the forward pass is the plain module's (no extra multiply, works with torch.compile, DDP and
  Hugging Face ``save_pretrained``), and the zeros are real zeros that the CPU kernels can exploit;
* ``model.state_dict()`` keeps its usual keys; masks are saved by :meth:`Sparsifier.save`.

Masks are bool tensors of the parameter's shape; density = kept / total.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from .errors import SparsecraftError
from .patterns import Pattern, Unstructured, get_pattern
from .target import Target, target_by_name


class Sparsifier:
    """Holds one mask per target parameter of ``model`` and keeps the pruned weights at zero.

    The one hand-off between the stages: one-shot pruning (:func:`sparsecraft.prune`), the
    training updaters and post-training pruning (:func:`sparsecraft.posttrain.prune_model`) all
    return one, and reporting, fine-tuning (:meth:`attach`), saving and conversion read it.

    Parameters
    ----------
    model : nn.Module
        The model whose parameters are masked (the inner module if wrapped in DDP).
    masks : dict
        ``{"layer.weight": bool tensor of that parameter's shape}`` (True = kept).
    patterns : dict, optional
        ``{"layer.weight": pattern spec}``; default unstructured. Masks are validated.
    mask_grads : bool
        Zero the gradients of pruned weights (turn off to see dense gradients, as RigL needs at
        its update steps; :meth:`dense_grads` does that temporarily).
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor],
                 patterns: dict[str, str | Pattern] | None = None, mask_grads: bool = True) -> None:
        self.model = model
        self.mask_grads = mask_grads
        self.targets: dict[str, Target] = {}
        self.patterns: dict[str, Pattern] = {}
        self._handles: list[Any] = []
        self._optimizers: list[weakref.ReferenceType] = []
        for name, mask in masks.items():
            target = target_by_name(model, name)
            pattern = get_pattern((patterns or {}).get(name, Unstructured()))
            self._check_mask(name, target, mask, pattern)
            self.targets[name] = target
            self.patterns[name] = pattern
            target.module.register_buffer(f"{target.param_name}_mask", mask.to(torch.bool).clone(), persistent=False)
            if target.param.requires_grad:  # frozen weights get no gradient to mask (the step hook still applies)
                self._handles.append(target.param.register_hook(self._grad_hook(target)))
        self.apply()

    @staticmethod
    def _check_mask(name: str, target: Target, mask: torch.Tensor, pattern: Pattern) -> None:
        if tuple(mask.shape) != tuple(target.param.shape):
            raise SparsecraftError(
                f"mask for {name} has shape {tuple(mask.shape)} but the parameter has {tuple(target.param.shape)}"
            )
        pattern.validate(mask.to(torch.bool))

    def _grad_hook(self, target: Target):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            return grad.masked_fill(~self.mask(target), 0) if self.mask_grads else grad
        return hook

    # ----------------------------------------------------------------------------- masks
    @staticmethod
    def mask(target: Target) -> torch.Tensor:
        """The bool mask stored on ``target``'s module."""
        return getattr(target.module, f"{target.param_name}_mask")

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``{name: bool mask}`` for every target (the live buffers; do not modify in place)."""
        return {name: self.mask(t) for name, t in self.targets.items()}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight in place (``masked_fill``: NaN and inf become zeros too)."""
        for t in self.targets.values():
            t.param.masked_fill_(~self.mask(t), 0)

    @torch.no_grad()
    def set_mask(self, name: str, mask: torch.Tensor) -> None:
        """Replace a mask (e.g. a drop/grow or schedule update).

        Newly pruned weights become zero; newly grown weights keep their current value (zero if
        they were pruned before, as RigL and SET specify); optimizer state of every attached
        optimizer is reset to zero wherever the mask changed.
        """
        if name not in self.targets:
            raise SparsecraftError(f"{name!r} is not masked; masked parameters: {', '.join(self.targets)}")
        t = self.targets[name]
        mask = mask.to(torch.bool)
        self._check_mask(name, t, mask, self.patterns[name])
        old = self.mask(t)
        changed = old ^ mask
        old.copy_(mask)
        t.param.masked_fill_(~mask, 0)
        if bool(changed.any()):
            self._reset_state(t.param, changed)

    def _reset_state(self, param: torch.Tensor, where: torch.Tensor) -> None:
        for ref in self._optimizers:
            opt = ref()
            if opt is None:
                continue
            for value in opt.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.masked_fill_(where, 0)

    # ------------------------------------------------------------------------- training
    def attach(self, optimizer: torch.optim.Optimizer) -> "Sparsifier":
        """Re-apply the masks after every ``optimizer.step()``; reset its state on mask changes."""
        self._optimizers.append(weakref.ref(optimizer))
        self._handles.append(optimizer.register_step_post_hook(lambda *_: self.apply()))
        return self

    class _DenseGrads:
        def __init__(self, owner: "Sparsifier") -> None:
            self.owner, self.saved = owner, owner.mask_grads

        def __enter__(self) -> None:
            self.owner.mask_grads = False

        def __exit__(self, *exc: object) -> None:
            self.owner.mask_grads = self.saved

    def dense_grads(self) -> "_DenseGrads":
        """Context manager: backward passes inside it produce dense (unmasked) gradients."""
        return Sparsifier._DenseGrads(self)

    # ---------------------------------------------------------------------------- report
    def report(self) -> list[dict[str, Any]]:
        """Per-target rows plus a final ``"total"`` row.

        Returns
        -------
        list of dict
            Keys layer, shape, pattern, params, kept, sparsity (see :func:`report_rows`).
        """
        return report_rows(self.masks, {n: str(p) for n, p in self.patterns.items()})

    def sparsity(self) -> float:
        """Fraction of zeros over all masked parameters."""
        return self.report()[-1]["sparsity"]

    # -------------------------------------------------------------------------- finishing
    def finalize(self) -> nn.Module:
        """Bake the masks into plain weights: remove the buffers and hooks; return the model."""
        self.apply()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for t in self.targets.values():
            delattr(t.module, f"{t.param_name}_mask")
        self.targets.clear()
        return self.model

    def save(self, path: str, force: bool = False, model_spec: dict | None = None,
             extra: dict | None = None) -> None:
        """Write the model's weights and masks to one safetensors file (see ``sparsecraft.checkpoint``)."""
        from .checkpoint import save_checkpoint

        save_checkpoint(path, self.model, self.masks, {n: str(p) for n, p in self.patterns.items()},
                        force=force, model_spec=model_spec, extra=extra)

    @classmethod
    def load(cls, path: str, model: nn.Module) -> "Sparsifier":
        """Load weights and masks saved by :meth:`save` into ``model``, verifying everything."""
        from .checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        ckpt.load_into(model)
        return cls(model, ckpt.masks, ckpt.patterns)


def report_rows(masks: dict[str, torch.Tensor], patterns: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per mask plus a final ``"total"`` row.

    Keys: layer, shape, pattern, params, kept (True entries of the mask), sparsity (1 - kept/params).
    """
    rows = []
    for name, m in masks.items():
        kept = int(m.sum())
        rows.append({"layer": name, "shape": list(m.shape), "pattern": (patterns or {}).get(name, "unstructured"),
                     "params": m.numel(), "kept": kept, "sparsity": 1.0 - kept / m.numel()})
    n = sum(r["params"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    rows.append({"layer": "total", "shape": [], "pattern": "", "params": n, "kept": kept,
                 "sparsity": 1.0 - kept / max(n, 1)})
    return rows
