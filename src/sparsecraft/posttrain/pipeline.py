"""Calibrated, block-by-block post-training pruning of a transformer built from ``nn.Linear``.

Following the SparseGPT and Wanda reference pipelines, calibration data first runs through the
model up to the first transformer block, where the block's inputs (hidden states and any extra
arguments such as attention masks) are captured. Then, one block at a time:

1. run the block on its inputs with hooks that accumulate each Linear's input statistics
   (:class:`LayerStats`, padded tokens excluded);
2. prune every Linear of the block with the chosen method;
3. run the *pruned* block again: its outputs are the next block's inputs.

So every block is calibrated on the activations of the already-pruned blocks before it, and only
one block's statistics are alive at a time. Works for Hugging Face encoders/decoders (BERT, GPT-2
style models whose blocks are Linear-based) and for :class:`sparsecraft.models.TinyTransformer`.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..patterns import NM, Pattern, get_pattern
from .methods import METHODS, Method, check_pattern, wanda_scores
from .owl import outlier_ratio, owl_sparsities
from .stats import LayerStats, relative_error

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


def block_linears(block: nn.Module) -> list[tuple[str, nn.Linear]]:
    """All ``nn.Linear`` modules of ``block`` in definition order, with names relative to it."""
    return [(n, m) for n, m in block.named_modules() if isinstance(m, nn.Linear)]


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


class InputRecorder:
    """Forward hooks accumulating the input statistics of named Linears, real tokens only.

    Set ``token_mask`` (``(B, T)`` bool, or None) before each forward; inputs ``(B, T, in)`` are
    reduced to the masked rows. Use as a context manager; ``stats`` maps names to LayerStats.
    """

    def __init__(self, linears: Sequence[tuple[str, nn.Linear]], diag_only: bool = False) -> None:
        self.linears = list(linears)
        self.stats = {n: LayerStats(m.in_features, diag_only) for n, m in self.linears}
        self.token_mask: torch.Tensor | None = None
        self._stack = ExitStack()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: Any) -> None:
            x, mask = inputs[0], self.token_mask
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.bool()]
            self.stats[name].add(x)

        return hook

    def __enter__(self) -> "InputRecorder":
        for name, module in self.linears:
            self._stack.callback(module.register_forward_hook(self._hook(name)).remove)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def collect_stats(
    block: nn.Module, calls: Sequence[BlockCall], diag_only: bool = False
) -> tuple[dict[str, LayerStats], list[torch.Tensor]]:
    """Run ``block`` on ``calls`` accumulating every Linear's input statistics (real tokens only).

    Returns the statistics by layer name and the block outputs.
    """
    outputs = []
    with InputRecorder(block_linears(block), diag_only) as recorder:
        for call in calls:
            recorder.token_mask = call.token_mask
            outputs.append(block_output(block(*call.args, **call.kwargs)))
    return recorder.stats, outputs


def check_model_pattern(blocks: nn.ModuleList, pattern: Pattern) -> None:
    """Refuse an N:M pattern whose M does not divide every Linear's input width."""
    if isinstance(pattern, NM):
        for i, block in enumerate(blocks):
            for name, lin in block_linears(block):
                if lin.in_features % pattern.m:
                    raise SparsecraftError(
                        f"layer {i}.{name} has {lin.in_features} inputs, not divisible by M={pattern.m} "
                        f"of pattern {pattern}; choose an M that divides every layer's input width"
                    )


def owl_block_ratios(blocks: nn.ModuleList, calls: Sequence[BlockCall], m: float) -> list[float]:
    """OWL outlier ratio of every block, from a dense pass over the calibration data."""
    ratios = []
    for block in blocks:
        stats, outs = collect_stats(block, calls, diag_only=True)
        ratios.append(outlier_ratio([wanda_scores(lin.weight, stats[n]) for n, lin in block_linears(block)], m))
        calls = [c.with_hidden(o) for c, o in zip(calls, outs)]
    return ratios


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=True,
    )


