"""Machine unlearning, dense or "prune first, then unlearn".

Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning": removing the influence of a
*forget set* D_f from a model trained on D is done exactly by retraining on the *retain set*
D_r = D \\ D_f, and approximately by cheaper unlearners; pruning the model first (one-shot magnitude
or IMP, :func:`sparsecraft.prune`) narrows the gap between the two. Unlearners (``UNLEARNERS``, one
interface: ``fn(model, split, sparsifier, init_state, seed, **options)``, in place):

* ``retrain``: exact unlearning: the initial weights (``init_state``) retrained on D_r; with a
  sparsifier the same mask stays fixed (the sparse model's exact counterpart);
* ``finetune`` (FT): a few epochs on D_r at a small learning rate;
* ``gradient_ascent`` (GA): a few epochs *ascending* the loss on D_f;
* ``l1_sparse``: FT plus ``gamma * ||theta||_1`` over the weights, with ``gamma`` decaying linearly
  to zero over the run (the paper's sparsity-aware unlearning).

With a :class:`~sparsecraft.Sparsifier` its masks are kept throughout (it is attached to each
unlearner's optimizer). :func:`unlearning_metrics` measures the paper's four criteria: unlearning
accuracy ``UA = 1 - acc(D_f)``, retain and test accuracy, and ``MIA`` efficacy (the fraction of D_f
that a membership-inference attack calls non-members); :func:`unlearning_gap` is the mean absolute
difference of those four to exact retraining.

The attack is the loss-threshold attack (Yeom et al. 2018): the per-example cross-entropy threshold
that best separates D_r (members) from the test set (non-members) in balanced accuracy; a forget
example whose loss is above it is called a non-member.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SparsecraftError, check_learning_rate, check_positive_int
from .losses import token_cross_entropy
from .options import Option
from .registry import Registry
from .sparsifier import Sparsifier
from .target import find_targets
from .training.fit import evaluate, fit


@dataclass
class ForgetSplit:
    """The training set divided into what to forget and what to keep.

    Attributes
    ----------
    forget_x, retain_x : Tensor of shape (N_f, *input_shape), (N_r, *input_shape)
    forget_y, retain_y : Tensor of int64, shape (N_f,), (N_r,)
    test_x, test_y : the dataset's test split (members of neither)
    forget_class : int or None
        The class forgotten, or ``None`` for a random subset.
    """

    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    forget_class: int | None = None


def forget_split(data: Any, forget_class: int | None = None, fraction: float | None = None,
                 seed: int = 0) -> ForgetSplit:
    """Choose the forget set: one whole class, or a random ``fraction`` of the training examples.

    Parameters
    ----------
    data : DataSplits
        A classification dataset from :func:`sparsecraft.data.load_dataset`.
    forget_class : int, optional
        Forget every training example of this class (its test examples are removed from the test
        split too, as the retrained model never learns the class).
    fraction : float, optional
        Forget this fraction in (0, 1) of the training examples, drawn with ``seed``. Give exactly
        one of ``forget_class`` and ``fraction``.
    seed : int

    Returns
    -------
    ForgetSplit
    """
    if (forget_class is None) == (fraction is None):
        raise SparsecraftError("give exactly one of forget_class= (a class id) and fraction= (a random subset)")
    x, y = data.train_x, data.train_y
    tx, ty = data.test_x, data.test_y
    if forget_class is not None:
        if not 0 <= int(forget_class) < data.num_classes:
            raise SparsecraftError(f"forget_class must be a class id in [0, {data.num_classes}), got {forget_class!r}")
        forget = y == int(forget_class)
        keep_test = ty != int(forget_class)
        tx, ty = tx[keep_test], ty[keep_test]
    else:
        if not 0.0 < float(fraction) < 1.0:
            raise SparsecraftError(f"fraction must lie in (0, 1), got {fraction!r}")
        n = max(1, round(float(fraction) * len(x)))
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        forget = torch.zeros(len(x), dtype=torch.bool)
        forget[order[:n]] = True
    return ForgetSplit(x[forget], y[forget], x[~forget], y[~forget], tx, ty,
                       None if forget_class is None else int(forget_class))


@dataclass(frozen=True)
class Unlearner:
    """A registered unlearning method: its function and its declared options."""

    fn: Callable[..., None]
    options: tuple[Option, ...]
    needs_init: bool = False


UNLEARNERS: Registry[Unlearner] = Registry("unlearning method")

_TRAIN = (Option("epochs", int, 5, "passes over the data the unlearner trains on", bounds="[1, inf)"),
          Option("lr", float, 1e-3, "AdamW learning rate (cosine-decayed)", bounds="(0, inf)"),
          Option("batch_size", int, 64, "examples per step", bounds="[1, inf)"))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsifier: Sparsifier | None, seed: int,
           epochs: int, lr: float, batch_size: int, loss_fn: Callable | None = None) -> None:
    check_learning_rate(lr)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    if sparsifier is not None:
        sparsifier.attach(optimizer)
    fit(model, (x, y), None, epochs=check_positive_int(epochs, "epochs"), batch_size=batch_size,
        optimizer=optimizer, seed=seed, progress=False, loss_fn=loss_fn)


def _retrain(model: nn.Module, split: ForgetSplit, sparsifier: Sparsifier | None, init_state: dict | None,
             seed: int, epochs: int = 20, lr: float = 3e-3, batch_size: int = 64) -> None:
    model.load_state_dict(init_state)
    if sparsifier is not None:
        sparsifier.apply()
    _train(model, split.retain_x, split.retain_y, sparsifier, seed, epochs, lr, batch_size)


def _finetune(model: nn.Module, split: ForgetSplit, sparsifier: Sparsifier | None, init_state: dict | None,
              seed: int, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64) -> None:
    _train(model, split.retain_x, split.retain_y, sparsifier, seed, epochs, lr, batch_size)


def _gradient_ascent(model: nn.Module, split: ForgetSplit, sparsifier: Sparsifier | None, init_state: dict | None,
                     seed: int, epochs: int = 5, lr: float = 1e-4, batch_size: int = 64) -> None:
    _train(model, split.forget_x, split.forget_y, sparsifier, seed, epochs, lr, batch_size,
           loss_fn=lambda logits, y: -token_cross_entropy(logits, y))


def _l1_sparse(model: nn.Module, split: ForgetSplit, sparsifier: Sparsifier | None, init_state: dict | None,
               seed: int, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64, gamma: float = 5e-4) -> None:
    weights = [t.param for t in find_targets(model)]
    steps = epochs * -(-len(split.retain_x) // batch_size)
    done = [0]

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = gamma * (1.0 - done[0] / steps)     # linear decay to zero over the run
        done[0] += 1
        return token_cross_entropy(logits, y) + g * sum(w.abs().sum() for w in weights)

    _train(model, split.retain_x, split.retain_y, sparsifier, seed, epochs, lr, batch_size, loss_fn=loss_fn)


UNLEARNERS.register("retrain")(Unlearner(_retrain, (
    Option("epochs", int, 20, "passes over the retain set (as many as the original training)", bounds="[1, inf)"),
    Option("lr", float, 3e-3, "AdamW learning rate (cosine-decayed)", bounds="(0, inf)"), _TRAIN[2]), needs_init=True))
UNLEARNERS.register("finetune")(Unlearner(_finetune, _TRAIN))
UNLEARNERS.register("gradient_ascent")(Unlearner(_gradient_ascent, (
    _TRAIN[0], Option("lr", float, 1e-4, "AdamW learning rate of the ascent (cosine-decayed)", bounds="(0, inf)"),
    _TRAIN[2])))
UNLEARNERS.register("l1_sparse")(Unlearner(_l1_sparse, _TRAIN + (
    Option("gamma", float, 5e-4, "initial weight of the l1 penalty, decayed linearly to 0", bounds="[0, inf)"),)))


def unlearn(method: str, model: nn.Module, split: ForgetSplit, sparsifier: Sparsifier | None = None,
            init_state: dict[str, torch.Tensor] | None = None, seed: int = 0, **options: Any) -> nn.Module:
    """Remove ``split``'s forget set from ``model`` (in place) with the unlearner ``method``.

    Parameters
    ----------
    method : str
        A name in ``UNLEARNERS``: ``retrain``, ``finetune``, ``gradient_ascent``, ``l1_sparse``.
    model : nn.Module
        The trained classifier (logits of shape (N, num_classes)).
    split : ForgetSplit
    sparsifier : Sparsifier, optional
        The masks of a pruned ``model``: kept through unlearning.
    init_state : dict, optional
        ``model.state_dict()`` at initialisation; ``retrain`` needs it.
    seed : int
        Seeds the batch order.
    **options
        The method's declared options (``epochs``, ``lr``, ``batch_size``; ``gamma`` for l1_sparse).

    Returns
    -------
    nn.Module
        ``model``.
    """
    u = UNLEARNERS.get(method)
    declared = {o.name: o for o in u.options}
    for name in options:
        if name not in declared:
            raise SparsecraftError(f"unlearning method {method!r} has no option {name!r}; "
                                   f"its options are: {', '.join(declared)}")
    if u.needs_init and init_state is None:
        raise SparsecraftError(f"{method} starts again from the initial weights: pass init_state=")
    if sparsifier is not None and sparsifier.model is not model:
        raise SparsecraftError("the sparsifier holds the masks of another model; pass the pruned model's own")
    checked = {name: declared[name].check(v) for name, v in options.items()}
    u.fn(model, split, sparsifier, init_state, seed, **checked)
    return model


@torch.no_grad()
def example_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Per-example cross-entropy of ``model`` in eval mode, in nats; shape (N,)."""
    was = model.training
    model.eval()
    try:
        return torch.cat([F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size], reduction="none")
                          for i in range(0, len(x), batch_size)])
    finally:
        model.train(was)


