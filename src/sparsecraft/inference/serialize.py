"""Save and load converted models: one safetensors file, JSON layer metadata in its header.

The file holds the whole state_dict (packed buffers for sparse layers, ordinary tensors for the
rest), ``sparsecraft_layers``: for each sparse layer its format, params and shape, and optionally
``sparsecraft_source``: how to rebuild the dense architecture (a transformers config, or an
in-project model spec). Loading builds (or takes) the dense architecture, swaps in SparseLinear
layers as the metadata says after checking each is an nn.Linear of that shape, validates every
packed tensor, and loads the rest strictly: a file that does not fit the model is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import SparsecraftError
from ..io import atomic_path, read_safetensors
from .convert import _set_submodule, rebuild_layer, sparse_layers

VERSION = "1"


def model_source(model: nn.Module) -> Optional[dict[str, Any]]:
    """How to rebuild a model's architecture.

    Parameters
    ----------
    model : nn.Module
        Any model.

    Returns
    -------
    dict[str, Any] or None
        ``{"kind": "transformers", "config": ...}`` for a transformers model, else None.
    """
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict") and hasattr(config, "model_type"):
        return {"kind": "transformers", "config": config.to_dict()}
    return None


def build_source(source: Any, path: str | os.PathLike) -> nn.Module:
    """The dense, untrained architecture a ``sparsecraft_source`` entry describes.

    Parameters
    ----------
    source : Any
        The parsed entry: ``{"kind": "transformers", "config": ...}`` or ``{"kind": "spec", "spec": ...}``.
    path : str or os.PathLike
        The file it came from (for the error message).

    Returns
    -------
    nn.Module
        The model in eval mode; a one-line SparsecraftError when ``source`` describes none.
    """
    kind = source.get("kind") if isinstance(source, dict) else None
    if kind == "transformers":
        from ..models.hf import from_hf_spec

        return from_hf_spec(source)
    if kind == "spec":
        from ..models.spec import build_from_spec

        return build_from_spec(source["spec"]).eval()
    raise SparsecraftError(f"{path} does not record its architecture; pass the dense model to load_converted")


def _fuse(model: nn.Module, kind: str, path: str | os.PathLike) -> nn.Module:
    """The fused-path model of kind ``kind`` built from the dense architecture ``model``."""
    from .bert import FUSED_KIND, fuse_bert, why_not_bert

    reason = why_not_bert(model) if kind == FUSED_KIND else f"unknown fused kind {kind!r}"
    if reason is not None:
        raise SparsecraftError(f"{path} holds a fused {kind} model but {reason}; wrong architecture?")
    return fuse_bert(model)


def save_converted(model: nn.Module, path: str | os.PathLike, force: bool = False,
                   source: Optional[dict[str, Any]] = None) -> Path:
    """Write a converted model's state and layer metadata to one safetensors file, atomically.

    Parameters
    ----------
    model : nn.Module
        A model converted with :func:`convert` (tensors sharing storage are stored as copies).
    path : str or os.PathLike
        Output file; its directory must exist.
    force : bool
        Overwrite an existing file.
    source : dict[str, Any], optional
        How to rebuild the architecture (see :func:`build_source`); default: the model's
        transformers config when it has one, so :func:`load_converted` needs no model.

    Returns
    -------
    Path
        ``path``.
    """
    from safetensors.torch import save_file

    from .conv import SparseConv

    layers = {
        name: {"format": m.format, "params": m.format_params, "shape": [m.out_features, m.in_features],
               "bias": m.bias is not None}
        for name, m in sparse_layers(model).items()
    }
    for name, m in model.named_modules():
        if isinstance(m, SparseConv):
            layers[name] = {"format": m.packed.format, "params": m.packed.params(), "shape": list(m.packed.shape),
                            "bias": m.bias is not None,
                            "conv": {"kernel_size": list(m.kernel_size), "stride": list(m.stride),
                                     "padding": list(m.padding)}}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    seen: dict[int, str] = {}
    for k, v in list(state.items()):  # safetensors refuses shared storage (tied weights): store copies
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen:
            state[k] = v.clone()
        elif ptr != -1:
            seen[ptr] = k
    meta = {"sparsecraft_version": VERSION, "sparsecraft_layers": json.dumps(layers)}
    fused = getattr(model, "fused_kind", None)
    if fused:
        meta["sparsecraft_fused"] = fused
    src = source if source is not None else model_source(model)
    if src is not None:
        meta["sparsecraft_source"] = json.dumps(src, default=str)
    with atomic_path(path, force) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def load_converted(path: str | os.PathLike, model: Optional[nn.Module] = None) -> nn.Module:
    """Load a file written by :func:`save_converted`.

    Parameters
    ----------
    path : str or os.PathLike
        The safetensors file.
    model : nn.Module, optional
        The dense architecture to load into (changed in place; a fused file is loaded into its
        fused-path model); None builds the one the file records.

    Returns
    -------
    nn.Module
        The model with SparseLinear layers where the file has them and every tensor loaded
        strictly; a one-line SparsecraftError when the file is damaged or does not fit.
    """
    tensors, meta = read_safetensors(path)
    if meta.get("sparsecraft_version") != VERSION or "sparsecraft_layers" not in meta:
        raise SparsecraftError(f"{path} is not a sparsecraft converted model (metadata missing or other version)")
    if model is None:
        try:
            source = json.loads(meta.get("sparsecraft_source", "null"))
        except json.JSONDecodeError:
            raise SparsecraftError(f"{path}: architecture metadata is corrupt") from None
        model = build_source(source, path)
    fused = meta.get("sparsecraft_fused")
    if fused is not None and getattr(model, "fused_kind", None) != fused:
        model = _fuse(model, fused, path)
    try:
        layers = json.loads(meta["sparsecraft_layers"])
        assert isinstance(layers, dict)
    except (json.JSONDecodeError, AssertionError):
        raise SparsecraftError(f"{path}: layer metadata is corrupt") from None
    for name, info in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise SparsecraftError(f"{path} has sparse layer {name!r} that the model lacks; "
                                   "wrong architecture?") from None
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list) or len(info["shape"]) != 2:
            raise SparsecraftError(f"{path}: metadata of layer {name!r} is corrupt")
        shape = (int(info["shape"][0]), int(info["shape"][1]))
        if isinstance(info.get("conv"), dict):
            _set_submodule(model, name, _rebuild_conv(path, name, module, info, shape, tensors))
            continue
        if type(module) is not nn.Linear or tuple(module.weight.shape) != shape:
            raise SparsecraftError(f"{path}: layer {name!r} is {shape[0]}x{shape[1]} sparse in the file but not a "
                                   "Linear of that shape in the model; wrong architecture?")
        prefix = f"{name}.w_"
        packed = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        bias = tensors.get(f"{name}.bias") if info.get("bias") else None
        if info.get("bias") and bias is None:
            raise SparsecraftError(f"{path}: bias of layer {name!r} is missing; the file is corrupt")
        try:
            layer = rebuild_layer(str(info.get("format")), shape, dict(info.get("params") or {}), packed, bias)
        except SparsecraftError as err:
            raise SparsecraftError(f"{path}: layer {name!r}: {err}") from None
        _set_submodule(model, name, layer)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:
        raise SparsecraftError(f"{path} does not fit the model ({str(err).splitlines()[0][:160]})") from None
    if missing or unexpected:
        raise SparsecraftError(f"{path} does not fit the model: missing {list(missing)[:3]}, "
                               f"unexpected {list(unexpected)[:3]}")
    return model


def _rebuild_conv(path: str | os.PathLike, name: str, module: nn.Module, info: dict, shape: tuple[int, int],
                  tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The SparseConv a file stores for the convolution ``module`` (validated against it)."""
    from ..formats import FORMATS
    from .conv import SparseConv

    conv = info["conv"]
    if type(module) not in (nn.Conv1d, nn.Conv2d) or (module.weight.shape[0], module.weight[0].numel()) != shape:
        raise SparsecraftError(f"{path}: layer {name!r} is a {shape[0]}x{shape[1]} sparse convolution in the file "
                               "but not a convolution of that shape in the model; wrong architecture?")
    prefix = f"{name}.w_"
    packed = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    fmt, params = info.get("format", "csr16"), info.get("params", {})
    bias = tensors.get(f"{name}.bias") if info.get("bias") else None
    try:
        if fmt not in ("csr16", "block"):
            raise SparsecraftError(f"format {fmt!r} is not a convolution format (csr16 or block)")
        if "vals" in packed:
            packed["vals"] = packed["vals"].reshape(-1, int(params.get("C", 1)), int(params.get("R", 1)))
        weight = FORMATS.get(fmt).from_tensors(shape, params, packed)
        return SparseConv(weight, tuple(conv["kernel_size"]), tuple(conv["stride"]), tuple(conv["padding"]), bias)
    except (SparsecraftError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise SparsecraftError(f"{path}: layer {name!r}: {err}") from None
