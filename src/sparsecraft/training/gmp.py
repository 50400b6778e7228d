"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

Every ``frequency`` steps between ``start`` and ``end`` the smallest-magnitude weights are pruned so
that the sparsity follows the cubic schedule
``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))**3`` (see
:func:`~sparsecraft.training.schedules.cubic_sparsity`); pruned weights never come back.
"""
from __future__ import annotations

import torch

from ..criteria import Calib
from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..oneshot import plan_masks
from ..options import Option
from ..sparsifier import Sparsifier
from .base import UPDATERS, SparsityConfig, Updater
from .schedules import cubic_sparsity


def magnitude_masks(updater: Updater, sparsity: float) -> dict[str, torch.Tensor]:
    """Masks keeping the largest ``|w|`` at ``sparsity`` under the config's allocation.

    Nested: already-pruned weights score below every kept weight, so they stay pruned.

    Parameters
    ----------
    updater : Updater
        Attached, with a Sparsifier.
    sparsity : float
        Target fraction of zeros in [0, 1).

    Returns
    -------
    dict
        ``{param name: bool mask}``.
    """
    sp = updater.sparsifier
    scores = {n: torch.where(m, t.param.detach().abs().float(), torch.full_like(t.param, -1.0, dtype=torch.float32))
              for (n, t), m in zip(sp.targets.items(), sp.masks.values())}
    return plan_masks(sparsity, updater.config.get_pattern(), scores, updater.config.allocation)


def dense_sparsifier(updater: Updater) -> Sparsifier:
    """A Sparsifier with all-True masks over the config's targets of ``updater.model``.

    Parameters
    ----------
    updater : Updater
        Attached; its ``skipped`` is set to the targets whose shape does not fit the pattern.

    Returns
    -------
    Sparsifier
    """
    targets, updater.skipped = updater.config.targets(updater.model)
    masks = {t.name: torch.ones_like(t.param, dtype=torch.bool) for t in targets}
    return Sparsifier(updater.model, masks, {n: updater.config.get_pattern() for n in masks})


@UPDATERS.register("gmp")
class GMP(Updater):
    """Gradual magnitude pruning from ``initial_sparsity`` to ``config.sparsity``.

    ``start`` / ``end`` are step numbers (``end`` default: 75% of ``total_steps``); ``frequency``
    the steps between pruning events (default: about 20 events over the schedule).
    """

    name = "gmp"
    options = (
        Option("initial_sparsity", float, 0.0, "sparsity at the start step", bounds="[0, 1)"),
        Option("start", int, 0, "step of the first pruning event", bounds="[0, inf)"),
        Option("end", int, None, "step reaching the final sparsity (default: 3/4 of training)", bounds="[1, inf)"),
        Option("frequency", int, None, "steps between pruning events (default: about 20 events)",
               bounds="[1, inf)"),
    )

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 initial_sparsity: float = 0.0, start: int = 0, end: int | None = None,
                 frequency: int | None = None) -> None:
        super().__init__(config, total_steps, seed)
        if self.config.get_pattern().fixed_density is not None:
            raise SparsecraftError("gmp needs a pattern whose sparsity can grow (not N:M); use srste for N:M")
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        self.start = check_positive_int(start, "start", minimum=0)
        self._end, self._frequency = end, frequency

    def setup(self, calib: Calib) -> None:
        self.end = self._end if self._end is not None else max(self.start + 1, int(0.75 * self.total_steps))
        if self.end <= self.start:
            raise SparsecraftError(f"gmp end ({self.end}) must come after start ({self.start})")
        span = self.end - self.start
        self.frequency = check_positive_int(self._frequency if self._frequency is not None else max(1, span // 20),
                                            "frequency")
        self.sparsifier = dense_sparsifier(self)
        if self.start == 0:
            self._prune()

    def target_sparsity(self, step: int) -> float:
        """The schedule's sparsity after ``step`` steps."""
        return cubic_sparsity(step, self.config.sparsity, self.initial_sparsity, self.start, self.end)

    def is_prune_step(self, step: int) -> bool:
        if step < self.start or step > self.end:
            return False
        return (step - self.start) % self.frequency == 0 or step == self.end

    def _prune(self) -> None:
        target = self.target_sparsity(self.step)
        for name, mask in magnitude_masks(self, target).items():
            self.sparsifier.set_mask(name, mask)
        self.record("prune", target=target)

    def changes_masks_at(self, step: int) -> bool:
        return self.is_prune_step(step)

    def update(self) -> None:
        if self.is_prune_step(self.step):
            self._prune()
