"""Sparse training under FSDP2 (``torch.distributed.fsdp.fully_shard``), on CPU with gloo or on GPUs.

:func:`shard` attaches an updater to the plain model (initial masks built, broadcast from rank 0),
then shards every targeted layer and the root with ``fully_shard``: each parameter becomes a
``DTensor`` holding this rank's rows, and each mask buffer is re-registered as a ``DTensor`` with
exactly its parameter's sharding. Between mask updates everything stays sharded: the optimizer
step post-hook zeroes pruned weights shard by shard, and gradients of pruned weights are zeroed on
the shards before the optimizer step (FSDP2 produces the sharded gradients after the original
parameters' tensor hooks are gone, so the :class:`~sparsecraft.sparsifier.Sparsifier` hooks
cannot do it).

Whenever the updater reads or changes masks (every ``after_step``, and ``before_step`` for the
methods that read gradients: SET/RigL, N:M) the full weights, gradients and masks are gathered
(``DTensor.full_tensor``) into plain tensors put in place on the modules, the updater runs exactly
as in one process (identical inputs on every rank, generators seeded from ``(seed, step)``, so
identical masks without further communication), and the results are cut back into the shards;
optimizer state is zeroed wherever a mask changed, as :meth:`Sparsifier.set_mask` does.
Each gather holds one full copy of the targeted weights at a time, so peak memory per rank is
that of the full masked weights, only during the gather.

Sharded checkpoints (:func:`save_sharded` / :func:`load_sharded`) write weights and masks with
``torch.distributed.checkpoint``: every rank writes its own rows.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from ..criteria import Calib
from ..errors import SparsecraftError
from ..sparsifier import Sparsifier
from ..target import Target
from .base import Updater
from .nm import NMTraining

# the methods whose state is masks and weights only (tests/training/test_fsdp.py runs all but snip,
# which is static with a data-driven criterion at attach time)
FSDP_METHODS = ("static", "snip", "gmp", "set", "rigl", "srste", "gradflow", "bidirectional")


def _like(full: torch.Tensor, sharded: torch.Tensor) -> torch.Tensor:
    """``full`` (a plain tensor identical on every rank) cut into ``sharded``'s placement, locally."""
    return distribute_tensor(full, sharded.device_mesh, sharded.placements, src_data_rank=None)


