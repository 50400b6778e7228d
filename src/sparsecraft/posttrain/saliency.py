"""Saliency criteria for gradual pruning during training: which weights to drop at each pruning step.

Unlike the one-shot :data:`sparsecraft.criteria.CRITERIA`, these see the whole run: a criterion
may observe every training step (after ``backward``, before the optimizer step), ask for fresh
gradients when it scores, and update the kept weights when it prunes. Registry
:data:`SALIENCIES`; each class declares its :class:`~sparsecraft.options.Option` s, so the CLI
builds its flags without naming any criterion.

* ``magnitude``: ``|w|`` (gradual magnitude pruning, Zhu & Gupta 2017, "To prune, or not to
  prune", arXiv:1710.01878), the same scores as :func:`sparsecraft.criteria.magnitude`;
* ``movement``: ``S = -sum_t w_t * g_t`` accumulated over every step (Sanh, Wolf & Rush 2020,
  "Movement Pruning", arXiv:2005.07683): weights moving away from zero score high;
* ``wanda``: ``|w_ij| * ||x_j||_2`` with the input norms of each layer recorded on a few fresh
  batches at every pruning event (Sun et al. 2023, "A Simple and Effective Pruning Approach for
  Large Language Models", arXiv:2306.11695): a weight counts as much as the activations it scales;
* ``obert``: the Optimal BERT Surgeon (Kurtic et al. 2022, "The Optimal BERT Surgeon: Scalable and
  Accurate Second-Order Pruning for Large Language Models", arXiv:2203.07259). The Hessian is the
  empirical Fisher ``F = lambda I + 1/m sum_i g_i g_i^T`` of ``m`` gradients, kept block-diagonal
  over blocks of ``B`` consecutive weights of a row; weight ``q`` scores the OBS saliency
  ``w_q^2 / (2 [F^-1]_qq)`` (group patterns sum it over the group), and pruning applies the OBS
  update ``dw = -F^-1 e_q w_q / [F^-1]_qq`` of the remaining weights of the block, summed over the
  weights pruned in that block (the paper's approximation for several weights at once).
  ``lambda`` is ``fisher_damp`` times the mean diagonal of the layer's Fisher.
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar, Sequence

import torch

from ..calibration import InputRecorder, wanda_scores
from ..criteria import magnitude as magnitude_scores
from ..errors import SparsecraftError, check_positive_int
from ..options import Option
from ..registry import Registry
from ..target import Target

Scores = dict[str, torch.Tensor]
#: ``gradients(count, recorder=None)`` returns fresh gradients, one ``{target name: grad}`` per batch;
#: a given :class:`~sparsecraft.calibration.InputRecorder` also sees those batches' real tokens
GradientSource = Callable[..., list[Scores]]


class Saliency:
    """Base class: scores ``{target name: tensor of the weight's shape}``, higher = keep.

    Subclasses set ``name`` and ``options`` and override what they need.
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def observe(self, targets: Sequence[Target]) -> None:
        """Called after every ``backward`` (gradients of the kept weights in ``param.grad``)."""

    def scores(self, targets: Sequence[Target], gradients: GradientSource) -> Scores:
        """Importance of every weight now."""
        raise NotImplementedError

    def update(self, targets: Sequence[Target], pruned: dict[str, torch.Tensor]) -> None:
        """Called with the bool masks of the weights about to be pruned, before they are zeroed."""

    def state_dict(self) -> Scores:
        """Tensors to save for an exact resume."""
        return {}

    def load_state_dict(self, state: Scores) -> None:
        """Restore :meth:`state_dict`."""


SALIENCIES: Registry[type[Saliency]] = Registry("gradual pruning criterion")


@SALIENCIES.register("magnitude")
class Magnitude(Saliency):
    """``|w|`` (Zhu & Gupta 2017)."""

    name = "magnitude"

    def scores(self, targets: Sequence[Target], gradients: GradientSource) -> Scores:
        return magnitude_scores(None, targets)


@SALIENCIES.register("movement")
class Movement(Saliency):
    """``-sum_t w_t * g_t`` over every training step so far (Sanh et al. 2020)."""

    name = "movement"

    def __init__(self) -> None:
        self.acc: Scores = {}

    def observe(self, targets: Sequence[Target]) -> None:
        for t in targets:
            if t.param.grad is not None:
                acc = self.acc.setdefault(t.name, torch.zeros_like(t.param, dtype=torch.float32))
                acc.sub_((t.param.detach() * t.param.grad).float())

    def scores(self, targets: Sequence[Target], gradients: GradientSource) -> Scores:
        return {t.name: self.acc.get(t.name, torch.zeros_like(t.param, dtype=torch.float32)).clone() for t in targets}

    def state_dict(self) -> Scores:
        return dict(self.acc)

    def load_state_dict(self, state: Scores) -> None:
        self.acc = {k: v.clone() for k, v in state.items()}


@SALIENCIES.register("wanda")
class Wanda(Saliency):
    """``|w_ij| * ||x_j||_2``, input norms from fresh batches at each pruning event (Sun et al. 2023)."""

    name = "wanda"
    options = (Option("wanda_batches", int, 4, "wanda: batches whose input norms score each pruning step",
                      bounds="[1, inf)"),)

    def __init__(self, wanda_batches: int = 4) -> None:
        self.wanda_batches = check_positive_int(wanda_batches, "wanda_batches")

    def scores(self, targets: Sequence[Target], gradients: GradientSource) -> Scores:
        with InputRecorder({t.name: t.module for t in targets}, diag_only=True) as recorder:
            gradients(self.wanda_batches, recorder=recorder)
        return {t.name: wanda_scores(t.param.detach(), recorder.stats[t.name]) for t in targets}


def fisher_block_size(in_features: int, block: int) -> int:
    """The largest divisor of a row's length ``in_features`` that is at most ``block``."""
    return max(d for d in range(1, min(block, in_features) + 1) if in_features % d == 0)


@SALIENCIES.register("obert")
class OBert(Saliency):
    """OBS saliency with a block-diagonal empirical Fisher, and the OBS weight update (Kurtic et al. 2022)."""

    name = "obert"
    options = (
        Option("fisher_grads", int, 8, "obert: gradients (batches) in the empirical Fisher at each pruning step"),
        Option("fisher_block", int, 32, "obert: Fisher block size, consecutive weights of a row"),
        Option("fisher_damp", float, 0.05, "obert: dampening, a fraction of the mean Fisher diagonal"),
    )

    def __init__(self, fisher_grads: int = 8, fisher_block: int = 32, fisher_damp: float = 0.05) -> None:
        self.fisher_grads = check_positive_int(fisher_grads, "fisher_grads")
        self.fisher_block = check_positive_int(fisher_block, "fisher_block")
        if not (math.isfinite(fisher_damp) and fisher_damp > 0):
            raise SparsecraftError(f"fisher_damp must be > 0, got {fisher_damp}")
        self.fisher_damp = fisher_damp
        self._grads: list[Scores] = []

    def _inverse_fisher(self, t: Target) -> torch.Tensor:
        """``F^-1`` per block, shape ``(rows * row_blocks, B, B)``, from the gradients last collected."""
        w = t.param.detach()
        b = fisher_block_size(w.shape[-1], self.fisher_block)
        g = torch.stack([grads[t.name].float().reshape(-1, b) for grads in self._grads])  # (m, blocks, B)
        fisher = torch.einsum("mki,mkj->kij", g, g) / len(self._grads)
        damp = self.fisher_damp * float(fisher.diagonal(dim1=1, dim2=2).mean()) + 1e-12
        fisher.diagonal(dim1=1, dim2=2).add_(damp)
        return torch.linalg.inv(fisher)

    def scores(self, targets: Sequence[Target], gradients: GradientSource) -> Scores:
        self._grads = gradients(self.fisher_grads)
        out = {}
        for t in targets:
            diag = self._inverse_fisher(t).diagonal(dim1=1, dim2=2).reshape(t.param.shape)
            out[t.name] = t.param.detach().float().square() / (2 * diag)
        return out

    @torch.no_grad()
    def update(self, targets: Sequence[Target], pruned: dict[str, torch.Tensor]) -> None:
        for t in targets:
            drop = pruned.get(t.name)
            if drop is None or not bool(drop.any()):
                continue
            inv = self._inverse_fisher(t)
            b = inv.shape[-1]
            w = t.param.detach().float().reshape(-1, b)
            v = torch.where(drop.reshape(-1, b), w / inv.diagonal(dim1=1, dim2=2), torch.zeros_like(w))
            t.param.sub_(torch.einsum("kij,kj->ki", inv, v).reshape(t.param.shape).to(t.param.dtype))
        self._grads = []


def make_saliency(name: str, **options: object) -> Saliency:
    """The criterion ``name`` of :data:`SALIENCIES` with ``options`` (one-line error for any it does not take)."""
    cls = SALIENCIES.get(name)
    valid = {o.name: o for o in cls.options}
    for key in options:
        if key not in valid:
            allowed = ", ".join(valid) or "none"
            raise SparsecraftError(f"option {key!r} does not apply to criterion {name}; its options: {allowed}")
    return cls(**{k: valid[k].check(v) for k, v in options.items()})
