"""ONNX export of pruned and converted models, checked in ONNX Runtime.

ONNX stores the weights dense with their exact zeros: the layout ONNX Runtime and sparse-aware
runtimes (which detect zeros at load time) take. A pruned model exports as it is. A converted
model (:func:`sparsecraft.inference.convert`) runs custom ops that ONNX has no operator for, so its
*dense equivalent* is exported instead (:func:`dense_equivalent`): each ``SparseLinear`` becomes
an ``nn.Linear`` holding its unpacked weight, and a :class:`~sparsecraft.inference.FusedBert`
becomes the transformers model of its config with the stacked Q/K/V weights split back. The
numbers are the same; only the packing is lost. No ONNX symbolic is registered for the custom ops.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it exports
transformers encoders with dynamic batch and sequence axes in about a second, where the dynamo
exporter takes ten times longer for the same graph.
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import SparsecraftError

Inputs = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]
OPSET = 17
TOLERANCE = 1e-4


def dense_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The float32 dense ``(out, in)`` weight (exact zeros, masks applied) and bias of a Linear or SparseLinear."""
    from ..inference.convert import masked_weight
    from ..inference.linear import SparseLinear

    if isinstance(module, SparseLinear):
        module._sync_packed()
        weight = module.packed.to_dense()
    elif isinstance(module, nn.Linear):
        weight = masked_weight(module)
    else:
        raise SparsecraftError(f"{type(module).__name__} is not a Linear or SparseLinear")
    return weight, None if module.bias is None else module.bias.detach().float()


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _unfuse_bert(fused: nn.Module) -> nn.Module:
    """The transformers model a FusedBert was built from, with its (dense) weights."""
    from ..inference.bert import PARTS
    from ..models.hf import from_hf_spec

    model = from_hf_spec({"config": fused.config.to_dict()})
    model.embeddings.load_state_dict(fused.embeddings.state_dict())
    if fused.pooler is not None:
        model.pooler.dense = _linear(*dense_weight(fused.pooler.dense))
    for layer, f in zip(model.encoder.layer, fused.layers):
        for part, names in PARTS.items():
            weight, bias = dense_weight(getattr(f, part))
            rows = weight.shape[0] // len(names)
            for i, name in enumerate(names):
                parent, child = name.rsplit(".", 1)
                cut = slice(i * rows, (i + 1) * rows)
                setattr(layer.get_submodule(parent), child, _linear(weight[cut], None if bias is None else bias[cut]))
        layer.attention.output.LayerNorm.load_state_dict(f.ln_attn.state_dict())
        layer.output.LayerNorm.load_state_dict(f.ln_ffn.state_dict())
    return model.eval()


def dense_equivalent(model: nn.Module) -> nn.Module:
    """A plain-torch model computing what ``model`` computes, with every weight dense (exact zeros kept).

    Parameters
    ----------
    model : nn.Module
        A pruned model (returned as is when it holds no packed layers and no masks), a converted
        model with ``SparseLinear`` layers, or a ``FusedBert``.

    Returns
    -------
    nn.Module
        ``model`` itself, or a copy with ``SparseLinear`` -> ``nn.Linear`` (masks baked in), or
        for a ``FusedBert`` the transformers model of its config; eval mode.
    """
    from ..inference.bert import FusedBert
    from ..inference.linear import SparseLinear

    if isinstance(model, FusedBert):
        return _unfuse_bert(model)
    replace = [n for n, m in model.named_modules()
               if isinstance(m, SparseLinear) or (type(m) is nn.Linear and hasattr(m, "weight_mask"))]
    if not replace:
        return model
    if "" in replace:
        return _linear(*dense_weight(model)).eval()
    out = copy.deepcopy(model)
    for name in replace:
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, _linear(*dense_weight(out.get_submodule(name))))
    return out.eval()


class _Flat(nn.Module):
    """Calls ``model`` with named or positional inputs and returns its outputs as a flat tuple of tensors."""

    def __init__(self, model: nn.Module, names: list[str] | None) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.names, args))) if self.names is not None else self.model(*args)
        return flatten_outputs(out)


def flatten_outputs(out: Any) -> tuple[torch.Tensor, ...]:
    """A model's outputs as a tuple of tensors (a transformers ``ModelOutput`` in its field order)."""
    if isinstance(out, torch.Tensor):
        return (out,)
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out):
        return tuple(out)
    raise SparsecraftError(f"the model returns {type(out).__name__}; ONNX export needs tensors, a tuple of "
                           "tensors or a transformers ModelOutput")


