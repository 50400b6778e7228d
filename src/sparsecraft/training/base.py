"""The updater interface: one object that decides, at each step, whether and how masks change.

The algorithm (an :class:`Updater` subclass, chosen by name from ``UPDATERS``) is separate from the
sparsity configuration (:class:`SparsityConfig`: how sparse, which pattern, which allocation, which
layers), as in JaxPruner (Lee et al. 2023). Any optimizer, LR scheduler and training loop work::

    updater = make_updater("rigl", SparsityConfig(0.9, allocation="erk"), total_steps=1000)
    updater.attach(model, optimizer)          # builds the initial masks
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        updater.before_step()                 # gradients are here: read / modify them
        optimizer.step()
        updater.after_step()                  # masks and weights may change here
    model = updater.finalize()                # exact zeros, hooks removed (or a smaller model)

Under DDP pass the wrapped model: updaters work on the inner module, initial masks are broadcast
from rank 0, and later updates are computed identically on every rank from all-reduced gradients,
identical weights and random generators seeded from ``(seed, step)``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..allocation import ALLOCATORS
from ..criteria import Calib, compute_scores
from ..errors import SparsecraftError, check_positive_int, check_sparsity
from ..oneshot import plan_masks
from ..options import Option
from ..patterns import Pattern, get_pattern
from ..registry import Registry
from ..sparsifier import Sparsifier
from ..target import Target, find_targets
from . import distributed as dist_util
from .fit import FitResult, fit

UPDATERS: Registry[type["Updater"]] = Registry("training method")
Listener = Callable[["Updater", dict], None]


def float_list(value: str | Sequence[float]) -> tuple[float, ...]:
    """A list option's value: ``"0.5,0.75"`` (a command-line flag) or a sequence of numbers.

    Parameters
    ----------
    value : str or sequence of float

    Returns
    -------
    tuple of float
    """
    items = value.split(",") if isinstance(value, str) else value
    return tuple(float(v) for v in items)


@dataclass
class SparsityConfig:
    """What sparsity to reach, independent of the algorithm that reaches it.

    Parameters
    ----------
    sparsity : float
        Final fraction of zeros in [0, 1) over the targeted weights (ignored by N:M patterns).
    pattern : str
        ``"unstructured"``, ``"2:4"``, ``"channel"``, ... (see :func:`sparsecraft.get_pattern`).
    allocation : str
        Per-layer budget: ``uniform``, ``global``, ``er`` or ``erk``.
    layers, keep_dense : sequence of str
        Module names or globs as in :func:`sparsecraft.find_targets`. Default: every layer is sparse,
        the first one too (RigL keeps it dense: ``keep_dense=["first"]``).
    """

    sparsity: float = 0.9
    pattern: str = "unstructured"
    allocation: str = "erk"
    layers: Sequence[str] | None = None
    keep_dense: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        self._pattern = get_pattern(self.pattern)
        self.pattern = str(self._pattern)
        ALLOCATORS.get(self.allocation)

    def get_pattern(self) -> Pattern:
        """The parsed :class:`~sparsecraft.patterns.Pattern`."""
        return self._pattern

    def targets(self, model: nn.Module) -> tuple[list[Target], list[str]]:
        """The targeted weights of ``model`` whose shapes fit the pattern.

        Returns
        -------
        (list of Target, list of str)
            The targets, and the names of those left dense because their shape does not fit.
        """
        found = find_targets(model, self.layers, self.keep_dense)
        fit, skipped = [], []
        for t in found:
            try:
                self._pattern.n_groups(t.param.shape)
                if self._pattern.fixed_density is not None:
                    self._pattern.mask(torch.zeros(t.param.shape))
                fit.append(t)
            except SparsecraftError:
                skipped.append(t.name)
        if not fit:
            raise SparsecraftError(f"no targeted layer fits pattern {self.pattern}; choose another pattern")
        return fit, skipped


def unwrap(model: nn.Module) -> nn.Module:
    """The inner module of a DDP / DataParallel wrapper, or ``model`` itself.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    nn.Module
    """
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def seeded_generator(seed: int, *tags: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and ``tags``: identical on every rank for the same inputs.

    Parameters
    ----------
    seed : int
    *tags
        Anything with a stable ``repr`` (step numbers, layer names).

    Returns
    -------
    torch.Generator
    """
    digest = hashlib.sha256(repr((seed, *tags)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class Updater:
    """Base class of the training methods: subclasses override :meth:`setup`, :meth:`before_step`,
    :meth:`update` (and :meth:`run` when a method is more than one training loop).

    Every method declares its metadata as class attributes, so callers (the CLI above all) need no
    knowledge of any one method.

    Parameters
    ----------
    config : SparsityConfig, optional
        The sparsity to reach; default :meth:`default_config` (the method's defaults).
    total_steps : int, optional
        Optimizer steps of the whole run (schedules need it; :func:`fit` fills it in when ``None``).
    seed : int
        Seeds every random choice (identically on all DDP ranks).

    Attributes
    ----------
    name : str
        The registered name.
    options : tuple of Option
        The keyword options ``__init__`` takes beyond ``config, total_steps, seed``, with types,
        defaults and help; :func:`make_updater` accepts exactly these.
    default_sparsity, default_pattern, default_allocation : float, str, str
        What the method uses when the caller does not say.
    needs_calib : bool
        Whether :meth:`attach` needs a labelled calibration batch.
    step : int
        Optimizer steps done.
    sparsifier : Sparsifier or None
        The masks, for mask-based methods (``None``: the result is saved as plain weights).
    events : list of dict
        One per mask update: ``step``, ``kind``, counts, ``sparsity``.
    listeners : list of callable
        ``listener(updater, event)`` runs after each event.
    skipped : list of str
        Targets left dense because their shape does not fit the pattern.
    result : FitResult or None
        The training run of :meth:`run`.
    """

    name = ""
    options: ClassVar[tuple[Option, ...]] = ()
    default_sparsity: ClassVar[float] = 0.9
    default_pattern: ClassVar[str] = "unstructured"
    default_allocation: ClassVar[str] = "erk"
    needs_calib = False
    #: Why the method cannot train on the sparse kernels (``make_updater(..., sparse_kernels=True)``), or None.
    no_sparse_kernels: ClassVar[str | None] = None

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0) -> None:
        self.config = config or self.default_config()
        self.total_steps = None if total_steps is None else check_positive_int(total_steps, "total_steps")
        self.seed = int(seed)
        self.step = 0
        self.model: nn.Module | None = None
        self.wrapped: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.sparsifier: Sparsifier | None = None
        self.events: list[dict] = []
        self.listeners: list[Listener] = []
        self.skipped: list[str] = []
        self.result: FitResult | None = None
        self.sparse_kernels = False

    @classmethod
    def default_config(cls, sparsity: float | None = None, pattern: str | None = None,
                       allocation: str | None = None, **targets: Any) -> SparsityConfig:
        """A :class:`SparsityConfig` with this method's defaults wherever an argument is ``None``.

        Parameters
        ----------
        sparsity : float, optional
        pattern : str, optional
        allocation : str, optional
        **targets
            ``layers`` / ``keep_dense``, passed on.

        Returns
        -------
        SparsityConfig
        """
        return SparsityConfig(cls.default_sparsity if sparsity is None else sparsity,
                              pattern or cls.default_pattern, allocation or cls.default_allocation, **targets)

    # ------------------------------------------------------------------ lifecycle
    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
               calib: Calib = None) -> "Updater":
        """Bind to the model, optimizer and scheduler of a run and build the initial masks.

        Parameters
        ----------
        model : nn.Module
            Plain or DDP-wrapped (the updater works on the inner module).
        optimizer : torch.optim.Optimizer, optional
            The Sparsifier (if any) attaches to it, so pruned weights stay exactly zero.
        scheduler : LRScheduler, optional
            Needed by methods that rewind training state (IMP).
        calib : (Tensor, Tensor), optional
            A labelled batch ``(x, y)`` for data-driven initial masks (SNIP).

        Returns
        -------
        Updater
            ``self``.
        """
        if self.model is not None:
            raise SparsecraftError(f"this {self.name} updater is already attached; create a new one per run")
        if self.total_steps is None:
            raise SparsecraftError(f"{self.name} needs total_steps: pass total_steps= (fit() does it for you)")
        if self.needs_calib and calib is None:
            raise SparsecraftError(f"method {self.name!r} needs a calibration batch: pass calib=(x, y) to attach()")
        self.wrapped, self.model = model, unwrap(model)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.setup(calib)
        if self.sparsifier is not None and optimizer is not None:
            self.sparsifier.attach(optimizer)
        if self.sparse_kernels:
            from .sparse_kernels import use_sparse_kernels

            use_sparse_kernels(self)
        return self

    def setup(self, calib: Calib) -> None:
        """Build the initial state (masks) once the model is known."""

    def schedule_steps(self) -> int:
        """Steps an LR schedule built for this run spans (:func:`fit` uses it): all ``total_steps``
        (IMP: one round, as every round has its own schedule)."""
        return self.total_steps

    def before_step(self) -> None:
        """Call after ``loss.backward()`` and before ``optimizer.step()``."""

    def after_step(self) -> None:
        """Call after ``optimizer.step()`` (and ``scheduler.step()``): counts the step, updates masks."""
        self._require_attached()
        self.step += 1
        self.update()

    def update(self) -> None:
        """Change masks/weights if this step is an update step (``self.step`` steps are done)."""

    def changes_masks_at(self, step: int) -> bool:
        """Whether :meth:`update` may read or change masks or weights once ``step`` steps are done
        (sharded training gathers the full tensors only then; :mod:`sparsecraft.training.fsdp`)."""
        return True

    def reads_grads_at(self, step: int) -> bool:
        """Whether :meth:`before_step` of step ``step`` (1-based) reads or changes the gradients."""
        return type(self).before_step is not Updater.before_step

    def finalize(self) -> nn.Module:
        """End training: masks baked into exact zeros and hooks removed; returns the model.

        ``self.sparsifier`` (when the method has masks) still describes the final masks, so
        ``updater.sparsifier.save(path)`` works before or after this call.
        """
        self._require_attached()
        if self.sparsifier is not None:
            self.sparsifier.apply()
        return self.model

    def run(self, model: nn.Module, data: Any, epochs: int = 1, batch_size: int = 64, lr: float = 3e-3,
            seed: int = 0, progress: bool = True) -> nn.Module:
        """Train ``model`` from scratch with this method and end training.

        The ordinary methods run :func:`fit` (AdamW, cosine LR) with this updater's hooks, then
        :meth:`finalize`; a method that is a procedure over several models (``soup``) overrides it.

        Parameters
        ----------
        model : nn.Module
        data : DataSplits or (Tensor, Tensor)
        epochs, batch_size : int
        lr : float
        seed : int
        progress : bool
            Progress bar on stderr.

        Returns
        -------
        nn.Module
            The trained model (a new, smaller one when the method removes channels).
        """
        self.result = fit(model, data, self, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                          progress=progress)
        return self.finalize()

    def report(self) -> list[dict[str, Any]]:
        """Per-layer rows (``layer, shape, pattern, params, kept, sparsity``) and a ``total`` row.

        Returns
        -------
        list of dict
            As :meth:`Sparsifier.report`; empty for a method without masks (``dense``).
        """
        return self.sparsifier.report() if self.sparsifier is not None else []

    def summary(self) -> dict[str, Any]:
        """Facts about the finished run beyond :meth:`report`, JSON-able.

        Returns
        -------
        dict
            ``left_dense`` (targets whose shape did not fit the pattern); with sparse kernels
            ``kernel_layers``, ``masked_dense`` (``{target: why}``), ``repacks`` and ``repack_ms_mean``
            (:func:`sparsecraft.training.sparse_kernels.summary`); after :meth:`run`,
            ``final_train_loss`` (nats), ``steps`` and ``ms_per_step`` (median, milliseconds).
        """
        out: dict[str, Any] = {"left_dense": list(self.skipped)}
        if self.sparse_kernels and self.sparsifier is not None:
            from .sparse_kernels import summary

            out.update(summary(self.sparsifier))
        if self.result is not None and self.result.steps:
            out.update(final_train_loss=self.result.epoch_loss[-1], steps=self.result.steps,
                       ms_per_step=1e3 * self.result.median_step_seconds)
        return out

    # ------------------------------------------------------------------ helpers
    def _require_attached(self) -> None:
        if self.model is None:
            raise SparsecraftError("call updater.attach(model, optimizer) before training")

    def record(self, kind: str, **info: Any) -> dict:
        """Append an event and notify the listeners.

        Parameters
        ----------
        kind : str
            What happened (``"init"``, ``"prune"``, ``"drop_grow"``, ...).
        **info
            Counts and values of the event.

        Returns
        -------
        dict
            The event: ``step``, ``kind``, ``**info`` and the current ``sparsity``.
        """
        event = {"step": self.step, "kind": kind, **info, "sparsity": self.sparsity()}
        self.events.append(event)
        for fn in self.listeners:
            fn(self, event)
        return event

    def sparsity(self) -> float:
        """Current fraction of zeros over the masked weights (0 for methods without masks)."""
        return self.sparsifier.sparsity() if self.sparsifier is not None else 0.0

    def masks(self) -> dict[str, torch.Tensor]:
        """``{param name: bool mask}`` of the current masks (empty for methods without masks)."""
        return dict(self.sparsifier.masks) if self.sparsifier is not None else {}

    def generator(self, *tags: object) -> torch.Generator:
        """A generator seeded from ``(seed, step, *tags)``: the same on every DDP rank."""
        return seeded_generator(self.seed, self.step, *tags)

    def initial_masks(self, criterion: str, calib: Calib = None, sparsity: float | None = None) -> Sparsifier:
        """Masks scored by ``criterion`` and allocated by the config, as a Sparsifier (masks from rank 0).

        Parameters
        ----------
        criterion : str
            A name in ``CRITERIA``; ``"random"`` draws from :meth:`generator`.
        calib : (Tensor, Tensor), optional
            For data-driven criteria.
        sparsity : float, optional
            Default ``config.sparsity``.

        Returns
        -------
        Sparsifier
        """
        targets, self.skipped = self.config.targets(self.model)
        kwargs = {"generator": self.generator("init")} if criterion == "random" else {}
        scores = compute_scores(criterion, self.model, targets, calib=calib, **kwargs)
        s = self.config.sparsity if sparsity is None else sparsity
        masks = plan_masks(s, self.config.get_pattern(), scores, self.config.allocation)
        masks = dist_util.broadcast_masks(masks)
        return Sparsifier(self.model, masks, {n: self.config.get_pattern() for n in masks})

    def describe(self) -> dict[str, Any]:
        """Name, config and the value of every option (those known yet), for reports and checkpoints."""
        hp = {o.name: getattr(self, o.name) for o in self.options if hasattr(self, o.name)}
        return {"method": self.name, "sparsity": self.config.sparsity, "pattern": self.config.pattern,
                "allocation": self.config.allocation, **hp}


