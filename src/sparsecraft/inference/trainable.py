"""What a packed layer needs to train: its kept values as the one parameter, a dense weight view for
readers of dense weights, the dense gradient on request (RigL), and repacking on a mask change.

Shared by :class:`~sparsecraft.inference.SparseLinear` (W is (out, in)) and
:class:`~sparsecraft.inference.SparseConv` (W is (out, in, *kernel), packed as (out, in * prod(kernel))):
each layer sets ``weight_shape`` and runs its own forward and backward over ``grad_layout()``.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..errors import SparsecraftError
from ..formats import FORMATS, PackedWeight
from ..formats.grad import GradLayout, pack_mask


class TrainableValues:
    """Mixin for an ``nn.Module`` holding a :class:`PackedWeight` ``packed`` whose tensors are the
    buffers (or, for ``vals`` once trainable, the parameter) ``w_<name>``.

    Attributes
    ----------
    weight_shape : tuple of int
        The dense weight's shape as the unpacked layer has it.
    dense_grad : bool
        When True each backward stores the dense ``dL/dW`` (``weight_shape``) in ``weight.grad``.
    """

    packed: PackedWeight
    format: str
    format_params: dict[str, Any]
    weight_shape: tuple[int, ...]

    def _init_values(self) -> None:
        self.dense_grad = False
        self._layout: Optional[GradLayout] = None
        self._view: Optional[torch.Tensor] = None
        self._view_key: tuple[tuple[int, int], ...] = ()

    def _set_values(self, vals: torch.Tensor) -> None:
        """Make ``vals`` (a parameter, or a buffer tensor) the stored values ``w_vals`` of the packed weight."""
        module: Any = self
        module._buffers.pop("w_vals", None)
        module._parameters.pop("w_vals", None)
        if isinstance(vals, nn.Parameter):
            module.w_vals = vals
        else:
            module.register_buffer("w_vals", vals)
        self.packed.vals = vals  # every format keeps its values as .vals

    @property
    def is_trainable(self) -> bool:
        """Whether the stored values are a parameter (the layer's ``trainable`` constructor)."""
        return isinstance(getattr(self, "w_vals", None), nn.Parameter)

    def grad_layout(self) -> GradLayout:
        """The backward pass's index structures (:class:`GradLayout`), built once per mask."""
        self._sync_packed()
        if self._layout is None:
            self._layout = GradLayout(self.packed)
        return self._layout

    def _sync_packed(self) -> None:
        """Rebuild the packed view if its buffers were replaced (``.to()``, ``load_state_dict``)."""
        tensors = self.packed.tensors()
        if any(getattr(self, f"w_{k}") is not v for k, v in tensors.items()):
            self.packed = FORMATS.get(self.format).from_tensors(
                tuple(self.packed.shape), self.format_params,
                {k: getattr(self, f"w_{k}").view_as(v) for k, v in tensors.items()})
            if "vals" in tensors:  # the same object, a parameter when trainable (int8 formats store q and scales)
                self.packed.vals = getattr(self, "w_vals")
            self._layout = None

    @property
    def weight(self) -> torch.Tensor:
        """The dense W (``weight_shape``): a tensor (not a parameter) refreshed in place when the
        values changed, for readers of dense weights (magnitudes for drop/grow, reports). With
        ``dense_grad`` set, each backward stores the dense ``dL/dW`` in its ``.grad`` (RigL's growth),
        averaged over the ranks inside an initialised process group (as DDP averages gradients)."""
        stored = [getattr(self, f"w_{k}") for k in self.packed.tensors()]
        key = tuple((id(t), t._version) for t in stored)  # any format: fp32 vals, or int8 q and scales
        if self._view is None or self._view_key != key:
            with torch.no_grad():
                dense = (self.grad_layout().dense(getattr(self, "w_vals").detach()) if self.is_trainable
                         else self.packed.to_dense())
                dense = dense.view(self.weight_shape)
                if self._view is None:
                    self._view = dense
                else:
                    self._view.copy_(dense)
            self._view_key = key
        return self._view

    @property
    def weight_nbytes(self) -> int:
        """Bytes of the stored (packed) weight: values and indices."""
        return self.packed.nbytes

    def store_dense_grad(self, dense: torch.Tensor) -> None:
        """Keep ``dense`` (the full ``dL/dW``, any shape with W's element count) as ``weight.grad``,
        all-reduced to the ranks' mean inside an initialised process group."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dense = dense.clone()
            dist.all_reduce(dense)
            dense /= dist.get_world_size()
        self.weight.grad = dense.reshape(self.weight_shape)

    def differentiable_dense(self) -> torch.Tensor:
        """The dense W built from ``w_vals`` under autograd (the layers' dense fallback path); when
        ``dense_grad`` is set its full gradient is also stored by :meth:`store_dense_grad`."""
        w = self.grad_layout().dense(getattr(self, "w_vals")).view(self.weight_shape)
        if self.dense_grad and w.requires_grad:
            w.register_hook(lambda g: self.store_dense_grad(g.detach()))
        return w

    @torch.no_grad()
    def repack(self, mask: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Move a trainable layer to a new mask.

        Weights kept by both masks keep their values and their optimizer state; newly kept ones
        start at zero with zero state; dropped ones are gone (as :meth:`Sparsifier.set_mask` does to
        a masked dense weight). The parameter ``w_vals`` stays the same object when the count of
        kept weights does not change, else every optimizer in ``optimizers`` is moved to the new one.

        Parameters
        ----------
        mask : torch.Tensor
            Bool, ``weight_shape``.
        optimizers : iterable of torch.optim.Optimizer
            Whose state for ``w_vals`` is remapped.
        """
        if not self.is_trainable:
            raise SparsecraftError(f"repack needs a trainable {type(self).__name__} "
                                   f"({type(self).__name__}.trainable)")
        if tuple(mask.shape) != tuple(self.weight_shape):
            raise SparsecraftError(f"mask shape {tuple(mask.shape)} does not match weight {tuple(self.weight_shape)}")
        old_layout, old = self.grad_layout(), getattr(self, "w_vals")
        packed = pack_mask(old_layout.dense(old.detach()), mask.reshape(self.packed.shape), self.format,
                           **self.format_params)
        layout = GradLayout(packed)

        def remap(t: torch.Tensor) -> torch.Tensor:
            return old_layout.dense(t).view(-1)[layout.flat]

        new_vals = packed.tensors()["vals"]
        same = new_vals.shape == old.shape
        param = old if same else nn.Parameter(new_vals)
        for opt in optimizers:
            state = opt.state.pop(old, None)
            if state is not None:
                opt.state[param] = {k: (remap(v).view(new_vals.shape) if isinstance(v, torch.Tensor)
                                        and v.shape == old.shape else v) for k, v in state.items()}
            if not same:
                for group in opt.param_groups:
                    group["params"] = [param if p is old else p for p in group["params"]]
        if same:
            old.copy_(new_vals)
        for name, t in packed.tensors().items():
            if name != "vals":
                setattr(self, f"w_{name}", t)
        self.packed = packed
        self._set_values(param)
        self._layout = layout
        self._forget_mask_derived()

    def _forget_mask_derived(self) -> None:
        """Drop whatever the layer derived from the old mask (dispatch choices, offsets)."""
