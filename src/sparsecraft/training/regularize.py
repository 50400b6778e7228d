"""Pruning-aware sparse regularization (Jiang et al. 2022, "Pruning-aware Sparse Regularization for
Network Pruning", MaskSparsity).

Network slimming puts an L1 penalty on every BatchNorm scale; MaskSparsity first fixes *which*
channels will be pruned (a pruning mask) and penalises only those, leaving the kept channels free.
Here: after ``select_fraction`` of the steps (dense training), the ``config.sparsity`` fraction of
each chain's channels (see :mod:`.channels`; ``allocation`` uniform or global) with the lowest
score (BatchNorm ``|gamma|`` when a BatchNorm follows, else the L2 norm of the producer's rows) is
marked; from then on ``penalty * sign(.)`` (the L1 subgradient) is added to the gradients of those
channels' BatchNorm scale and shift (or producer rows and bias), which drives them to zero with any
optimizer. :meth:`finalize` removes the marked channels physically and returns the smaller dense
model (fine-tune it afterwards). We also penalise the BatchNorm shift so a removed channel's
constant output ``act(beta)`` goes to zero too, which makes the removal nearly lossless.
"""
from __future__ import annotations

import torch
from torch import nn

from ..criteria import Calib
from ..errors import SparsecraftError
from ..options import Option
from .base import UPDATERS, SparsityConfig, Updater
from .channels import Chain, find_chains, remove_channels


@UPDATERS.register("masksparsity")
class MaskSparsity(Updater):
    """Select channels, L1-penalise only them, remove them physically at :meth:`finalize`."""

    name = "masksparsity"
    options = (
        Option("penalty", float, 1e-3, "L1 strength on the selected channels", bounds="[0, inf)"),
        Option("select_fraction", float, 0.25, "fraction of training before the channels are selected",
               bounds="[0, 1)"),
    )
    default_sparsity = 0.5
    default_allocation = "uniform"
    no_sparse_kernels = "it trains dense channels and removes them at the end, with no masks meanwhile"

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 penalty: float = 1e-3, select_fraction: float = 0.25) -> None:
        super().__init__(config, total_steps, seed)
        if self.config.allocation not in ("uniform", "global"):
            raise SparsecraftError("masksparsity allocates channels 'uniform' or 'global', "
                                   f"got {self.config.allocation!r}")
        if self.config.pattern != "unstructured":
            raise SparsecraftError("masksparsity prunes whole channels; leave the pattern at its default")
        self.penalty = float(penalty)
        if self.penalty < 0:
            raise SparsecraftError(f"penalty must be >= 0, got {penalty!r}")
        self.select_fraction = float(select_fraction)
        if not 0.0 <= self.select_fraction < 1.0:
            raise SparsecraftError(f"select_fraction must lie in [0, 1), got {select_fraction!r}")
        self.chains: list[Chain] = []
        self.keep: dict[Chain, torch.Tensor] = {}
        self.removed: dict[str, int] = {}

    def setup(self, calib: Calib) -> None:
        targets, _ = self.config.targets(self.model)
        names = {t.module_name for t in targets}
        self.chains = [c for c in find_chains(self.model) if c.producer in names]
        if not self.chains:
            raise SparsecraftError("no prunable channel chains (layer -> [BatchNorm] -> activation -> layer) "
                                   "in this model")
        self.select_step = int(self.select_fraction * self.total_steps)
        if self.select_step == 0:
            self.select()

    def channel_scores(self, chain: Chain) -> torch.Tensor:
        """One score per output channel of ``chain.producer`` (higher = keep)."""
        if chain.norm is not None:
            return self.model.get_submodule(chain.norm).weight.detach().abs().float()
        w = self.model.get_submodule(chain.producer).weight.detach()
        return w.reshape(w.shape[0], -1).norm(dim=1).float()

    def select(self) -> None:
        """Fix the channels to prune from the current scores."""
        scores = {c: self.channel_scores(c) for c in self.chains}
        if self.config.allocation == "global":
            flat = torch.cat(list(scores.values()))
            n = round(self.config.sparsity * flat.numel())
            cut = torch.zeros(flat.numel(), dtype=torch.bool)
            if n:
                cut[torch.topk(flat, n, largest=False).indices] = True
            start = 0
            for c, s in scores.items():
                self.keep[c] = ~cut[start:start + s.numel()]
                start += s.numel()
        else:
            for c, s in scores.items():
                keep = torch.ones_like(s, dtype=torch.bool)
                n = round(self.config.sparsity * s.numel())
                if n:
                    keep[torch.topk(s, n, largest=False).indices] = False
                self.keep[c] = keep
        for c, s in scores.items():
            if not bool(self.keep[c].any()):
                self.keep[c][int(s.argmax())] = True
        self.record("select", channels=sum(int((~k).sum()) for k in self.keep.values()))

    def sparsity(self) -> float:
        """Fraction of the chains' channels marked for removal."""
        if not self.keep:
            return 0.0
        return sum(int((~k).sum()) for k in self.keep.values()) / sum(k.numel() for k in self.keep.values())

    def _penalise(self, p: torch.Tensor, pruned: torch.Tensor) -> None:
        shape = (-1,) + (1,) * (p.dim() - 1)
        g = self.penalty * torch.sign(p.detach()) * pruned.reshape(shape).to(p.dtype)
        if p.grad is None:
            p.grad = g
        else:
            p.grad.add_(g)

    def before_step(self) -> None:
        if not self.keep or self.penalty == 0:
            return
        for chain, keep in self.keep.items():
            pruned = ~keep
            if chain.norm is not None:
                bn = self.model.get_submodule(chain.norm)
                params = [bn.weight, bn.bias]
            else:
                prod = self.model.get_submodule(chain.producer)
                params = [prod.weight] + ([prod.bias] if prod.bias is not None else [])
            for p in params:
                self._penalise(p, pruned)

    def update(self) -> None:
        if not self.keep and self.step >= self.select_step:
            self.select()

    def report(self) -> list[dict]:
        """One row per chain (channels of its producer: total, kept, fraction removed) plus a total.

        Returns
        -------
        list of dict
            ``layer, shape, pattern ("channel"), params (channels), kept, sparsity``; last row ``total``.
        """
        rows = []
        for c, keep in self.keep.items():
            w = self.model.get_submodule(c.producer).weight
            rows.append({"layer": c.producer, "shape": list(w.shape), "pattern": "channel", "params": keep.numel(),
                         "kept": int(keep.sum()), "sparsity": 1.0 - int(keep.sum()) / keep.numel()})
        n, kept = sum(r["params"] for r in rows), sum(r["kept"] for r in rows)
        rows.append({"layer": "total", "shape": [], "pattern": "", "params": n, "kept": kept,
                     "sparsity": 1.0 - kept / max(n, 1)})
        return rows

    def summary(self) -> dict:
        """The base summary plus ``params_before`` / ``params_after`` the channel removal."""
        return {**super().summary(), **self.removed}

    def finalize(self) -> nn.Module:
        """Remove the marked channels; returns the (same, now smaller) model."""
        self._require_attached()
        if not self.keep:
            self.select()
        before = sum(p.numel() for p in self.model.parameters())
        remove_channels(self.model, self.keep)
        after = sum(p.numel() for p in self.model.parameters())
        self.removed = {"params_before": before, "params_after": after}
        self.record("remove", **self.removed)
        return self.model
