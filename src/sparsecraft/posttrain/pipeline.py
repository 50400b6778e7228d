"""Calibrated, block-by-block post-training pruning of a transformer built from ``nn.Linear``.

Following the SparseGPT and Wanda reference pipelines, calibration data first runs through the
model up to the first transformer block, where the block's inputs (hidden states and any extra
arguments such as attention masks) are captured. Then, one block at a time:

1. run the block on its inputs with hooks that accumulate each target Linear's input statistics
   (:class:`sparsecraft.calibration.InputRecorder`, padded tokens excluded);
2. prune every target Linear of the block with the chosen method (SparseGPT also updates the
   weights it keeps);
3. run the *pruned* block again: its outputs are the next block's inputs.

So every block is calibrated on the activations of the already-pruned blocks before it, and only
one block's statistics are alive at a time. The target layers come from the core's
:func:`sparsecraft.find_targets` (Linears within the blocks, narrowed by ``layers`` /
``keep_dense``) and the result is the core's hand-off: a :class:`sparsecraft.Sparsifier` holding
one mask per pruned weight, which ``report``, ``save``, ``attach`` (fine-tuning) and
``inference.convert`` use like any other. Works for Hugging Face encoders/decoders (BERT, GPT-2
style models whose blocks are Linear-based) and for :class:`sparsecraft.models.TinyTransformer`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..calibration import InputRecorder, LayerStats, relative_error, wanda_scores
from ..errors import SparsecraftError, check_sparsity
from ..options import collect
from ..patterns import NM, Pattern, get_pattern
from ..sparsifier import Sparsifier
from ..target import Target, find_targets
from ..timing import Stopwatch
from .methods import METHODS, Method, check_pattern
from .owl import outlier_ratio, owl_sparsities

Batch = Mapping[str, torch.Tensor]


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass at the first block."""


@dataclass
class BlockCall:
    """Inputs of one calibration batch to a block: ``args``/``kwargs`` as the parent model passed
    them (the hidden states ``(B, T, d)`` are ``args[0]`` or ``kwargs['hidden_states']``) and the
    ``(B, T)`` bool mask of real (non-padding) tokens, or None when all tokens are real."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    token_mask: torch.Tensor | None

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def with_hidden(self, hidden: torch.Tensor) -> "BlockCall":
        if self.args:
            return BlockCall((hidden, *self.args[1:]), self.kwargs, self.token_mask)
        return BlockCall(self.args, {**self.kwargs, "hidden_states": hidden}, self.token_mask)


@dataclass
class LayerReport:
    """One pruned Linear: full name, shape ``(out, in)``, target and achieved sparsity, relative
    reconstruction error ``||WX - W'X||^2 / ||WX||^2`` on its calibration inputs, seconds."""

    name: str
    shape: tuple[int, int]
    target: float
    sparsity: float
    rel_error: float | None
    seconds: float


@dataclass
class PruneReport:
    """What :func:`prune_model` did; ``to_metadata()`` is the JSON saved next to a checkpoint."""

    method: str
    pattern: str
    sparsity: float
    calib_batches: int
    calib_tokens: int
    layers: list[LayerReport] = field(default_factory=list)
    block_sparsity: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def overall_sparsity(self) -> float:
        """Zeros / weights over all pruned layers."""
        total = sum(r.shape[0] * r.shape[1] for r in self.layers)
        return sum(r.sparsity * r.shape[0] * r.shape[1] for r in self.layers) / max(total, 1)

    @property
    def mean_rel_error(self) -> float | None:
        errs = [r.rel_error for r in self.layers if r.rel_error is not None]
        return sum(errs) / len(errs) if errs else None

    def to_metadata(self) -> dict[str, Any]:
        return {
            "format": "sparsecraft-posttrain/1",
            "method": self.method,
            "pattern": self.pattern,
            "target_sparsity": self.sparsity,
            "overall_sparsity": self.overall_sparsity,
            "calib_batches": self.calib_batches,
            "calib_tokens": self.calib_tokens,
            "block_sparsity": self.block_sparsity,
            "seconds": self.seconds,
            "layers": {r.name: {k: v for k, v in asdict(r).items() if k != "name"} for r in self.layers},
        }


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: the ``nn.ModuleList`` holding the most parameters
    whose every element contains an ``nn.Linear``."""
    best: nn.ModuleList | None = None
    best_size = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if all(any(isinstance(m, nn.Linear) for m in b.modules()) for b in module):
                size = sum(p.numel() for p in module.parameters())
                if size > best_size:
                    best, best_size = module, size
    if best is None:
        raise SparsecraftError(
            f"{type(model).__name__} has no list of blocks built from nn.Linear; post-training pruning "
            "needs a transformer whose layers are nn.Linear (e.g. BERT, GPT-2 style, TinyTransformer)"
        )
    return best


def block_targets(model: nn.Module, layers: Iterable[str] | None = None,
                  keep_dense: Iterable[str] = ()) -> list[list[Target]]:
    """The Linear targets inside each transformer block of ``model``, one list per block.

    Parameters
    ----------
    model : nn.Module
    layers, keep_dense : module names, globs or parent modules, as in :func:`sparsecraft.find_targets`

    Returns
    -------
    list of list of Target
        ``result[i]`` holds the targets of ``find_blocks(model)[i]`` (possibly none), in module order.
    """
    blocks = find_blocks(model)
    targets = find_targets(model, layers, keep_dense, types=(nn.Linear,), within=blocks)
    owner = {id(m): i for i, block in enumerate(blocks) for m in block.modules()}
    grouped: list[list[Target]] = [[] for _ in blocks]
    for t in targets:
        grouped[owner[id(t.module)]].append(t)
    return grouped


def capture_block_inputs(model: nn.Module, blocks: nn.ModuleList, batches: Sequence[Batch]) -> list[BlockCall]:
    """Run ``model(**batch)`` for every batch up to ``blocks[0]`` and return its inputs."""
    calls: list[BlockCall] = []

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append(BlockCall(tuple(args), dict(kwargs), None))
        raise _Captured

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(**batch)
            except _Captured:
                pass
            else:
                raise SparsecraftError(f"{type(model).__name__}.forward never reached its first block")
            mask = batch.get("attention_mask")
            calls[-1].token_mask = mask.bool() if mask is not None else None
    finally:
        handle.remove()
    return calls


def block_output(out: Any) -> torch.Tensor:
    """The hidden states of a block's return value (a tensor, or the first item of a tuple)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    raise SparsecraftError(f"cannot find hidden states in a block output of type {type(out).__name__}")


