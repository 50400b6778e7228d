"""Gradual pruning during distillation of a pretrained transformer from its dense original.

The student (a copy of the dense model) trains towards the dense teacher on unlabelled text while
its sparsity rises on the cubic schedule of Zhu & Gupta (2017, "To prune, or not to prune",
arXiv:1710.01878; :func:`sparsecraft.training.schedules.cubic_sparsity`) from ``initial_sparsity``
at ``prune_start`` to the target at ``prune_end``, one pruning event every ``prune_every`` steps;
then the masks stay fixed for the recovery phase up to ``steps``. This is the recipe of the
Optimal BERT Surgeon (Kurtic et al. 2022, arXiv:2203.07259: gradual pruning with knowledge
distillation) with the SquareHead loss (Kurtic et al. 2023, "Sparse Fine-tuning for Inference
Acceleration of Large Language Models", arXiv:2310.06927).

* Targets: every ``nn.Linear`` inside the transformer blocks (:func:`block_targets`, the core's
  :func:`sparsecraft.find_targets`), so embeddings and the pooler stay dense.
* Scores: a criterion of :data:`~sparsecraft.posttrain.saliency.SALIENCIES` (magnitude, movement,
  wanda, obert). Masks: :func:`sparsecraft.oneshot.plan_masks` (pattern groups, global or uniform
  allocation) on *nested* scores, so a pruned weight never comes back. N:M patterns ramp up
  unstructured among the weights outside each group's current top N, and are exact N:M from
  ``prune_end`` on.
* Masks live in a :class:`sparsecraft.Sparsifier` attached to the optimizer from the first step:
  pruned weights are exact zeros and their AdamW state is reset when they are pruned.
* Loss (``loss="squarehead"``): the mean per-block normalised hidden-state MSE, plus the normalised
  MSE of the output and ``1 - cos`` of the mean-pooled sentence embeddings; ``loss="output"`` keeps
  the two output terms only. The teacher runs on the fly on each batch.
* AdamW. ``lr_schedule="linear"`` (default): linear warm-up over ``warmup`` steps, then linear
  decay to zero. ``lr_schedule="cyclic"``: inside the pruning window the rate is rewound to its
  peak at every pruning event and decays linearly to ``cycle_floor`` times the peak before the
  next, so each event's damage is repaired at a high rate and that rate's noise is annealed before
  the next cut (the learning-rate rewinding of GMP*, Kurtic & Alistarh 2022, arXiv:2210.06384);
  the recovery phase decays linearly from the peak to zero.

Everything that the next step depends on (weights, masks, optimizer state, the criterion's state,
the random state, the batch order, the step) is in :meth:`GradualDistiller.state_dict`, so a run
continued from it ends with the same weights as an uninterrupted one (see
:mod:`sparsecraft.posttrain.longrun`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..calibration import InputRecorder
from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..oneshot import plan_masks
from ..patterns import NM, Pattern, Unstructured, get_pattern
from ..sparsifier import Sparsifier
from ..training.schedules import cubic_sparsity
from .finetune import features, output_loss, squarehead_loss
from .metrics import mean_pool
from .pipeline import Batch, block_targets, check_model_pattern
from .saliency import Saliency, Scores, make_saliency

LOSSES = ("squarehead", "output")
ALLOCATIONS = ("global", "uniform")
LR_SCHEDULES = ("linear", "cyclic")
STATE_FORMAT = "sparsecraft-distill-state/1"


@dataclass(frozen=True)
class GradualConfig:
    """What a gradual pruning + distillation run does (all steps are optimizer steps).

    Parameters
    ----------
    sparsity : float
        Final fraction of zeros in [0, 1) over the targets (N:M patterns: ``1 - N/M``, this is ignored).
    pattern : str
        ``unstructured``, N:M (``2:4``) or ``blockRxC`` (``block4x1``).
    criterion : str
        A name in :data:`~sparsecraft.posttrain.saliency.SALIENCIES` (``magnitude``, ``movement``, ``wanda``,
        ``obert``).
    allocation : str
        ``uniform`` (every layer alike) or ``global`` (one threshold over all targets). The defaults,
        wanda scores pruned uniformly, kept 0.868 embedding cosine on MiniLM at 80% after 300 steps
        where magnitude kept 0.845 (uniform) and 0.821 (global) (docs/distill.md).
    steps : int
        Total steps (pruning window and recovery).
    initial_sparsity : float
        Sparsity reached at ``prune_start``.
    prune_start, prune_end : int
        The pruning window (default ``prune_end``: two thirds of ``steps``).
    prune_every : int
        Steps between pruning events (default: about 25 events in the window).
    lr : float
        Peak AdamW learning rate.
    lr_schedule : str
        ``linear`` (warm-up, then one linear decay to 0) or ``cyclic`` (rewound to the peak at every
        pruning event, linear decay to ``cycle_floor * lr`` before the next; then linear decay to 0
        over the recovery phase). On MiniLM at 80% (1500 steps) cyclic stays much closer to the teacher
        early (cosine 0.941 vs 0.914 at 25% sparsity) and ends about level (0.935 vs 0.932;
        docs/distill.md).
    cycle_floor : float
        Fraction of the peak rate reached at the end of each cycle, in (0, 1].
    warmup : int
        Linear warm-up steps (default: 5% of ``steps`` with the linear schedule, none with the cyclic
        one, whose first cycle starts at the peak); the rate is scaled by ``(step + 1) / warmup`` before.
    weight_decay : float
        AdamW weight decay.
    loss : str
        ``squarehead`` (per-block hidden states + output) or ``output`` (output only).
    seed : int
        Batch order and dropout.
    dropout : bool
        Train the student with its dropout on (off by default: the student imitates the deterministic
        teacher, and in a short run the dropout noise costs more than its regularisation gives).
    criterion_options : dict
        Options of the criterion (e.g. ``{"fisher_grads": 8}`` for obert).
    """

    sparsity: float = 0.8
    pattern: str = "unstructured"
    criterion: str = "wanda"
    allocation: str = "uniform"
    steps: int = 2000
    initial_sparsity: float = 0.0
    prune_start: int = 0
    prune_end: int | None = None
    prune_every: int | None = None
    lr: float = 1e-3
    lr_schedule: str = "linear"
    cycle_floor: float = 0.1
    warmup: int | None = None
    weight_decay: float = 0.0
    loss: str = "squarehead"
    seed: int = 0
    dropout: bool = False
    criterion_options: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> "GradualConfig":
        """This config checked (one-line :class:`SparsecraftError` per mistake), defaults filled in."""
        steps = check_positive_int(self.steps, "steps")
        pattern = get_pattern(self.pattern)
        sparsity = check_sparsity(self.sparsity)
        initial = check_sparsity(self.initial_sparsity, "initial_sparsity")
        final = 1.0 - pattern.fixed_density if pattern.fixed_density is not None else sparsity
        if initial > final:
            raise SparsecraftError(f"initial_sparsity {initial} is above the final sparsity {final}")
        if self.allocation not in ALLOCATIONS:
            raise SparsecraftError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.loss not in LOSSES:
            raise SparsecraftError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        start = check_positive_int(self.prune_start, "prune_start", minimum=0)
        end = self.prune_end if self.prune_end is not None else max(start + 1, (2 * steps) // 3)
        if not start < end <= steps:
            raise SparsecraftError(f"the pruning window needs prune_start < prune_end <= steps, got {start}, {end}, "
                                   f"{steps}")
        every = check_positive_int(self.prune_every if self.prune_every is not None else max(1, (end - start) // 25),
                                   "prune_every")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SparsecraftError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        default_warmup = steps // 20 if self.lr_schedule == "linear" else 0
        warmup = check_positive_int(self.warmup if self.warmup is not None else default_warmup, "warmup", minimum=0)
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise SparsecraftError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if not 0 < self.cycle_floor <= 1:
            raise SparsecraftError(f"cycle_floor must be in (0, 1], got {self.cycle_floor}")
        make_saliency(self.criterion, **self.criterion_options)
        return replace(self, pattern=str(pattern), sparsity=final, steps=steps, initial_sparsity=initial,
                       prune_start=start, prune_end=end, prune_every=every, warmup=warmup)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy (saved with checkpoints and resume states)."""
        return asdict(self)


