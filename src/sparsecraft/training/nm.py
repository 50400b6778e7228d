"""N:M sparse training with dense weights and a masked forward pass.

The Sparsifier keeps pruned weights exactly zero; N:M training instead keeps *dense* weights and
recomputes the N:M mask from ``|W|`` after every step, using it only in the forward pass. That is
done here by replacing each target module's ``forward`` (an instance attribute, removed again by
:meth:`finalize`), so ``state_dict`` keys, DDP and optimizers are unchanged. Three methods:

* ``srste`` (Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks From
  Scratch"): forward ``W * M``, straight-through gradient to all of ``W``, plus the sparse-refined
  term ``lambda_w * (1 - M) * W`` added to the gradient (default ``lambda_w = 2e-4``), which
  decays pruned weights so the mask stabilises;
* ``gradflow`` (Bambhaniya et al. 2024, "Progressive Gradient Flow for Robust N:M Sparsity Training
  in Transformers", mask-decay variant MDGF): forward ``W * (M + beta_t * (1 - M))``, where
  ``beta_t`` decays from 1 to 0 (``linear`` or ``exp``) in piecewise-constant stages of
  ``interval`` steps and is exactly 0 from step ``decay_end * total_steps`` on; the backward passes
  the gradient straight through to every weight (``backward="ste"``, as the authors' released
  decay functions do), so pruned weights keep learning and may re-enter the mask after ``beta``
  reaches 0. ``backward="scaled"`` differentiates through the scaled weight instead (pruned weights
  get ``beta_t`` times the gradient, none once ``beta_t = 0``: the mask then nearly freezes);
* ``bidirectional`` (Fang et al. 2023, "Efficient N:M Sparse DNN Training Using Algorithm,
  Architecture, and Dataflow Co-Design", BDWP): the forward uses ``W`` pruned N:M along its input
  dimension, the backward computes input gradients with ``W`` pruned N:M along its *output*
  dimension (the reduction dimension of the transposed product), and the weight gradient is dense
  (straight-through), with SR-STE's decay term. Layers whose output dimension (times kernel size)
  is not divisible by M stay dense.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

from ..criteria import Calib
from ..errors import SparsecraftError, check_positive_int
from ..options import Option
from ..patterns import NM
from ..sparsifier import Sparsifier
from ..target import Target
from .base import UPDATERS, SparsityConfig, Updater
from .schedules import exp_decay, linear_decay


class _StraightThrough(torch.autograd.Function):
    """Forward ``w * scale``; backward passes the gradient to ``w`` unchanged (STE)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return w * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


_CONV_GRAD = {1: (torch.nn.grad.conv1d_input, torch.nn.grad.conv1d_weight),
              2: (torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight),
              3: (torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight)}


class _Bidirectional(torch.autograd.Function):
    """``y = op(x, w_fwd) + b``; ``dx`` uses ``w_bwd``; ``dw`` is the dense weight gradient."""

    @staticmethod
    def forward(ctx, x, w, b, w_fwd, w_bwd, module):  # type: ignore[override]
        ctx.save_for_backward(x, w_bwd)
        ctx.module, ctx.w_shape, ctx.has_bias = module, w.shape, b is not None
        if isinstance(module, nn.Linear):
            return F.linear(x, w_fwd, b)
        return module._conv_forward(x, w_fwd, b)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, w_bwd = ctx.saved_tensors
        m = ctx.module
        if isinstance(m, nn.Linear):
            gx = gy @ w_bwd
            gy2, x2 = gy.reshape(-1, gy.shape[-1]), x.reshape(-1, x.shape[-1])
            gw = gy2.t() @ x2
            gb = gy2.sum(0) if ctx.has_bias else None
        else:
            dims = x.dim() - 2
            g_in, g_w = _CONV_GRAD[dims]
            args = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
            gx = g_in(x.shape, w_bwd, gy, **args)
            gw = g_w(x, ctx.w_shape, gy, **args)
            gb = gy.sum([0, *range(2, gy.dim())]) if ctx.has_bias else None
        return gx, gw, gb, None, None, None