def run_block(block: nn.Module, calls: Sequence[BlockCall]) -> list[torch.Tensor]:
    """Outputs ``(B, T, d)`` of ``block`` on every captured call."""
    return [block_output(block(*c.args, **c.kwargs)) for c in calls]


def collect_stats(
    block: nn.Module, targets: Sequence[Target], calls: Sequence[BlockCall], diag_only: bool = False
) -> tuple[dict[str, LayerStats], list[torch.Tensor]]:
    """Run ``block`` on ``calls`` accumulating the input statistics of ``targets`` (real tokens only).

    Returns
    -------
    stats : dict
        :class:`LayerStats` by target name.
    outputs : list of Tensor ``(B, T, d)``
        The block's outputs, one per call.
    """
    outputs = []
    with InputRecorder({t.name: t.module for t in targets}, diag_only) as recorder:
        for call in calls:
            recorder.token_mask = call.token_mask
            outputs.append(block_output(block(*call.args, **call.kwargs)))
    return recorder.stats, outputs


def check_model_pattern(targets: Iterable[Target], pattern: Pattern) -> None:
    """Refuse an N:M pattern whose M does not divide every target Linear's input width."""
    if isinstance(pattern, NM):
        for t in targets:
            if t.module.in_features % pattern.m:
                raise SparsecraftError(
                    f"layer {t.module_name} has {t.module.in_features} inputs, not divisible by M={pattern.m} "
                    f"of pattern {pattern}; choose an M that divides every layer's input width, or keep it dense"
                )


def owl_block_ratios(blocks: nn.ModuleList, targets: Sequence[Sequence[Target]], calls: Sequence[BlockCall],
                     m: float) -> list[float]:
    """OWL outlier ratio of every block, from a dense pass over the calibration data."""
    ratios = []
    for block, block_targets_ in zip(blocks, targets):
        stats, outs = collect_stats(block, block_targets_, calls, diag_only=True)
        ratios.append(outlier_ratio([wanda_scores(t.param, stats[t.name]) for t in block_targets_], m)
                      if block_targets_ else 0.0)
        calls = [c.with_hidden(o) for c, o in zip(calls, outs)]
    return ratios


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=True,
    )


def check_request(method: str | Method, sparsity: float, pattern: str | Pattern,
                  options: Mapping[str, Any] | None = None) -> tuple[Method, float, Pattern, dict[str, Any]]:
    """Validate a method / sparsity / pattern / options combination before any work.

    Returns
    -------
    method, sparsity, pattern, options
        Parsed; ``options`` holds every option of the method (defaults filled in).
    """
    spec = METHODS.get(method) if isinstance(method, str) else method
    target = check_sparsity(sparsity)
    pat = check_pattern(get_pattern(pattern))
    if spec.owl and isinstance(pat, NM):
        raise SparsecraftError(
            f"method {spec.name} gives every block its own sparsity, but pattern {pat} fixes it at "
            f"{pat.n}/{pat.m}; use --pattern unstructured with OWL"
        )
    given = dict(options or {})
    valid = {o.name for o in spec.options}
    unknown = sorted(set(given) - valid)
    if unknown:
        allowed = ", ".join(sorted(valid)) or "none"
        raise SparsecraftError(f"option {unknown[0]!r} does not apply to method {spec.name}; its options: {allowed}")
    opts = {o.name: o.default for o in spec.options} | collect(spec.options, given)  # types and bounds checked
    return spec, target, pat, opts