def _split(inputs: Inputs) -> tuple[list[str] | None, list[str], tuple[torch.Tensor, ...]]:
    """(keyword names or None, ONNX input names, the tensors)."""
    if isinstance(inputs, Mapping):
        names = list(inputs)
        return names, names, tuple(inputs[n] for n in names)
    tensors = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return None, [f"input_{i}" for i in range(len(tensors))], tensors


def _dynamic_axes(names: list[str], tensors: tuple[torch.Tensor, ...]) -> dict[str, dict[int, str]]:
    """Batch (dim 0) dynamic for every input; dim 1 too (``sequence``) for 2-D integer inputs (token ids, masks)."""
    axes = {}
    for name, t in zip(names, tensors):
        axes[name] = {0: "batch"}
        if t.dim() == 2 and not t.is_floating_point():
            axes[name][1] = "sequence"
    return axes


def export_onnx(model: nn.Module, out: str | os.PathLike, inputs: Inputs, *, opset: int = OPSET,
                force: bool = False) -> Path:
    """Write ``model`` (or its :func:`dense_equivalent`) as an ONNX file, atomically.

    Parameters
    ----------
    model : nn.Module
        A pruned model, a converted model or a FusedBert (inference only; eval mode is used).
    out : path
        The ``.onnx`` file.
    inputs : Tensor, sequence of Tensors, or mapping name -> Tensor
        Example inputs for tracing. A mapping is passed as keyword arguments (``input_ids``,
        ``attention_mask``, ... for transformers) and names the ONNX inputs; otherwise inputs are
        positional ``input_0``, ``input_1``, ... Dim 0 is dynamic (``batch``), and dim 1
        (``sequence``) of 2-D integer inputs.
    opset : int
        ONNX opset version.
    force : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``. Outputs are named after a ``ModelOutput``'s fields, else ``output_0``, ...
    """
    from ..io import atomic_path

    dense = dense_equivalent(model)
    kw_names, names, tensors = _split(inputs)
    flat = _Flat(dense, kw_names).eval()  # export restores the wrapper's mode on every submodule: keep it eval
    training = dense.training
    with torch.no_grad():
        dense.eval()
        sample = dense(**dict(zip(kw_names, tensors))) if kw_names is not None else dense(*tensors)
    out_names = list(sample.keys()) if hasattr(sample, "keys") else [f"output_{i}" for i in range(
        len(flatten_outputs(sample)))]
    try:
        with atomic_path(out, force) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's tracer warnings about Python control flow
            torch.onnx.export(flat, tensors, str(tmp), input_names=names, output_names=out_names,
                              dynamic_axes=_dynamic_axes(names, tensors), opset_version=opset, dynamo=False)
    finally:
        dense.train(training)
    return Path(out)


def run_onnx(path: str | os.PathLike, inputs: Inputs) -> list[np.ndarray]:
    """Run an ONNX file in ONNX Runtime (CPU) on ``inputs`` (named as :func:`export_onnx` named them).

    Returns
    -------
    list of ndarray
        The outputs in the file's order.
    """
    import onnxruntime as ort

    from ..io import check_readable

    check_readable(path, ".onnx file")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    _, names, tensors = _split(inputs)
    expected = [i.name for i in session.get_inputs()]
    if sorted(expected) != sorted(names):
        raise SparsecraftError(f"{path} takes inputs {expected}, got {names}; pass the inputs it was exported with")
    return session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, tensors)})


def max_difference(path: str | os.PathLike, model: nn.Module, inputs: Inputs) -> float:
    """Largest absolute difference between ONNX Runtime's outputs and ``model``'s on ``inputs``.

    Parameters
    ----------
    path : path
        An ONNX file written by :func:`export_onnx` from ``model`` (or its dense equivalent).
    model : nn.Module
        Run in torch (eval mode, no gradients) as the reference. A FusedBert's padded tokens
        (``attention_mask`` 0) are zero in its ``last_hidden_state``: those of ONNX are zeroed too.
    inputs : see :func:`export_onnx`

    Returns
    -------
    float
        Max over all outputs and elements of ``|onnx - torch|``.
    """
    kw_names, _, tensors = _split(inputs)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = flatten_outputs(model(**dict(zip(kw_names, tensors))) if kw_names is not None else model(*tensors))
    finally:
        model.train(training)
    got = run_onnx(path, inputs)
    if getattr(model, "fused_kind", None) and kw_names is not None and "attention_mask" in kw_names:
        real = tensors[kw_names.index("attention_mask")].bool().numpy()
        got[0] = got[0] * real[..., None]  # the fused path returns zeros at padded tokens; the dense model does not
    if len(got) != len(ref):
        raise SparsecraftError(f"{path} has {len(got)} outputs but the model returns {len(ref)}; wrong model?")
    return max(float(np.abs(g - r.numpy()).max()) if r.numel() else 0.0 for g, r in zip(got, ref))
