"""Static sparse training: a mask chosen once at initialisation, then kept fixed.

* ``static`` with ``criterion="random"`` and ``allocation="erk"`` / ``"er"`` / ``"uniform"`` is
  random pruning at init (Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning";
  ER/ERK from Mocanu et al. 2018 and Evci et al. 2020);
* ``snip`` scores ``|w * dL/dw|`` on one labelled batch at init (Lee et al. 2019, "SNIP:
  Single-shot Network Pruning based on Connection Sensitivity");
* ``static`` with ``criterion="magnitude"`` on a trained model is one-shot pruning + fine-tuning.
"""
from __future__ import annotations

import dataclasses

from ..criteria import CRITERIA, Calib
from ..options import Option
from .base import UPDATERS, SparsityConfig, Updater


@UPDATERS.register("dense")
class Dense(Updater):
    """No sparsity at all: the baseline, run through the same loop (a given sparsity is ignored)."""

    name = "dense"
    default_sparsity = 0.0
    no_sparse_kernels = "it has no masks: nothing is sparse"

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0) -> None:
        super().__init__(dataclasses.replace(config, sparsity=0.0) if config else None, total_steps, seed)


@UPDATERS.register("static")
class Static(Updater):
    """Masks from ``criterion`` (any name in ``CRITERIA``) at attach time, fixed afterwards."""

    name = "static"
    options = (Option("criterion", str, "random", "initial-mask criterion, any name in CRITERIA"),)

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 criterion: str = "random") -> None:
        super().__init__(config, total_steps, seed)
        CRITERIA.get(criterion)
        self.criterion = criterion
        self.needs_calib = criterion in ("snip", "taylor", "movement", "wanda")

    def setup(self, calib: Calib) -> None:
        self.sparsifier = self.initial_masks(self.criterion, calib)
        self.record("init", criterion=self.criterion)

    def changes_masks_at(self, step: int) -> bool:
        return False


@UPDATERS.register("snip")
class Snip(Static):
    """SNIP at initialisation: static training of the mask kept by ``|w * dL/dw|``."""

    name = "snip"
    options = ()

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0) -> None:
        super().__init__(config, total_steps, seed, criterion="snip")