def lr_factor(step: int, config: GradualConfig) -> float:
    """The learning rate of ``step`` as a fraction of the peak, for a resolved ``config``.

    Linear: ``(step + 1) / warmup`` during the warm-up, then linear decay to 0 at ``steps``. Cyclic:
    inside ``[prune_start, prune_end)`` the rate falls linearly from 1 to ``cycle_floor`` over each
    ``prune_every`` steps and is back at 1 at every pruning event; from ``prune_end`` it falls linearly
    to 0 at ``steps`` (before ``prune_start`` it is 1); the warm-up factor applies on top.
    """
    c = config
    warm = (step + 1) / c.warmup if step < c.warmup else 1.0
    if c.lr_schedule == "linear":
        return warm if step < c.warmup else max(0.0, (c.steps - step) / max(1, c.steps - c.warmup))
    if step < c.prune_start:
        return warm
    if step < c.prune_end:
        phase = ((step - c.prune_start) % c.prune_every) / c.prune_every
        return warm * (1.0 - (1.0 - c.cycle_floor) * phase)
    return warm * max(0.0, (c.steps - step) / max(1, c.steps - c.prune_end))


def nested_masks(scores: Scores, masks: dict[str, torch.Tensor], sparsity: float, pattern: Pattern,
                 allocation: str) -> dict[str, torch.Tensor]:
    """Masks at ``sparsity`` that keep every weight already pruned in ``masks`` pruned.

    Pruned weights score below every kept one; with N:M the weights among each group's current top
    N score above every other (so at ``1 - N/M`` exactly the N:M mask remains), and the ramp up to
    it is unstructured.

    Parameters
    ----------
    scores : dict
        ``{name: scores}`` (higher = keep), each of its weight's shape.
    masks : dict
        The current bool masks, same names.
    sparsity : float
        Target fraction of zeros (at most ``1 - N/M`` for N:M).
    pattern : Pattern
    allocation : str
        ``global`` or ``uniform``.

    Returns
    -------
    dict
        ``{name: bool mask}``; each new mask is a subset of the old one.
    """
    flat = torch.cat([s.reshape(-1).float() for s in scores.values()])
    lo, hi = float(flat.min()), float(flat.max())
    span = hi - lo + 1.0
    nested = {n: torch.where(masks[n], s.float(), torch.full_like(s, lo - span, dtype=torch.float32))
              for n, s in scores.items()}
    if isinstance(pattern, NM):
        nested = {n: torch.where(pattern.mask(s), torch.full_like(s, hi + span), s) for n, s in nested.items()}
        pattern = Unstructured()
    return plan_masks(sparsity, pattern, nested, allocation)