def _transposed_nm(pattern: NM, w: torch.Tensor) -> torch.Tensor:
    """N:M mask along the output dimension: groups of M along the reduction dim of ``W^T``."""
    return pattern.mask(w.detach().abs().transpose(0, 1)).transpose(0, 1)


class NMTraining(Updater):
    """Base of the dense-weight N:M trainers: masks recomputed from ``|W|`` every ``mask_every`` steps."""

    options = (Option("mask_every", int, 1, "steps between recomputing the N:M masks from |W|", bounds="[1, inf)"),)
    default_sparsity = 0.5
    default_pattern = "2:4"
    no_sparse_kernels = "it trains dense weights through a masked forward whose N:M masks follow |W|"

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 mask_every: int = 1) -> None:
        super().__init__(config, total_steps, seed)
        pattern = self.config.get_pattern()
        if not isinstance(pattern, NM):
            raise SparsecraftError(f"{self.name} trains N:M sparsity; pass an N:M pattern such as '2:4', "
                                   f"got {self.config.pattern!r}")
        self.pattern: NM = pattern
        self.mask_every = check_positive_int(mask_every, "mask_every")
        self.targets: dict[str, Target] = {}
        self.fwd_masks: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------- setup / teardown
    def fits(self, t: Target) -> bool:
        return isinstance(t.module, (nn.Linear, _ConvNd))

    def setup(self, calib: Calib) -> None:
        targets, skipped = self.config.targets(self.model)
        self.targets = {t.name: t for t in targets if self.fits(t)}
        self.skipped = skipped + [t.name for t in targets if t.name not in self.targets]
        if not self.targets:
            raise SparsecraftError(f"no targeted Linear/Conv layer fits {self.name} with pattern {self.pattern}")
        self.compute_masks()
        for name, t in self.targets.items():
            t.module.forward = self._make_forward(name, t.module)
        self.record("init", changed=0)

    def _make_forward(self, name: str, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            return self.forward(name, module, x)
        return forward

    def finalize(self) -> nn.Module:
        """Prune to the final N:M masks (exact zeros), restore the plain forward, return the model."""
        self._require_attached()
        self.compute_masks()
        for t in self.targets.values():
            t.module.__dict__.pop("forward", None)
        self.sparsifier = Sparsifier(self.model, dict(self.fwd_masks), {n: self.pattern for n in self.fwd_masks})
        return self.model

    # ------------------------------------------------------------------- masks
    def compute_masks(self) -> int:
        """Recompute the forward masks from ``|W|``; returns how many positions changed."""
        changed = 0
        for name, t in self.targets.items():
            new = self.pattern.mask(t.param.detach().abs())
            old = self.fwd_masks.get(name)
            if old is not None:
                changed += int((old ^ new).sum())
            self.fwd_masks[name] = new
        return changed

    def masks(self) -> dict[str, torch.Tensor]:
        return dict(self.fwd_masks)

    def sparsity(self) -> float:
        if self.sparsifier is not None:
            return self.sparsifier.sparsity()
        total = sum(m.numel() for m in self.fwd_masks.values())
        kept = sum(int(m.sum()) for m in self.fwd_masks.values())
        return 1.0 - kept / max(total, 1)

    def changes_masks_at(self, step: int) -> bool:
        return step % self.mask_every == 0

    def update(self) -> None:
        if self.step % self.mask_every == 0:
            changed = self.compute_masks()
            self.record("remask", changed=changed)

    # -------------------------------------------------------------- per method
    def forward(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight(name, module.weight)
        if isinstance(module, nn.Linear):
            return F.linear(x, w, module.bias)
        return module._conv_forward(x, w, module.bias)

    def effective_weight(self, name: str, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@UPDATERS.register("srste")
class SRSTE(NMTraining):
    """SR-STE: forward ``W*M``, straight-through backward, gradient += ``lambda_w * (1-M) * W``."""

    name = "srste"
    options = NMTraining.options + (
        Option("lambda_w", float, 2e-4, "decay of the pruned weights added to their gradient", bounds="[0, inf)"),)

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 mask_every: int = 1, lambda_w: float = 2e-4) -> None:
        super().__init__(config, total_steps, seed, mask_every)
        self.lambda_w = float(lambda_w)
        if self.lambda_w < 0:
            raise SparsecraftError(f"lambda_w must be >= 0, got {lambda_w!r}")

    def effective_weight(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(w, self.fwd_masks[name].to(w.dtype))

    def before_step(self) -> None:
        if self.lambda_w == 0:
            return
        for name, t in self.targets.items():
            if t.param.grad is not None:
                t.param.grad.add_(t.param.detach() * (~self.fwd_masks[name]).to(t.param.dtype), alpha=self.lambda_w)


@UPDATERS.register("gradflow")
class GradientFlow(NMTraining):
    """Progressive gradient flow (MDGF): pruned weights scaled by a decaying ``beta_t`` in the forward,
    straight-through gradient in the backward (or ``backward="scaled"``)."""

    name = "gradflow"
    options = NMTraining.options + (
        Option("schedule", str, "linear", "decay of the pruned weights' scale beta", choices=("linear", "exp")),
        Option("decay_end", float, 0.75, "fraction of training at which beta reaches 0", bounds="(0, 1]"),
        Option("interval", int, None, "steps beta stays constant (default: 1/10 of the decay)", bounds="[1, inf)"),
        Option("backward", str, "ste", "gradient of the pruned weights: ste passes it straight through (the "
               "paper's code); scaled multiplies it by beta (none once beta is 0)", choices=("ste", "scaled")),
    )

    def __init__(self, config: SparsityConfig | None = None, total_steps: int | None = None, seed: int = 0,
                 mask_every: int = 1, schedule: str = "linear", decay_end: float = 0.75,
                 interval: int | None = None, backward: str = "ste") -> None:
        super().__init__(config, total_steps, seed, mask_every)
        if schedule not in ("linear", "exp"):
            raise SparsecraftError(f"schedule must be 'linear' or 'exp', got {schedule!r}")
        if backward not in ("ste", "scaled"):
            raise SparsecraftError(f"backward must be 'ste' or 'scaled', got {backward!r}")
        self.schedule = schedule
        self.backward = backward
        self.decay_end = float(decay_end)
        if not 0.0 < self.decay_end <= 1.0:
            raise SparsecraftError(f"decay_end must lie in (0, 1], got {decay_end!r}")
        self._interval = interval

    def setup(self, calib: Calib) -> None:
        self.end = max(1, int(self.decay_end * self.total_steps))
        self.interval = check_positive_int(self._interval or max(1, self.end // 10), "interval")
        super().setup(calib)

    def beta(self, step: int | None = None) -> float:
        """Scale of the pruned weights after ``step`` steps: constant over stages of ``interval`` steps,
        exactly 0 from the end step on (also when the end step is not a multiple of ``interval``)."""
        t = self.step if step is None else step
        if t >= self.end:
            return 0.0
        t -= t % self.interval
        return linear_decay(t, self.end) if self.schedule == "linear" else exp_decay(t, self.end)

    def effective_weight(self, name: str, w: torch.Tensor) -> torch.Tensor:
        m = self.fwd_masks[name].to(w.dtype)
        b = self.beta()
        scale = m if b == 0.0 else m + b * (1.0 - m)
        return _StraightThrough.apply(w, scale) if self.backward == "ste" else w * scale


@UPDATERS.register("bidirectional")
class Bidirectional(SRSTE):
    """BDWP: N:M weights in the forward, N:M transposed weights for input gradients, dense dW."""

    name = "bidirectional"

    def fits(self, t: Target) -> bool:
        if not super().fits(t):
            return False
        m = t.module
        if isinstance(m, _ConvNd) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            return False
        try:
            _transposed_nm(self.pattern, t.param)
        except SparsecraftError:
            return False
        return True

    def forward(self, name: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        w = module.weight
        w_fwd = w.detach() * self.fwd_masks[name].to(w.dtype)
        w_bwd = w.detach() * self.bwd_masks[name].to(w.dtype)
        return _Bidirectional.apply(x, w, module.bias, w_fwd, w_bwd, module)

    def compute_masks(self) -> int:
        changed = super().compute_masks()
        self.bwd_masks = {n: _transposed_nm(self.pattern, t.param) for n, t in self.targets.items()}
        return changed


__all__ = ["Bidirectional", "GradientFlow", "NMTraining", "SRSTE"]
