"""Dynamic sparse training: drop and regrow connections at constant sparsity.

* SET (Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science"): every ``update_every`` steps drop the fraction
  ``drop_fraction`` of each layer's active weights with the smallest magnitude and regrow as many at
  random positions. Updates stop at ``end_fraction`` (default 0.75, as RigL) of training, although
  the SET paper rewires until the end (``end_fraction=1.0``).
* RigL (Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners"): drop by magnitude,
  regrow the inactive positions with the largest *dense* gradient magnitude (of the batch of the
  update step, all-reduced under DDP); the fraction decays as
  ``alpha / 2 * (1 + cos(pi * t / T_end))`` and updates stop at ``T_end`` (75% of training).

In both, regrown weights start at exactly zero and their optimizer state (momentum, Adam moments)
is reset (:meth:`Sparsifier.set_mask` does both). Candidates for growth are all positions inactive
after the drop, so a just-dropped weight may be regrown (it then keeps its value: net no change),
as in the RigL reference implementation. Per layer, the number dropped equals the number grown, so
each layer's kept count never changes.
"""
from __future__ import annotations

import torch

from ..criteria import Calib
from ..errors import SparsecraftError, check_positive_int
from ..options import Option
from .base import UPDATERS, SparsityConfig, Updater
from .schedules import cosine_fraction, is_update_step


def _topk_mask(scores: torch.Tensor, k: int, candidates: torch.Tensor) -> torch.Tensor:
    """Bool mask of the ``k`` highest ``scores`` among ``candidates`` (ties: lowest index)."""
    flat = torch.where(candidates.reshape(-1), scores.reshape(-1).float(), torch.tensor(float("-inf")))
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        out[torch.topk(flat, k, sorted=False).indices] = True
    return out.reshape(scores.shape)


class DropGrow(Updater):
    """Shared drop-by-magnitude / grow-by-``grow_scores`` machinery for SET and RigL."""

    options = (
        Option("update_every", int, None, "steps between drop/grow updates (default: 1/20 of training)",
               bounds="[1, inf)"),
        Option("drop_fraction", float, 0.3, "fraction of each layer's active weights replaced per update",
               bounds="(0, 1)"),
        Option("end_fraction", float, 0.75, "fraction of training after which updates stop (default 0.75, "
               "as RigL; the SET paper rewires until the end: 1.0)", bounds="(0, 1]"),
        Option("decay", str, None, "drop-fraction schedule (default: constant for set, cosine for rigl)",
               choices=("constant", "cosine")),
    )
    decay = "constant"

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 update_every: int | None = None, drop_fraction: float = 0.3, end_fraction: float = 0.75,
                 decay: str | None = None) -> None:
        super().__init__(config, total_steps, seed)
        if self.config.get_pattern().name != "unstructured":
            raise SparsecraftError(f"{self.name} drops and grows single weights; use pattern 'unstructured'")
        self._update_every = None if update_every is None else check_positive_int(update_every, "update_every")
        self.drop_fraction = float(drop_fraction)
        if not 0.0 < self.drop_fraction < 1.0:
            raise SparsecraftError(f"drop_fraction must lie in (0, 1), got {drop_fraction!r}")
        self.end_fraction = float(end_fraction)
        if not 0.0 < self.end_fraction <= 1.0:
            raise SparsecraftError(f"end_fraction must lie in (0, 1], got {end_fraction!r}")
        if decay is not None:
            if decay not in ("constant", "cosine"):
                raise SparsecraftError(f"decay must be 'constant' or 'cosine', got {decay!r}")
            self.decay = decay
        self._grow_scores: dict[str, torch.Tensor] = {}

    def setup(self, calib: Calib) -> None:
        self.update_every = self._update_every or max(1, self.total_steps // 20)
        self.end = max(1, int(self.end_fraction * self.total_steps))
        self.sparsifier = self.initial_masks("random")
        self.record("init")

    def fraction(self, step: int) -> float:
        """Fraction of each layer's active weights replaced at an update after ``step`` steps."""
        if self.decay == "cosine":
            return cosine_fraction(step, self.drop_fraction, self.end)
        return self.drop_fraction if step < self.end else 0.0

    def is_update(self, step: int) -> bool:
        return is_update_step(step, self.update_every, end=self.end)

    def grow_scores(self, name: str, candidates: torch.Tensor) -> torch.Tensor:
        """Score of every position for growth (higher grows first); shape of the parameter."""
        raise NotImplementedError

    def update(self) -> None:
        if not self.is_update(self.step):
            return
        frac = self.fraction(self.step)
        dropped = grown = 0
        per_layer = {}
        for name, target in self.sparsifier.targets.items():
            mask = self.sparsifier.masks[name].clone()
            n_active = int(mask.sum())
            k = min(int(round(frac * n_active)), n_active)
            if k == 0:
                continue
            w = target.param.detach().abs()
            drop = _topk_mask(-w, k, mask)               # the k smallest |w| among active
            after_drop = mask & ~drop
            grow = _topk_mask(self.grow_scores(name, ~after_drop), k, ~after_drop)
            new = after_drop | grow
            d, g = int((mask & ~new).sum()), int((new & ~mask).sum())
            dropped, grown = dropped + d, grown + g
            per_layer[name] = (d, g)
            self.sparsifier.set_mask(name, new)
        self._grow_scores.clear()
        self.record("drop_grow", fraction=frac, dropped=dropped, grown=grown, per_layer=per_layer)


@UPDATERS.register("set")
class SET(DropGrow):
    """SET: drop smallest magnitude, regrow uniformly at random (constant fraction by default)."""

    name = "set"

    def grow_scores(self, name: str, candidates: torch.Tensor) -> torch.Tensor:
        return torch.rand(candidates.shape, generator=self.generator("grow", name))


@UPDATERS.register("rigl")
class RigL(DropGrow):
    """RigL: drop smallest magnitude, regrow by dense gradient magnitude, cosine-decayed fraction."""

    name = "rigl"
    decay = "cosine"

    def setup(self, calib: Calib) -> None:
        super().setup(calib)
        self.sparsifier.mask_grads = not self.is_update(1)

    def before_step(self) -> None:
        """On the backward of an update step gradients are dense: keep |g| for growth, then mask them."""
        if not self.is_update(self.step + 1):
            return
        for name, t in self.sparsifier.targets.items():
            g = t.param.grad
            if g is None:
                raise SparsecraftError(f"no gradient for {name} at a RigL update; call before_step() after backward()")
            self._grow_scores[name] = g.detach().abs().clone()
            g.mul_(self.sparsifier.masks[name].to(g.dtype))

    def grow_scores(self, name: str, candidates: torch.Tensor) -> torch.Tensor:
        if name not in self._grow_scores:
            raise SparsecraftError("RigL update without dense gradients: "
                                   "call updater.before_step() before optimizer.step()")
        return self._grow_scores[name]

    def update(self) -> None:
        super().update()
        # the next backward must produce dense gradients if the next step is an update step
        self.sparsifier.mask_grads = not self.is_update(self.step + 1)
