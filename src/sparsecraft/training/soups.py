"""Sparse Model Soups (Zimmer et al. 2024, "Sparse Model Soups: A Recipe for Improved Pruning via
Model Averaging").

Each prune-retrain cycle prunes the current model by magnitude, retrains ``ingredients`` copies that
share the new mask but differ in seed / data order, and averages them. All copies share one mask,
so their average keeps exactly that sparsity. The average is either the *uniform* soup (mean of
all ingredients) or the *greedy* soup of Wortsman et al. 2022 ("Model soups"): ingredients sorted by
held-out score, each added only if the soup's held-out score does not drop. The next cycle starts
from the soup.

:func:`sparse_model_soup` is the procedure with your own retraining and scoring; the registered
training method ``soup`` (:class:`SoupUpdater`) is the whole recipe through the ordinary updater
interface (``make_updater("soup", config).run(model, data, ...)``): dense training, then the
phases, retraining with :func:`fit` and scoring by accuracy on a held-out part of the training set.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..oneshot import plan_masks
from ..options import Option
from ..sparsifier import Sparsifier
from .base import UPDATERS, SparsityConfig, Updater, float_list
from .fit import evaluate, fit, training_pairs
from .schedules import geometric_sparsities

TrainFn = Callable[[nn.Module, Sparsifier, int], None]
ScoreFn = Callable[[nn.Module], float]


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]],
                        weights: Sequence[float] | None = None) -> dict[str, torch.Tensor]:
    """Elementwise (weighted) mean of state dicts.

    Parameters
    ----------
    states : sequence of dict
        State dicts with the same keys and shapes.
    weights : sequence of float, optional
        Relative weights (normalised to sum 1); default equal.

    Returns
    -------
    dict
        Floating-point entries averaged (in float64, cast back); integer entries (BatchNorm's
        ``num_batches_tracked``) taken from the first state.
    """
    if not states:
        raise SparsecraftError("need at least one model to average")
    w = torch.tensor(weights if weights is not None else [1.0] * len(states), dtype=torch.float64)
    w = w / w.sum()
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum(float(wi) * s[key].double() for wi, s in zip(w, states))
            out[key] = acc.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


@dataclass
class SoupPhase:
    """One prune-retrain cycle.

    Attributes
    ----------
    sparsity : float
    ingredient_scores : list of float
        Held-out score of each retrained copy.
    soup_score : float
        Held-out score of their average.
    used : list of int
        Indices of the ingredients in the soup.
    """

    sparsity: float
    ingredient_scores: list[float]
    soup_score: float
    used: list[int] = field(default_factory=list)


def greedy_soup(models: Sequence[nn.Module], score: ScoreFn) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Wortsman et al.'s greedy soup.

    Parameters
    ----------
    models : sequence of nn.Module
        The ingredients (same architecture).
    score : callable
        Held-out score of a model, higher is better.

    Returns
    -------
    (dict, list of int)
        The soup's state dict and the indices of the ingredients it averages.
    """
    scores = [score(m) for m in models]
    order = sorted(range(len(models)), key=lambda i: -scores[i])
    used = [order[0]]
    best = scores[order[0]]
    probe = copy.deepcopy(models[0])
    for i in order[1:]:
        trial = average_state_dicts([models[j].state_dict() for j in used + [i]])
        probe.load_state_dict(trial)
        s = score(probe)
        if s >= best:
            used.append(i)
            best = s
    return average_state_dicts([models[j].state_dict() for j in used]), used


def sparse_model_soup(model: nn.Module, config: SparsityConfig, train: TrainFn, score: ScoreFn,
                      sparsities: Sequence[float] | None = None, ingredients: int = 3, soup: str = "uniform",
                      seed: int = 0, on_phase: Callable[[float, list[nn.Module]], None] | None = None
                      ) -> tuple[Sparsifier, list[SoupPhase]]:
    """Run Sparse Model Soups on a (pre-trained) ``model`` in place.

    Parameters
    ----------
    model : nn.Module
    config : SparsityConfig
        Pattern, allocation and targets; its ``sparsity`` is the only phase's if ``sparsities``
        is not given.
    train : callable
        ``train(copy, sparsifier, seed)`` retrains one ingredient in place (build its optimizer,
        ``sparsifier.attach(optimizer)``, train; e.g. with :func:`fit`).
    score : callable
        Held-out score of a model (higher is better; e.g. validation accuracy).
    sparsities : sequence of float, optional
        One per prune-retrain phase, non-decreasing.
    ingredients : int
        Copies retrained per phase.
    soup : {"uniform", "greedy"}
    seed : int
        Ingredient ``i`` of phase ``p`` is retrained with seed ``seed * 1000 + p * 100 + i``.
    on_phase : callable, optional
        ``on_phase(sparsity, copies)`` sees each phase's retrained ingredients before they are
        averaged (e.g. to evaluate them or build the other kind of soup).

    Returns
    -------
    (Sparsifier, list of SoupPhase)
        The final masks on ``model``, and one record per phase.
    """
    if soup not in ("uniform", "greedy"):
        raise SparsecraftError(f"soup must be 'uniform' or 'greedy', got {soup!r}")
    ingredients = check_positive_int(ingredients, "ingredients")
    phases_s = [check_sparsity(s, "sparsities") for s in (sparsities or [config.sparsity])]
    if any(b < a for a, b in zip(phases_s, phases_s[1:])):
        raise SparsecraftError("sparsities must be non-decreasing (one per prune-retrain phase)")
    targets, _ = config.targets(model)
    pattern = config.get_pattern()
    sp: Sparsifier | None = None
    phases = []
    for p, s in enumerate(phases_s):
        prev = sp.masks if sp is not None else None
        scores = {t.name: t.param.detach().abs().float() for t in targets}
        if prev is not None:
            scores = {n: torch.where(prev[n], v, torch.full_like(v, -1.0)) for n, v in scores.items()}
            sp.finalize()
        masks = plan_masks(s, pattern, scores, config.allocation)
        sp = Sparsifier(model, masks, {n: pattern for n in masks})
        copies = []
        for i in range(ingredients):
            m = copy.deepcopy(model)
            train(m, Sparsifier(m, masks, {n: pattern for n in masks}), seed * 1000 + p * 100 + i)
            copies.append(m)
        if on_phase is not None:
            on_phase(s, copies)
        if soup == "uniform":
            state, used = average_state_dicts([c.state_dict() for c in copies]), list(range(ingredients))
        else:
            state, used = greedy_soup(copies, score)
        model.load_state_dict(state)
        sp.apply()
        phases.append(SoupPhase(s, [score(c) for c in copies], score(model), used))
    return sp, phases