@torch.no_grad()
def prune_model(
    model: nn.Module,
    batches: Sequence[Batch],
    method: str | Method = "sparsegpt",
    sparsity: float = 0.5,
    pattern: str | Pattern = "unstructured",
    *,
    layers: Iterable[str] | None = None,
    keep_dense: Iterable[str] = (),
    progress: bool = False,
    on_block_inputs: Callable[[int, list[torch.Tensor]], None] | None = None,
    **options: Any,
) -> tuple[Sparsifier, PruneReport]:
    """Prune the Linears inside ``model``'s transformer blocks, block by block, and hold the masks.

    Parameters
    ----------
    model : nn.Module
        Changed in place: pruned weights become exact zeros (SparseGPT also updates kept weights).
    batches : sequence of dict
        Keyword arguments of ``model.forward`` (e.g. ``input_ids`` / ``attention_mask`` of shape
        ``(B, T)``); ``attention_mask`` marks the tokens counted in the statistics.
    method : str or Method
        A name in :data:`METHODS`: magnitude, wanda, sparsegpt, owl-wanda, owl-sparsegpt.
    sparsity : float
        Fraction of zeros in [0, 1) per layer (ignored by N:M patterns, density N/M); OWL methods
        spread it over blocks by outlier ratio.
    pattern : str or Pattern
        ``"unstructured"`` or N:M such as ``"2:4"``.
    layers, keep_dense : module names, globs or parent modules
        Narrow the Linears inside the blocks (see :func:`sparsecraft.find_targets`).
    progress : bool
        Show a progress bar per layer.
    on_block_inputs : callable ``(i, hidden_states)``, optional
        Sees each block's inputs before it is pruned.
    **options
        The method's own options (``METHODS[method].options``: blocksize, percdamp, owl_m, owl_lambda).

    Returns
    -------
    sparsifier : Sparsifier
        One mask per pruned weight (named ``"<module>.weight"``), attached to ``model``.
    report : PruneReport
        Per-layer sparsity, relative reconstruction error and seconds.
    """
    spec, target, pat, opts = check_request(method, sparsity, pattern, options)
    if spec.needs_stats and len(batches) == 0:
        raise SparsecraftError(f"method {spec.name} needs calibration data; give at least 1 calibration sample")
    blocks = find_blocks(model)
    targets = block_targets(model, layers, keep_dense)
    check_model_pattern((t for ts in targets for t in ts), pat)
    layer_opts = {k: opts[k] for k in spec.layer_options}
    was_training = model.training
    model.eval()
    total = Stopwatch()
    calls = capture_block_inputs(model, blocks, batches)
    tokens = sum(c.hidden.shape[0] * c.hidden.shape[1] if c.token_mask is None else int(c.token_mask.sum())
                 for c in calls)
    report = PruneReport(spec.name, str(pat), target, len(calls), tokens)
    if spec.owl:
        ratios = owl_block_ratios(blocks, targets, calls, opts["owl_m"])
        report.block_sparsity = owl_sparsities(ratios, target, opts["owl_lambda"])
    else:
        uniform = 1.0 - pat.fixed_density if pat.fixed_density is not None else target
        report.block_sparsity = [uniform] * len(blocks)
    masks: dict[str, torch.Tensor] = {}
    with _progress(progress) as bar:
        task = bar.add_task(f"{spec.name} {pat}", total=sum(len(ts) for ts in targets))
        for i, (block, block_targets_) in enumerate(zip(blocks, targets)):
            if on_block_inputs is not None:
                on_block_inputs(i, [c.hidden for c in calls])
            stats = collect_stats(block, block_targets_, calls)[0] if calls and block_targets_ else {}
            for t in block_targets_:
                bar.update(task, description=f"{spec.name} {pat} {t.module_name}")
                layer_time = Stopwatch()
                weight = t.param.data
                layer_stats = stats.get(t.name)
                result = spec.prune_layer(weight, layer_stats, report.block_sparsity[i], pat, **layer_opts)
                err = relative_error(weight, result.weight, layer_stats.gram) if layer_stats else None
                weight.copy_(result.weight)
                masks[t.name] = result.mask
                report.layers.append(LayerReport(
                    t.module_name, tuple(weight.shape), report.block_sparsity[i],
                    float((weight == 0).float().mean()), err, layer_time.seconds,
                ))
                bar.advance(task)
            if calls:
                calls = [c.with_hidden(o) for c, o in zip(calls, run_block(block, calls))]
    report.seconds = total.seconds
    model.train(was_training)
    return Sparsifier(model, masks, {name: pat for name in masks}), report