def distill_loss(teacher: list[torch.Tensor], student: list[torch.Tensor], attention_mask: torch.Tensor | None,
                 kind: str = "squarehead") -> torch.Tensor:
    """Output normalised MSE + ``1 - cos`` of pooled embeddings, plus SquareHead when ``kind == "squarehead"``.

    Parameters
    ----------
    teacher, student : list of Tensor
        Every block's hidden states ``(B, T, d)`` then the model output (:func:`features`).
    attention_mask : Tensor ``(B, T)`` or None
        Real tokens (padding is left out of every term).
    kind : str
        ``squarehead`` or ``output``.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    tokens = attention_mask.bool() if attention_mask is not None else None
    cos = F.cosine_similarity(mean_pool(teacher[-1], attention_mask), mean_pool(student[-1], attention_mask), dim=-1)
    loss = output_loss(teacher, student, tokens) + (1.0 - cos).mean()
    return loss + squarehead_loss(teacher, student, tokens) if kind == "squarehead" else loss


class GradualDistiller:
    """One gradual pruning + distillation run, advanced a step at a time (:meth:`train_step`).

    Parameters
    ----------
    student : nn.Module
        The model to prune (changed in place), e.g. a freshly loaded copy of the teacher.
    teacher : nn.Module
        The dense model, same architecture (not changed; eval mode).
    batches : sequence of dict
        Keyword batches of ``model.forward``, cycled in a seeded order (a new permutation per pass).
    config : GradualConfig
    layers, keep_dense : iterable of str
        Narrow the Linears inside the blocks, as in :func:`sparsecraft.find_targets`.

    Attributes
    ----------
    sparsifier : Sparsifier
        Holds the masks of the student's targets from the start (all kept) to the end.
    step : int
        Steps done.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, batches: Sequence[Batch], config: GradualConfig,
                 layers: Iterable[str] | None = None, keep_dense: Iterable[str] = ()) -> None:
        self.config = config.resolved()
        if not batches:
            raise SparsecraftError("gradual distillation needs at least one batch of text")
        self.student, self.teacher, self.batches = student, teacher.eval(), batches
        self.pattern = get_pattern(self.config.pattern)
        self.targets = [t for group in block_targets(student, layers, keep_dense) for t in group]
        check_model_pattern(self.targets, self.pattern)
        for t in self.targets:
            try:
                self.pattern.group_scores(torch.zeros(t.param.shape))
            except SparsecraftError as err:
                raise SparsecraftError(f"layer {t.module_name}: {err}") from None
        self.saliency: Saliency = make_saliency(self.config.criterion, **self.config.criterion_options)
        ramp = Unstructured() if isinstance(self.pattern, NM) else self.pattern
        self.sparsifier = Sparsifier(student, {t.name: torch.ones_like(t.param, dtype=torch.bool)
                                               for t in self.targets}, {t.name: ramp for t in self.targets})
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.sparsifier.attach(self.optimizer)
        self.step = 0
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._order: list[int] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._rng = torch.get_rng_state()

    # ------------------------------------------------------------------------ schedule
    def target_sparsity(self, step: int) -> float:
        """The cubic schedule's sparsity at ``step``."""
        c = self.config
        return cubic_sparsity(step, c.sparsity, c.initial_sparsity, c.prune_start, c.prune_end)

    def is_prune_step(self, step: int) -> bool:
        """Whether a pruning event happens before the update of ``step``."""
        c = self.config
        return c.prune_start <= step <= c.prune_end and ((step - c.prune_start) % c.prune_every == 0
                                                          or step == c.prune_end)

    def sparsity(self) -> float:
        """Fraction of zeros over the targets now."""
        return self.sparsifier.sparsity()

    # -------------------------------------------------------------------------- training
    def _loss(self, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = features(self.teacher, batch)
        return distill_loss(target, features(self.student, batch), batch.get("attention_mask"), self.config.loss)

    def _gradients(self, count: int, recorder: InputRecorder | None = None) -> list[Scores]:
        """Gradients of the loss on ``count`` batches drawn by the step number (no state to save).

        A ``recorder`` sees the student's layer inputs on those batches, padding left out.
        """
        pick = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        grads = []
        for i in torch.randint(len(self.batches), (count,), generator=pick).tolist():
            if recorder is not None:
                recorder.token_mask = self.batches[i].get("attention_mask")
            self.optimizer.zero_grad(set_to_none=True)
            self._loss(self.batches[i]).backward()
            grads.append({t.name: t.param.grad.detach().clone() for t in self.targets})
        self.optimizer.zero_grad(set_to_none=True)
        return grads

    def prune(self) -> None:
        """One pruning event: masks at the schedule's sparsity for the current step."""
        target = self.target_sparsity(self.step)
        if target <= self.sparsity() and not (isinstance(self.pattern, NM) and self.step == self.config.prune_end):
            return
        old = {n: m.clone() for n, m in self.sparsifier.masks.items()}
        new = nested_masks(self.saliency.scores(self.targets, self._gradients), old, target, self.pattern,
                           self.config.allocation)
        self.saliency.update(self.targets, {n: old[n] & ~new[n] for n in new})
        for name, mask in new.items():
            self.sparsifier.set_mask(name, mask)
        if isinstance(self.pattern, NM) and self.step == self.config.prune_end:
            self._fix_nm()

    def _fix_nm(self) -> None:
        """From the end of the window on the masks are N:M: the Sparsifier checks them as such."""
        for name, mask in self.sparsifier.masks.items():
            self.pattern.validate(mask)
            self.sparsifier.patterns[name] = self.pattern

    def _next_batch(self) -> Batch:
        if not self._order:
            self._order = torch.randperm(len(self.batches), generator=self._generator).tolist()
        return self.batches[self._order.pop()]

    def train_step(self) -> dict[str, float]:
        """Prune if the schedule says so, then one AdamW step on the next batch.

        Returns
        -------
        dict
            ``step`` (steps done), ``loss``, ``lr``, ``sparsity`` (after the step), ``target``.
        """
        c = self.config
        if self.step >= c.steps:
            raise SparsecraftError(f"the run is complete ({c.steps} steps)")
        self.student.train(c.dropout)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._rng)
            if self.is_prune_step(self.step):
                self.prune()
            lr = c.lr * lr_factor(self.step, c)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self._loss(self._next_batch())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.saliency.observe(self.targets)
            self.optimizer.step()
            self._rng = torch.get_rng_state()
        self.student.eval()
        self.step += 1
        return {"step": self.step, "loss": float(loss.detach()), "lr": lr, "sparsity": self.sparsity(),
                "target": self.target_sparsity(self.step)}

    # ---------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on, for an exact resume."""
        return {
            "format": STATE_FORMAT, "config": self.config.to_dict(), "step": self.step,
            "model": self.student.state_dict(), "masks": dict(self.sparsifier.masks),
            "optimizer": self.optimizer.state_dict(), "saliency": self.saliency.state_dict(),
            "rng": self._rng, "generator": self._generator.get_state(),
            "order": torch.tensor(self._order, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a run with the same config (one-line error otherwise)."""
        if state.get("config") != self.config.to_dict():
            saved = state.get("config") or {}
            diff = [k for k, v in self.config.to_dict().items() if saved.get(k) != v]
            raise SparsecraftError(f"the saved run used other settings ({', '.join(diff)}); resume with the same ones")
        if set(state["masks"]) != set(self.sparsifier.targets):
            raise SparsecraftError("the saved run pruned other layers; resume with the same --layers/--keep-dense")
        for name, mask in state["masks"].items():
            self.sparsifier.set_mask(name, mask)
        self.step = int(state["step"])
        if isinstance(self.pattern, NM) and self.step > self.config.prune_end:
            self._fix_nm()
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.saliency.load_state_dict(state["saliency"])
        self._rng = state["rng"]
        self._generator.set_state(state["generator"])
        self._order = state["order"].tolist()