@UPDATERS.register("soup")
class SoupUpdater(Updater):
    """Sparse Model Soups as a training method: call :meth:`run` (not :func:`fit`).

    :meth:`run` holds out ``holdout`` of the training set for scoring, trains the model dense for
    the given epochs, then runs ``rounds`` prune-retrain phases (sparsities geometric up to
    ``config.sparsity``, or ``round_sparsities``) of ``ingredients`` copies retrained
    ``retrain_epochs`` each, averaged as a ``soup``.
    """

    name = "soup"
    no_sparse_kernels = "it retrains and averages dense copies of the model"
    options = (
        Option("rounds", int, 3, "prune-retrain phases (geometric sparsity schedule)", bounds="[1, inf)"),
        Option("round_sparsities", float_list, None, "sparsity after each phase, comma-separated "
               "(overrides rounds)"),
        Option("ingredients", int, 3, "models retrained and averaged per phase", bounds="[1, inf)"),
        Option("soup", str, "uniform", "how ingredients are averaged", choices=("uniform", "greedy")),
        Option("holdout", float, 0.1, "fraction of the training set held out to score ingredients",
               bounds="(0, 1)"),
        Option("retrain_epochs", int, None, "epochs per ingredient (default: half the epochs, at least 1)",
               bounds="[1, inf)"),
    )

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 rounds: int = 3, round_sparsities: Sequence[float] | None = None, ingredients: int = 3,
                 soup: str = "uniform", holdout: float = 0.1, retrain_epochs: int | None = None) -> None:
        super().__init__(config, total_steps, seed)
        if round_sparsities is not None:
            self.round_sparsities = [check_sparsity(s, "round_sparsities") for s in round_sparsities]
            self.rounds = len(self.round_sparsities)
        else:
            self.rounds = check_positive_int(rounds, "rounds")
            self.round_sparsities = geometric_sparsities(self.config.sparsity, self.rounds)
        self.ingredients = check_positive_int(ingredients, "ingredients")
        if soup not in ("uniform", "greedy"):
            raise SparsecraftError(f"soup must be 'uniform' or 'greedy', got {soup!r}")
        self.soup = soup
        self.holdout = float(holdout)
        if not 0.0 < self.holdout < 1.0:
            raise SparsecraftError(f"holdout must lie in (0, 1), got {holdout!r}")
        self.retrain_epochs = None if retrain_epochs is None else check_positive_int(retrain_epochs, "retrain_epochs")
        self.phases: list[SoupPhase] = []

    def attach(self, *args: Any, **kwargs: Any) -> "SoupUpdater":
        """Not a per-step method: raises; use :meth:`run`."""
        raise SparsecraftError("soup trains and averages several models: call updater.run(model, data, ...) "
                               "instead of attach() or fit()")

    def run(self, model: nn.Module, data: Any, epochs: int = 1, batch_size: int = 64, lr: float = 3e-3,
            seed: int = 0, progress: bool = True) -> nn.Module:
        """Dense training, then the soup phases (see the class docstring); returns ``model``.

        Parameters
        ----------
        model : nn.Module
            Trained in place.
        data : DataSplits or (Tensor, Tensor)
            Its training split: ``holdout`` of it (a permutation seeded with ``seed``) scores the
            ingredients, the rest trains.
        epochs : int
            Dense epochs; ingredients train ``retrain_epochs`` (default ``max(1, epochs // 2)``).
        batch_size : int
        lr : float
            AdamW learning rate, dense (cosine) and for each ingredient (constant).
        seed : int
        progress : bool

        Returns
        -------
        nn.Module
            ``model``, holding the last soup with its masks (``self.sparsifier``).
        """
        x, y = training_pairs(data)
        n_val = max(1, int(self.holdout * len(x)))
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        val, tr = perm[:n_val], perm[n_val:]
        train = (x[tr], y[tr])
        self.result = fit(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress)
        retrain = self.retrain_epochs or max(1, epochs // 2)

        def train_one(m: nn.Module, sp: Sparsifier, s: int) -> None:
            opt = torch.optim.AdamW(m.parameters(), lr=lr)
            sp.attach(opt)
            fit(m, train, epochs=retrain, batch_size=batch_size, optimizer=opt, seed=s, progress=progress)

        self.model = self.wrapped = model
        self.sparsifier, self.phases = sparse_model_soup(
            model, self.config, train_one, lambda m: evaluate(m, x[val], y[val]), sparsities=self.round_sparsities,
            ingredients=self.ingredients, soup=self.soup, seed=seed)
        return self.finalize()

    def summary(self) -> dict[str, Any]:
        """``phases``: sparsity, ingredient and soup held-out scores, ingredients used, per phase."""
        return {"phases": [vars(p) for p in self.phases]}