def loss_threshold(member: torch.Tensor, nonmember: torch.Tensor) -> float:
    """The loss threshold with the best balanced accuracy at calling ``loss <= threshold`` a member.

    Parameters
    ----------
    member, nonmember : Tensor of shape (N,), (M,)
        Per-example losses of known members and non-members.

    Returns
    -------
    float
        A threshold in nats (midpoint between two adjacent observed losses).
    """
    if member.numel() == 0 or nonmember.numel() == 0:
        raise SparsecraftError("the attack needs members and non-members (non-empty retain and test sets)")
    values = torch.cat([member, nonmember]).double()
    is_member = torch.cat([torch.ones(len(member)), torch.zeros(len(nonmember))]).bool()
    order = torch.sort(values, stable=True).indices
    v, m = values[order], is_member[order]
    # calling the first k (lowest losses) members: true-positive and true-negative rates for every k
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(m.double(), 0)]) / len(member)
    tnr = 1.0 - torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum((~m).double(), 0)]) / len(nonmember)
    distinct = torch.cat([torch.tensor([True]), v[1:] != v[:-1], torch.tensor([True])])   # cut between ties only
    score = torch.where(distinct, (tpr + tnr) / 2, torch.tensor(-1.0, dtype=torch.float64))
    k = int(torch.argmax(score))
    if k == 0:
        return float(v[0]) - 1.0
    if k == len(v):
        return float(v[-1]) + 1.0
    return float((v[k - 1] + v[k]) / 2)


