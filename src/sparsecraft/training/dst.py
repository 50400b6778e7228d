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

Two extensions, used by continual learning (:mod:`sparsecraft.training.continual`) and open to any
caller:

* ``grow`` chooses the growth criterion of either method: ``random`` (SET's), ``gradient`` (RigL's:
  dense |grad| of the update step's batch) or ``momentum`` (Dettmers & Zettlemoyer 2019, "Sparse
  Networks from Scratch": |exponential moving average of the dense gradient|, beta 0.9, accumulated
  every step, so every step's backward is dense).
* :meth:`DropGrow.reserve` marks positions as occupied (e.g. by the subnetworks of earlier tasks):
  they stay active and are used in the forward pass, but are never dropped, grown into or changed
  (their gradients are zeroed and their values restored after each step); the updater's own
  subnetwork is drawn from, and rewired within, the free positions only.
"""
from __future__ import annotations

import torch

from ..criteria import Calib
from ..errors import SparsecraftError, check_positive_int
from ..oneshot import plan_masks
from ..options import Option
from ..sparsifier import Sparsifier
from .base import UPDATERS, SparsityConfig, Updater
from .schedules import cosine_fraction, is_update_step

GROW_CRITERIA = ("random", "gradient", "momentum")
MOMENTUM = 0.9  # of the gradient moving average that ``grow="momentum"`` ranks by (SNFS's SGD momentum)


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
        Option("grow", str, None, "growth criterion (default: random for set, gradient for rigl; momentum: "
               "EMA of dense gradients)", choices=GROW_CRITERIA),
    )
    decay = "constant"
    grow = "random"

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 update_every: int | None = None, drop_fraction: float = 0.3, end_fraction: float = 0.75,
                 decay: str | None = None, grow: str | None = None) -> None:
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
        if grow is not None:
            if grow not in GROW_CRITERIA:
                raise SparsecraftError(f"grow must be one of {', '.join(GROW_CRITERIA)}, got {grow!r}")
            self.grow = grow
        self._grow_scores: dict[str, torch.Tensor] = {}
        self._momentum: dict[str, torch.Tensor] = {}
        self.occupied: dict[str, torch.Tensor] = {}
        self._frozen_values: dict[str, torch.Tensor] = {}

    def reserve(self, occupied: dict[str, torch.Tensor]) -> "DropGrow":
        """Mark positions that this run must keep active and unchanged; call before :meth:`attach`.

        Parameters
        ----------
        occupied : dict of str to bool Tensor
            ``{param name: mask of that parameter's shape}``, True = taken (e.g. by an earlier
            task). Names must be targets of the config; layers not named have nothing occupied.

        Returns
        -------
        DropGrow
            ``self``.
        """
        if self.model is not None:
            raise SparsecraftError("reserve() must come before attach(): the initial masks avoid occupied positions")
        self.occupied = {name: m.to(torch.bool).clone() for name, m in occupied.items()}
        return self

    def setup(self, calib: Calib) -> None:
        self.update_every = self._update_every or max(1, self.total_steps // 20)
        self.end = max(1, int(self.end_fraction * self.total_steps))
        self.sparsifier = self._reserved_masks() if self.occupied else self.initial_masks("random")
        params = {n: t.param.detach() for n, t in self.sparsifier.targets.items()}
        self._frozen_values = {n: params[n][m].clone() for n, m in self.occupied.items()}
        self.sparsifier.mask_grads = not self._needs_dense(1)
        self.record("init")

    def _reserved_masks(self) -> Sparsifier:
        """Random masks of the config's per-layer counts drawn among the free positions (capped at
        the free count), united with the occupied ones, whose weights are left untouched."""
        targets, self.skipped = self.config.targets(self.model)
        by_name = {t.name: t for t in targets}
        for name, m in self.occupied.items():
            if name not in by_name:
                raise SparsecraftError(f"occupied mask for {name!r}, which is not a target; "
                                       f"targets: {', '.join(by_name)}")
            if tuple(m.shape) != tuple(by_name[name].param.shape):
                raise SparsecraftError(f"occupied mask for {name} has shape {tuple(m.shape)} but the parameter "
                                       f"has {tuple(by_name[name].param.shape)}")
        scores = {}
        for t in targets:
            r = torch.rand(t.param.shape, generator=self.generator("init", t.name))
            scores[t.name] = r.masked_fill(self.occupied[t.name], float("-inf")) if t.name in self.occupied else r
        masks = plan_masks(self.config.sparsity, self.config.get_pattern(), scores, self.config.allocation)
        masks = {n: m | self.occupied[n] if n in self.occupied else m for n, m in masks.items()}
        return Sparsifier(self.model, masks, {n: self.config.get_pattern() for n in masks})

    def own_masks(self) -> dict[str, torch.Tensor]:
        """``{param name: bool mask}`` of this run's own subnetwork: active and not occupied."""
        return {n: m & ~self.occupied[n] if n in self.occupied else m.clone() for n, m in self.sparsifier.masks.items()}

    def _needs_dense(self, step: int) -> bool:
        """Whether the backward of step ``step`` must give dense gradients (growth reads them)."""
        return self.grow == "momentum" or (self.grow == "gradient" and self.is_update(step))

    def before_step(self) -> None:
        """Gradients are here: keep what growth needs from the dense ones, then mask them."""
        dense = self._needs_dense(self.step + 1)
        if not dense and not self.occupied:
            return
        for name, t in self.sparsifier.targets.items():
            g = t.param.grad
            if g is None:
                if dense:
                    raise SparsecraftError(f"no gradient for {name} at a {self.name} update; "
                                           "call before_step() after backward()")
                continue
            if dense:
                if self.grow == "momentum":
                    m = self._momentum.get(name)
                    if m is None:
                        self._momentum[name] = g.detach().clone()
                    else:
                        m.mul_(MOMENTUM).add_(g, alpha=1 - MOMENTUM)
                else:
                    self._grow_scores[name] = g.detach().abs().clone()
                g.mul_(self.sparsifier.masks[name].to(g.dtype))
            if name in self.occupied:
                g.masked_fill_(self.occupied[name], 0)

    def after_step(self) -> None:
        self._require_attached()
        self._restore_frozen()
        super().after_step()
        # the next backward must produce dense gradients if growth reads them there
        self.sparsifier.mask_grads = not self._needs_dense(self.step + 1)

    @torch.no_grad()
    def _restore_frozen(self) -> None:
        """Occupied weights get zero gradients; this also undoes weight decay or any other drift."""
        for name, values in self._frozen_values.items():
            self.sparsifier.targets[name].param[self.occupied[name]] = values

    def fraction(self, step: int) -> float:
        """Fraction of each layer's active weights replaced at an update after ``step`` steps."""
        if self.decay == "cosine":
            return cosine_fraction(step, self.drop_fraction, self.end)
        return self.drop_fraction if step < self.end else 0.0

    def is_update(self, step: int) -> bool:
        return is_update_step(step, self.update_every, end=self.end)

    def changes_masks_at(self, step: int) -> bool:
        return self.is_update(step) or bool(self.occupied)

    def reads_grads_at(self, step: int) -> bool:
        return self._needs_dense(step) or bool(self.occupied)

    def entered(self, name: str, where: torch.Tensor) -> None:
        """Called after each layer's update with the positions that became active (already zero
        and with their optimizer state reset); subclasses initialise state of their own there."""

    def drop_scores(self, name: str) -> torch.Tensor:
        """Score of every position for keeping (the lowest active ones are dropped): ``|w|``."""
        return self.sparsifier.targets[name].param.detach().abs()

    def grow_scores(self, name: str, candidates: torch.Tensor) -> torch.Tensor:
        """Score of every position for growth (higher grows first); shape of the parameter."""
        if self.grow == "random":
            return torch.rand(candidates.shape, generator=self.generator("grow", name))
        if self.grow == "momentum":
            return self._momentum[name].abs()
        if name not in self._grow_scores:
            raise SparsecraftError(f"{self.name} update without dense gradients: "
                                   "call updater.before_step() before optimizer.step()")
        return self._grow_scores[name]

    def update(self) -> None:
        if not self.is_update(self.step):
            return
        frac = self.fraction(self.step)
        dropped = grown = 0
        per_layer = {}
        for name in self.sparsifier.targets:
            mask = self.sparsifier.masks[name].clone()
            occupied = self.occupied.get(name)
            own = mask if occupied is None else mask & ~occupied
            n_active = int(own.sum())
            k = min(int(round(frac * n_active)), n_active)
            if k == 0:
                continue
            drop = _topk_mask(-self.drop_scores(name), k, own)   # the k lowest-scored active weights
            after_drop = mask & ~drop
            free = ~after_drop if occupied is None else ~after_drop & ~occupied
            grow = _topk_mask(self.grow_scores(name, free), k, free)
            new = after_drop | grow
            d, g = int((mask & ~new).sum()), int((new & ~mask).sum())
            dropped, grown = dropped + d, grown + g
            per_layer[name] = (d, g)
            self.sparsifier.set_mask(name, new)
            self.entered(name, new & ~mask)
        self._grow_scores.clear()
        self.record("drop_grow", fraction=frac, dropped=dropped, grown=grown, per_layer=per_layer)


@UPDATERS.register("set")
class SET(DropGrow):
    """SET: drop smallest magnitude, regrow uniformly at random (constant fraction by default)."""

    name = "set"


@UPDATERS.register("rigl")
class RigL(DropGrow):
    """RigL: drop smallest magnitude, regrow by dense gradient magnitude, cosine-decayed fraction."""

    name = "rigl"
    decay = "cosine"
    grow = "gradient"
