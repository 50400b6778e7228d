"""Iterative magnitude pruning with weight rewinding.

Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis") rewind the surviving weights to their
initial values after each prune; Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery
Ticket Hypothesis") rewind to an early iteration ``k`` instead, which is what makes IMP work on
deeper networks. One run of this updater is ``rounds + 1`` training rounds: round 0 trains dense
(or at the config's starting masks); at the end of each round but the last, the smallest
magnitude weights over all layers are pruned (global magnitude pruning: the default allocation
``global``) to the next sparsity of a geometric schedule ``1 - (1 - s_f) ** (r / rounds)`` (or
``round_sparsities``), and weights, optimizer state and LR scheduler are rewound to their state
after ``rewind_step`` steps.

Every round has its own full LR schedule, as in open_lth: the schedule spans ``round_steps``
(:meth:`IMP.schedule_steps`, which :func:`~sparsecraft.training.fit` uses for the scheduler it
builds); round 0 trains all of it, and each later round retrains from ``rewind_step`` to its end,
so ``total_steps = round_steps + rounds * (round_steps - rewind_step)`` (the few steps left over by
rounding down run after the last round). With your own scheduler, make it span
``updater.schedule_steps()``.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

from ..criteria import Calib
from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..options import Option
from .base import UPDATERS, SparsityConfig, Updater, float_list
from .gmp import dense_sparsifier, magnitude_masks
from .schedules import geometric_sparsities


@UPDATERS.register("imp")
class IMP(Updater):
    """IMP with rewinding; ``total_steps`` covers all ``rounds + 1`` training rounds."""

    name = "imp"
    default_allocation = "global"
    no_sparse_kernels = "it rewinds the dense weights between rounds"
    options = (
        Option("rounds", int, 3, "prune rounds (geometric sparsity schedule)", bounds="[1, inf)"),
        Option("rewind_step", int, 0, "step whose weights, optimizer and LR state each round rewinds to",
               bounds="[0, inf)"),
        Option("round_sparsities", float_list, None, "sparsity after each round, comma-separated "
               "(overrides rounds)"),
    )

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 rounds: int = 3, rewind_step: int = 0, round_sparsities: Sequence[float] | None = None) -> None:
        super().__init__(config, total_steps, seed)
        if self.config.get_pattern().fixed_density is not None:
            raise SparsecraftError("imp prunes step by step; N:M has a fixed density: use static or srste")
        if round_sparsities is not None:
            self.round_sparsities = [check_sparsity(s, "round_sparsities") for s in round_sparsities]
            if (not self.round_sparsities
                    or any(b < a for a, b in zip(self.round_sparsities, self.round_sparsities[1:]))):
                raise SparsecraftError("round_sparsities must be a non-empty, non-decreasing list")
            self.rounds = len(self.round_sparsities)
        else:
            self.rounds = check_positive_int(rounds, "rounds")
            self.round_sparsities = geometric_sparsities(self.config.sparsity, self.rounds)
        self.rewind_step = check_positive_int(rewind_step, "rewind_step", minimum=0)
        self.snapshot: dict[str, Any] | None = None
        self.round = 0

    @property
    def round_steps(self) -> int:
        """Length of one round's LR schedule: round 0 trains all of it, later rounds from ``rewind_step``."""
        return (self.total_steps + self.rounds * self.rewind_step) // (self.rounds + 1)

    def schedule_steps(self) -> int:
        return max(1, self.round_steps)

    def round_end(self, r: int) -> int:
        """The step at which round ``r`` (0-based) ends."""
        return self.round_steps + r * (self.round_steps - self.rewind_step)

    def setup(self, calib: Calib) -> None:
        if self.round_steps < 1 or self.rewind_step >= self.round_steps:
            raise SparsecraftError(
                f"imp needs rewind_step ({self.rewind_step}) < steps per round ({self.round_steps}); "
                "train longer or rewind earlier")
        self.sparsifier = dense_sparsifier(self)
        if self.rewind_step == 0:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        self.snapshot = {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "scheduler": copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None,
        }
        self.record("snapshot")

    def _rewind(self) -> None:
        snap = self.snapshot
        masks = self.sparsifier.masks
        self.model.load_state_dict(snap["model"])
        self.sparsifier.apply()
        if self.optimizer is not None and snap["optimizer"] is not None:
            self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
            for name, t in self.sparsifier.targets.items():   # restored state was dense: re-mask it
                self.sparsifier._reset_state(t.param, ~masks[name])
        if self.scheduler is not None and snap["scheduler"] is not None:
            self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))

    def update(self) -> None:
        if self.round == 0 and self.step == self.rewind_step and self.snapshot is None:
            self._take_snapshot()
        if self.round >= self.rounds or self.step != self.round_end(self.round):
            return
        self.record("round_end", round=self.round)
        target = self.round_sparsities[self.round]
        for name, mask in magnitude_masks(self, target).items():
            self.sparsifier.set_mask(name, mask)
        self.round += 1
        self._rewind()
        self.record("prune_rewind", round=self.round, target=target)