def check_request(method: str | Method, sparsity: float, pattern: str | Pattern) -> tuple[Method, float, Pattern]:
    """Validate a method/sparsity/pattern combination before any work; returns them parsed."""
    spec = METHODS.get(method) if isinstance(method, str) else method
    target = check_sparsity(sparsity)
    pat = check_pattern(get_pattern(pattern))
    if spec.owl and isinstance(pat, NM):
        raise SparsecraftError(
            f"method {spec.name} gives every block its own sparsity, but pattern {pat} fixes it at "
            f"{pat.n}/{pat.m}; use --pattern unstructured with OWL"
        )
    return spec, target, pat


@torch.no_grad()
def prune_model(
    model: nn.Module,
    batches: Sequence[Batch],
    method: str | Method = "sparsegpt",
    sparsity: float = 0.5,
    pattern: str | Pattern = "unstructured",
    *,
    owl_m: float = 5.0,
    owl_lambda: float = 0.08,
    blocksize: int = 128,
    percdamp: float = 0.01,
    progress: bool = False,
    on_block_inputs: Callable[[int, list[torch.Tensor]], None] | None = None,
) -> PruneReport:
    """Prune every Linear inside ``model``'s transformer blocks in place, block by block.

    ``batches`` are keyword arguments of ``model.forward`` (e.g. ``input_ids``/``attention_mask``
    of shape ``(B, T)``); ``attention_mask`` marks the tokens counted in the statistics.
    ``sparsity`` is ignored by N:M patterns (density N/M); OWL methods spread ``sparsity`` over
    blocks by outlier ratio (``owl_m``, ``owl_lambda``) and need an unstructured pattern.
    ``on_block_inputs(i, hidden_states)`` sees each block's inputs before it is pruned.
    """
    spec, target, pat = check_request(method, sparsity, pattern)
    if spec.needs_stats and len(batches) == 0:
        raise SparsecraftError(f"method {spec.name} needs calibration data; give at least 1 calibration sample")
    if blocksize < 1 or percdamp <= 0:
        raise SparsecraftError(f"blocksize must be >= 1 and percdamp > 0, got {blocksize} and {percdamp}")
    blocks = find_blocks(model)
    check_model_pattern(blocks, pat)
    opts = {k: v for k, v in {"blocksize": blocksize, "percdamp": percdamp}.items() if k in spec.options}
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    calls = capture_block_inputs(model, blocks, batches)
    tokens = sum(c.hidden.shape[0] * c.hidden.shape[1] if c.token_mask is None else int(c.token_mask.sum()) for c in calls)
    report = PruneReport(spec.name, str(pat), target, len(calls), tokens)
    if spec.owl:
        report.block_sparsity = owl_sparsities(owl_block_ratios(blocks, calls, owl_m), target, owl_lambda)
    else:
        uniform = 1.0 - pat.fixed_density if pat.fixed_density is not None else target
        report.block_sparsity = [uniform] * len(blocks)
    n_layers = sum(len(block_linears(b)) for b in blocks)
    with _progress(progress) as bar:
        task = bar.add_task(f"{spec.name} {pat}", total=n_layers)
        for i, block in enumerate(blocks):
            if on_block_inputs is not None:
                on_block_inputs(i, [c.hidden for c in calls])
            stats, _ = collect_stats(block, calls) if calls else ({}, None)
            for name, lin in block_linears(block):
                bar.update(task, description=f"{spec.name} {pat} block {i} {name}")
                t0 = time.perf_counter()
                layer_stats = stats.get(name)
                result = spec.prune_layer(lin.weight.data, layer_stats, report.block_sparsity[i], pat, **opts)
                err = relative_error(lin.weight.data, result.weight, layer_stats.gram) if layer_stats else None
                lin.weight.data.copy_(result.weight)
                report.layers.append(LayerReport(
                    f"{_prefix(model, blocks)}{i}.{name}", tuple(lin.weight.shape), report.block_sparsity[i],
                    float((lin.weight == 0).float().mean()), err, time.perf_counter() - t0,
                ))
                bar.advance(task)
            if calls:
                calls = [c.with_hidden(o) for c, o in zip(calls, run_block(block, calls))]
    report.seconds = time.perf_counter() - start
    model.train(was_training)
    return report


def _prefix(model: nn.Module, blocks: nn.ModuleList) -> str:
    for name, module in model.named_modules():
        if module is blocks:
            return f"{name}." if name else ""
    return ""