def unlearning_metrics(model: nn.Module, split: ForgetSplit) -> dict[str, float]:
    """The four unlearning criteria of Jia et al. 2023, each a fraction in [0, 1].

    Parameters
    ----------
    model : nn.Module
    split : ForgetSplit

    Returns
    -------
    dict
        ``UA`` (1 - accuracy on the forget set), ``RA`` (retain accuracy), ``TA`` (test accuracy),
        ``MIA`` (fraction of the forget set the loss-threshold attack calls non-members).
    """
    tau = loss_threshold(example_losses(model, split.retain_x, split.retain_y),
                         example_losses(model, split.test_x, split.test_y))
    forget_losses = example_losses(model, split.forget_x, split.forget_y)
    return {"UA": 1.0 - evaluate(model, split.forget_x, split.forget_y),
            "RA": evaluate(model, split.retain_x, split.retain_y),
            "TA": evaluate(model, split.test_x, split.test_y),
            "MIA": float((forget_losses > tau).double().mean())}


def unlearning_gap(approximate: dict[str, float], exact: dict[str, float]) -> float:
    """Mean absolute difference over ``UA, RA, TA, MIA`` between an unlearner and exact retraining.

    Parameters
    ----------
    approximate, exact : dict
        From :func:`unlearning_metrics`.

    Returns
    -------
    float
        In [0, 1]; 0 means indistinguishable from retraining on these criteria.
    """
    return sum(abs(approximate[k] - exact[k]) for k in ("UA", "RA", "TA", "MIA")) / 4
