"""Continual learning with dynamic sparse training and parameter isolation.

Yildirim et al. 2023, "Continual Learning with Dynamic Sparse Training: Exploring Algorithms for
Effective Model Updates": a stream of tasks (disjoint groups of classes) is learned one after the
other; each task trains its own sparse subnetwork with a drop/grow updater (SET or RigL, any growth
criterion of :mod:`.dst`: random, gradient, momentum), allocated per layer by ERK or uniform. The
weights of earlier tasks are *occupied* (:meth:`DropGrow.reserve`): the new task reads them in its
forward pass but cannot drop, regrow or change them, so what an earlier task learned stays intact.

Details of this implementation:

* every task's subnetwork has the configured sparsity of the *whole* layer (so ``n_tasks * (1 -
  sparsity) <= 1`` fits them all); a layer whose free positions run out gives the task only what is
  free (recorded in :attr:`ContinualResult.own_density`);
* before each task the free weights are reset to the model's initial values (fresh random init);
* parameters that are not sparse targets (biases) are trained on the first task only, then frozen,
  as in PackNet (Mallya & Lazebnik 2018); the model must not keep running statistics (BatchNorm),
  which no mask protects;
* ``scenario="task"`` (task-incremental): the task id is known, logits outside the task's classes
  are masked out in training and evaluation, and task ``j`` is evaluated with the weights of tasks
  ``<= j`` only (later tasks' weights are zeroed while it is evaluated), so its accuracy never
  changes: forgetting is exactly zero by construction;
* ``scenario="class"`` (class-incremental): one head over all classes seen, no task id, evaluation
  with every weight; later subnetworks change the shared hidden units, so old classes are forgotten.

``method="finetune"`` is the baseline: the dense model trained on each task in turn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError, check_learning_rate, check_positive_int
from ..losses import token_cross_entropy
from .base import UPDATERS, SparsityConfig, make_updater
from .dst import DropGrow
from .fit import fit

SCENARIOS = ("task", "class")


@dataclass
class Task:
    """One task of a class-split stream.

    Attributes
    ----------
    classes : tuple of int
        The global class ids of the task (labels keep their global ids).
    train_x, test_x : Tensor of shape (N, *input_shape)
    train_y, test_y : Tensor of int64, shape (N,)
    """

    classes: tuple[int, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split_tasks(data: Any, n_tasks: int = 5) -> list[Task]:
    """Split a classification dataset into ``n_tasks`` tasks of consecutive, equally many classes.

    Parameters
    ----------
    data : DataSplits
        From :func:`sparsecraft.data.load_dataset` (``digits``, ``mnist1d``).
    n_tasks : int
        Must divide ``data.num_classes``.

    Returns
    -------
    list of Task
        Task ``t`` holds classes ``t * c .. (t + 1) * c - 1`` with ``c = num_classes / n_tasks``.
    """
    n_tasks = check_positive_int(n_tasks, "n_tasks")
    if getattr(data, "task", "classification") != "classification":
        raise SparsecraftError(f"continual tasks split a classification dataset; {data.name!r} is {data.task}")
    if data.num_classes % n_tasks or n_tasks > data.num_classes:
        raise SparsecraftError(f"n_tasks={n_tasks} must divide the {data.num_classes} classes of {data.name!r}")
    per = data.num_classes // n_tasks
    tasks = []
    for t in range(n_tasks):
        classes = tuple(range(t * per, (t + 1) * per))
        ids = torch.tensor(classes)
        tr, te = torch.isin(data.train_y, ids), torch.isin(data.test_y, ids)
        if not (bool(tr.any()) and bool(te.any())):
            raise SparsecraftError(f"task {t} (classes {classes}) has no training or no test examples")
        tasks.append(Task(classes, data.train_x[tr], data.train_y[tr], data.test_x[te], data.test_y[te]))
    return tasks


@dataclass
class ContinualResult:
    """Accuracies of a continual run.

    Attributes
    ----------
    accuracy : list of list of float
        ``accuracy[i][j]``: test accuracy on task ``j`` after training tasks ``0..i`` (``j <= i``).
    own_density : list of float
        Per task, the fraction of the targeted weights its own subnetwork holds (empty for finetune).
    used_density : float
        Fraction of the targeted weights owned by some task at the end (1.0 for finetune).
    """

    accuracy: list[list[float]] = field(default_factory=list)
    own_density: list[float] = field(default_factory=list)
    used_density: float = 1.0

    @property
    def average_accuracy(self) -> float:
        """Mean test accuracy over all tasks after the last one, a fraction in [0, 1]."""
        return sum(self.accuracy[-1]) / len(self.accuracy[-1])

    @property
    def forgetting(self) -> float:
        """Average forgetting (Chaudhry et al. 2018): over tasks ``j`` before the last, the best
        accuracy ever reached on ``j`` minus the final one, averaged; 0 for a single task."""
        last = len(self.accuracy) - 1
        if last == 0:
            return 0.0
        drops = [max(self.accuracy[i][j] for i in range(j, last)) - self.accuracy[last][j] for j in range(last)]
        return sum(drops) / last


def _masked_logits(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[list(classes)] = True
    return logits.masked_fill(~allowed, float("-inf"))


@torch.no_grad()
def evaluate_task(model: nn.Module, task: Task, classes: Sequence[int] | None = None) -> float:
    """Test accuracy on ``task``, the argmax taken over ``classes`` only (``None``: all logits).

    Parameters
    ----------
    model : nn.Module
        A classifier with logits of shape (N, num_classes).
    task : Task
    classes : sequence of int, optional

    Returns
    -------
    float
        Fraction in [0, 1] of test examples classified correctly.
    """
    was = model.training
    model.eval()
    try:
        logits = model(task.test_x)
    finally:
        model.train(was)
    if classes is not None:
        logits = _masked_logits(logits, classes)
    return float((logits.argmax(-1) == task.test_y).float().mean())


class _WithoutLaterTasks:
    """Context: weights owned by tasks after ``task`` are zero inside it, restored after."""

    def __init__(self, targets: dict[str, nn.Parameter], owner: dict[str, torch.Tensor], task: int) -> None:
        self.targets, self.owner, self.task, self.saved = targets, owner, task, {}

    @torch.no_grad()
    def __enter__(self) -> None:
        for name, own in self.owner.items():
            later = own > self.task + 1
            self.saved[name] = (later, self.targets[name][later].clone())
            self.targets[name][later] = 0

    @torch.no_grad()
    def __exit__(self, *exc: object) -> None:
        for name, (later, values) in self.saved.items():
            self.targets[name][later] = values


def train_continual(model: nn.Module, tasks: Sequence[Task], method: str = "rigl", scenario: str = "task",
                    sparsity: float = 0.8, allocation: str = "erk", grow: str | None = None, epochs: int = 10,
                    batch_size: int = 32, lr: float = 3e-3, seed: int = 0, **options: Any) -> ContinualResult:
    """Learn ``tasks`` in order; after each, measure the test accuracy on every task seen so far.

    Parameters
    ----------
    model : nn.Module
        A classifier over all classes (e.g. ``MLP``), freshly initialised; trained in place.
    tasks : sequence of Task
        From :func:`split_tasks`.
    method : str
        ``"finetune"`` (dense sequential training) or a drop/grow updater in ``UPDATERS``
        (``set``, ``rigl``).
    scenario : {"task", "class"}
        Task-incremental (task id known: logits masked to the task's classes, earlier subnetworks
        evaluated alone) or class-incremental (one head, no task id).
    sparsity : float
        Sparsity of each task's own subnetwork, as a fraction of every targeted layer, in [0, 1).
    allocation : str
        Per-layer density of each subnetwork: ``erk`` or ``uniform`` (any name in ``ALLOCATORS``).
    grow : str, optional
        Growth criterion: ``random``, ``gradient`` or ``momentum`` (default: the method's own).
    epochs, batch_size : int
        Per task.
    lr : float
        AdamW learning rate (no weight decay), cosine-decayed within each task.
    seed : int
        Task ``t`` trains with seed ``seed + t``.
    **options
        Further options of the drop/grow updater (``update_every``, ``drop_fraction``, ...).

    Returns
    -------
    ContinualResult
    """
    if scenario not in SCENARIOS:
        raise SparsecraftError(f"scenario must be 'task' or 'class', got {scenario!r}")
    if not tasks:
        raise SparsecraftError("no tasks to learn: pass the list from split_tasks()")
    check_learning_rate(lr)
    if method == "finetune":
        if grow is not None or options:
            raise SparsecraftError("finetune is dense: grow and updater options do not apply; remove them")
    elif not issubclass(UPDATERS.get(method), DropGrow):
        raise SparsecraftError(f"continual learning needs a drop/grow method (set, rigl), got {method!r}")
    result = ContinualResult()
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    owner: dict[str, torch.Tensor] = {}
    targets: dict[str, nn.Parameter] = {}
    for t, task in enumerate(tasks):
        loss_fn = token_cross_entropy
        if scenario == "task":
            def loss_fn(logits: torch.Tensor, y: torch.Tensor, classes: tuple = task.classes) -> torch.Tensor:
                return token_cross_entropy(_masked_logits(logits, classes), y)
        pairs = (task.train_x, task.train_y)
        if method == "finetune":
            fit(model, pairs, None, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed + t, progress=False,
                loss_fn=loss_fn)
        else:
            occupied = {n: o > 0 for n, o in owner.items()}
            with torch.no_grad():   # free positions start again from the initial weights
                for name, occ in occupied.items():
                    targets[name][~occ] = init[name][~occ]
            config = SparsityConfig(sparsity, allocation=allocation)
            updater = make_updater(method, config, seed=seed + t, grow=grow, **options).reserve(occupied)
            trainable = list(model.parameters()) if t == 0 else list(targets.values())
            optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
            fit(model, pairs, updater, epochs=epochs, batch_size=batch_size, optimizer=optimizer, seed=seed + t,
                progress=False, loss_fn=loss_fn)
            own = updater.own_masks()
            for name, m in own.items():
                targets.setdefault(name, updater.sparsifier.targets[name].param)
                owner.setdefault(name, torch.zeros(m.shape, dtype=torch.int16))[m] = t + 1
            updater.sparsifier.finalize()
            total = sum(m.numel() for m in own.values())
            result.own_density.append(sum(int(m.sum()) for m in own.values()) / total)
        row = []
        for j in range(t + 1):
            if scenario == "class":
                row.append(evaluate_task(model, tasks[j]))
            elif method == "finetune":
                row.append(evaluate_task(model, tasks[j], tasks[j].classes))
            else:
                with _WithoutLaterTasks(targets, owner, j):
                    row.append(evaluate_task(model, tasks[j], tasks[j].classes))
        result.accuracy.append(row)
    if owner:
        result.used_density = sum(int((o > 0).sum()) for o in owner.values()) / sum(o.numel() for o in owner.values())
    return result