class ShardedUpdater:
    """An attached updater working on a ``fully_shard``-ed model; pass it to :func:`fit`.

    Built by :func:`shard`. :func:`fit` (or the caller) then calls :meth:`attach` with the optimizer
    built over the sharded parameters; ``before_step`` / ``after_step`` / ``finalize`` follow the
    :class:`~sparsecraft.training.base.Updater` protocol.

    Parameters
    ----------
    updater : Updater
        Attached to the plain model that has since been sharded.
    model : nn.Module
        The sharded model (root of ``fully_shard``).
    """

    def __init__(self, updater: Updater, model: nn.Module) -> None:
        self.updater = updater
        self.sharded_model = model
        self.model: nn.Module | None = None  # set by attach(), as fit() expects of an updater
        self.optimizer: torch.optim.Optimizer | None = None

    # ------------------------------------------------------------------ Updater protocol
    @property
    def total_steps(self) -> int:
        return self.updater.total_steps

    def schedule_steps(self) -> int:
        return self.updater.schedule_steps()

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
               calib: Calib = None) -> "ShardedUpdater":
        """Bind the optimizer built over the sharded parameters (``calib`` was used by :func:`shard`)."""
        if model is not self.sharded_model:
            raise SparsecraftError("attach() got another model than the one shard() sharded; pass the sharded model")
        self.model, self.optimizer = model, optimizer
        self.updater.optimizer, self.updater.scheduler = optimizer, scheduler
        if self.updater.sparsifier is not None and optimizer is not None:
            self.updater.sparsifier.attach(optimizer)  # step post-hook: masked_fill_ on the DTensor shards
        return self

    def before_step(self) -> None:
        """Mask the sharded gradients; run the updater's own ``before_step`` on gathered tensors."""
        self._require_attached()
        sp = self.updater.sparsifier
        if sp is not None and sp.mask_grads:
            with torch.no_grad():
                for t in sp.targets.values():
                    if t.param.grad is not None:
                        t.param.grad.masked_fill_(~sp.mask(t), 0)
        if self.updater.reads_grads_at(self.updater.step + 1):
            with self.gathered(grads=True):
                self.updater.before_step()

    def after_step(self) -> None:
        """Count the step and let the updater change masks, on gathered weights and masks."""
        self._require_attached()
        if not self.updater.changes_masks_at(self.updater.step + 1):
            self.updater.after_step()
            return
        with self.gathered():
            self.updater.after_step()

    def finalize(self) -> nn.Module:
        """End training (pruned weights exactly zero in the shards); returns the sharded model."""
        self._require_attached()
        with self.gathered():
            self.updater.finalize()
        return self.sharded_model

    # ------------------------------------------------------------------ reading masks
    def masks(self) -> dict[str, torch.Tensor]:
        """``{param name: full bool mask}``, gathered (collective: call on every rank)."""
        with self.gathered():
            return {n: m.clone() for n, m in self.updater.masks().items()}

    def sparsity(self) -> float:
        """Fraction of zeros over the masked weights (collective)."""
        with self.gathered():
            return self.updater.sparsity()

    def report(self) -> list[dict[str, Any]]:
        """As :meth:`Updater.report`, over the full masks (collective)."""
        with self.gathered():
            return self.updater.report()

    @property
    def events(self) -> list[dict]:
        return self.updater.events

    def _require_attached(self) -> None:
        if self.model is None:
            raise SparsecraftError("call attach(model, optimizer) (fit() does it) before training the sharded model")

    # ------------------------------------------------------------------ gathering
    @contextmanager
    def gathered(self, grads: bool = False) -> Iterator[None]:
        """Inside: plain full weights (with full gradients if ``grads``) and masks on the modules.

        On exit the (possibly changed) weights, gradients and masks are cut back into the shards,
        and optimizer state is zeroed where a mask changed. Collective: every rank must enter.
        """
        sp = self.updater.sparsifier
        targets = dict(sp.targets) if sp is not None else {}
        if isinstance(self.updater, NMTraining):
            targets.update({n: t for n, t in self.updater.targets.items() if n not in targets})
        saved: dict[str, tuple[nn.Parameter, torch.Tensor | None]] = {}
        for name, t in targets.items():
            p = t.param
            if not isinstance(p, DTensor):
                continue
            full = nn.Parameter(p.detach().full_tensor(), requires_grad=p.requires_grad)
            if grads and p.grad is not None:
                full.grad = p.grad.full_tensor()
            mask = getattr(t.module, f"{t.param_name}_mask", None)
            saved[name] = (p, mask)
            t.module._parameters[t.param_name] = full
            if mask is not None:
                setattr(t.module, f"{t.param_name}_mask", mask.full_tensor())
        try:
            yield
        finally:
            for name, (p, old_mask) in saved.items():
                self._reshard(targets[name], p, old_mask, grads)

    @torch.no_grad()
    def _reshard(self, t: Target, p: nn.Parameter, old_mask: torch.Tensor | None, grads: bool) -> None:
        full = t.param
        t.module._parameters[t.param_name] = p
        p.copy_(_like(full.detach(), p))
        if grads and full.grad is not None and p.grad is not None:
            p.grad.copy_(_like(full.grad, p.grad))
        mask_name = f"{t.param_name}_mask"
        if not hasattr(t.module, mask_name):  # N:M during training: masks live on the updater
            return
        new_mask = _like(getattr(t.module, mask_name).to(torch.bool), p)
        t.module.register_buffer(mask_name, new_mask, persistent=False)
        p.masked_fill_(~new_mask, 0)
        if old_mask is None or self.optimizer is None:
            return
        changed = old_mask ^ new_mask
        for value in self.optimizer.state.get(p, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                value.masked_fill_(changed, 0)


def shard(model: nn.Module, updater: Updater, calib: Calib = None, mesh: Any = None) -> ShardedUpdater:
    """Attach ``updater`` to ``model``, then shard the model with FSDP2, masks sharded alike.

    Call inside an initialised process group, on every rank, with the same model (same seed);
    build the optimizer *after* this call, over the sharded parameters (:func:`fit` does). Usage::

        updater = make_updater("rigl", SparsityConfig(0.9), total_steps=steps)
        sharded = shard(model, updater)          # model is now an FSDPModule
        fit(model, data, sharded, ...)           # or: optimizer = ...; sharded.attach(model, optimizer)

    Parameters
    ----------
    model : nn.Module
        Plain (not DDP-wrapped); sharded in place.
    updater : Updater
        Not yet attached, with ``total_steps`` set; not with ``sparse_kernels``.
    calib : (Tensor, Tensor), optional
        Calibration batch for data-driven initial masks.
    mesh : DeviceMesh, optional
        Passed to ``fully_shard`` (default: every rank, one dimension).

    Returns
    -------
    ShardedUpdater
        Pass it to :func:`fit` in place of ``updater``.
    """
    if updater.name not in FSDP_METHODS:
        raise SparsecraftError(f"method {updater.name!r} does not run under FSDP; use one of {', '.join(FSDP_METHODS)}")
    if updater.model is not None:
        raise SparsecraftError("shard() attaches the updater itself; pass an updater that is not attached yet")
    if updater.total_steps is None:
        raise SparsecraftError("shard() needs the updater's total_steps: make_updater(..., total_steps=N)")
    if getattr(updater, "sparse_kernels", False):
        raise SparsecraftError("sparse_kernels cannot be combined with FSDP; train the masked dense layers")
    if getattr(updater, "occupied", None):
        raise SparsecraftError("reserved (occupied) positions are not supported under FSDP")
    updater.attach(model, None, calib=calib)
    targets = dict(updater.sparsifier.targets) if updater.sparsifier is not None else {}
    if isinstance(updater, NMTraining):
        targets.update(updater.targets)
    modules = {id(t.module): t.module for t in targets.values() if t.module is not model}
    for module in modules.values():
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if updater.sparsifier is not None:
        _shard_masks(updater.sparsifier)
    return ShardedUpdater(updater, model)


def _shard_masks(sp: Sparsifier) -> None:
    """Replace each full mask buffer by a DTensor sharded like its (now sharded) parameter."""
    for t in sp.targets.values():
        name = f"{t.param_name}_mask"
        t.module.register_buffer(name, _like(getattr(t.module, name), t.param), persistent=False)
    sp.apply()


def save_sharded(path: str, sharded: ShardedUpdater) -> None:
    """Write the sharded weights and masks with ``torch.distributed.checkpoint`` (collective).

    Parameters
    ----------
    path : str
        A directory; every rank writes its own rows there.
    sharded : ShardedUpdater
    """
    dcp.save(_checkpoint_state(sharded), checkpoint_id=path)


def load_sharded(path: str, sharded: ShardedUpdater) -> None:
    """Read weights and masks written by :func:`save_sharded` into a model sharded the same way.

    Parameters
    ----------
    path : str
    sharded : ShardedUpdater
        Built by :func:`shard` over the same architecture and method; its masks are replaced.
    """
    state = _checkpoint_state(sharded)
    dcp.load(state, checkpoint_id=path)
    sharded.sharded_model.load_state_dict(state["model"])
    sp = sharded.updater.sparsifier
    if sp is not None:
        for name, t in sp.targets.items():
            t.module.register_buffer(f"{t.param_name}_mask", state["masks"][name].to(torch.bool), persistent=False)
        sp.apply()


def _checkpoint_state(sharded: ShardedUpdater) -> dict[str, Any]:
    sp = sharded.updater.sparsifier
    if sp is None:
        raise SparsecraftError(f"method {sharded.updater.name!r} keeps no masks to checkpoint; "
                               "finalize() it first and save the model")
    masks = {name: sp.mask(t).to(torch.uint8) for name, t in sp.targets.items()}
    return {"model": sharded.sharded_model.state_dict(), "masks": masks}