def make_updater(method: str, config: SparsityConfig | None = None, total_steps: int | None = None,
                 seed: int = 0, sparse_kernels: bool = False, **options: Any) -> Updater:
    """Construct the updater registered as ``method``.

    Parameters
    ----------
    method : str
        A name in ``UPDATERS.names()``.
    config : SparsityConfig, optional
        Default: the method's :meth:`Updater.default_config`.
    total_steps : int, optional
    seed : int
    sparse_kernels : bool
        Train the masked Linear and convolution layers on the native sparse kernels: at
        :meth:`Updater.attach`, once the masks are set, they become trainable SparseLinear / SparseConv
        layers (:func:`sparsecraft.training.sparse_kernels.use_sparse_kernels`); the model must not be
        DDP-wrapped yet. Refused for methods whose ``no_sparse_kernels`` says why they cannot.
    **options
        Any of the method's declared ``options``.

    Returns
    -------
    Updater

    Raises
    ------
    SparsecraftError
        One line for an unknown method, an option the method does not declare (listing its
        valid options), a value of the wrong type or outside the option's bounds, or
        ``sparse_kernels`` for a method that cannot use them.
    """
    cls = UPDATERS.get(method)
    declared = {o.name: o for o in cls.options}
    for name in options:
        if name not in declared:
            allowed = f"its options are: {', '.join(declared)}" if declared else "it takes no options"
            raise SparsecraftError(f"training method {method!r} has no option {name!r}; {allowed}")
    checked = {name: declared[name].check(value) for name, value in options.items()}  # types and bounds
    if sparse_kernels and cls.no_sparse_kernels:
        raise SparsecraftError(f"method {method!r} cannot train on the sparse kernels ({cls.no_sparse_kernels}); "
                               "train it masked-dense (without sparse_kernels / --sparse-kernels)")
    updater = cls(config, total_steps=total_steps, seed=seed, **checked)
    updater.sparse_kernels = bool(sparse_kernels)
    return updater
