"""The ``compressed-tensors`` sparse formats (what llm-compressor writes and vLLM reads), both ways.

A pruned transformers model is written as a transformers directory whose ``model.safetensors``
stores each selected weight ``W`` of shape ``(R, C)`` compressed, under ``<module>.<part>``:

* ``sparse-bitmask`` (any sparsity): ``compressed`` the non-zeros of ``W`` in row-major order (1-D,
  ``W``'s dtype), ``bitmask`` the non-zero positions packed 8 per byte along each row,
  little-endian bit order (uint8, ``(R, ceil(C / 8))``), ``row_offsets`` the index in
  ``compressed`` where each row starts (int64, ``(R,)``), ``shape`` ``[R, C]`` (int64, ``(2,)``);
* ``sparse-24-bitmask`` (2:4 along the input dimension): ``compressed`` the 2 kept values of every
  group of 4 (``(R, C / 2)``), ``bitmask`` as above, ``shape`` ``[[R], [C]]`` (int64, ``(2, 1)``).
  A group with fewer than 2 non-zeros keeps its first zeros as the stored pair.

``config.json`` gains the ``quantization_config`` block that compressed-tensors'
``ModelCompressor.update_config`` writes: ``quant_method: "compressed-tensors"``, the package
version it follows, and a ``sparsity_config`` (``format``, ``targets: ["Linear"]``, ``ignore`` the
Linears left dense, ``global_sparsity``, ``sparsity_structure``). Every other tensor is stored as
is. Exact: decompression puts each stored value back at its position and zeros elsewhere, so
weights come back bit for bit (a pruned weight is +0.0, as the Sparsifier writes it).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import SparsecraftError, check_sparsity
from ..registry import Registry

QUANT_METHOD = "compressed-tensors"
FORMAT_VERSION = "0.14.0.1"  # the last compressed-tensors release with sparse compressors (later ones dropped them)
WEIGHTS = "model.safetensors"
MIN_SPARSITY = 0.05  # bitmask storage: (1 - s) * value bytes + 1/8 byte per weight; pays off from ~3% zeros (fp32)


@dataclass(frozen=True)
class SparseFormat:
    """One compressed-tensors sparse format: how a weight matrix becomes named parts, and back.

    Attributes
    ----------
    name : str
        The ``format`` string in ``config.json``.
    structure : str
        The ``sparsity_structure`` it declares (``"unstructured"`` or ``"2:4"``).
    parts : tuple of str
        The suffixes stored per weight (``<module>.<part>``).
    compress : callable
        ``(name, W) -> {part: tensor}``; raises :class:`SparsecraftError` if ``W`` does not fit.
    decompress : callable
        ``{part: tensor} -> W``.
    """

    name: str
    structure: str
    parts: tuple[str, ...]
    compress: Callable[[str, torch.Tensor], dict[str, torch.Tensor]]
    decompress: Callable[[dict[str, torch.Tensor]], torch.Tensor]


CT_FORMATS: Registry[SparseFormat] = Registry("compressed-tensors format")


def _pack_rows(keep: torch.Tensor) -> torch.Tensor:
    """Bool ``(R, C)`` -> uint8 ``(R, ceil(C / 8))``, bit ``j % 8`` of byte ``j // 8`` = column ``j``."""
    return torch.from_numpy(np.packbits(keep.numpy(), axis=-1, bitorder="little"))


def _unpack_rows(bits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`_pack_rows` for a ``shape = (R, C)`` matrix."""
    if tuple(bits.shape) != (shape[0], (shape[1] + 7) // 8) or bits.dtype != torch.uint8:
        raise SparsecraftError(f"a bitmask of shape {tuple(bits.shape)} ({bits.dtype}) does not fit a weight of "
                               f"shape {shape}; the file is corrupt")
    out = np.unpackbits(bits.numpy(), axis=-1, count=shape[1], bitorder="little")
    return torch.from_numpy(out.astype(bool))


def _scatter(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    if int(keep.sum()) != values.numel():
        raise SparsecraftError(f"a bitmask marks {int(keep.sum())} weights but {values.numel()} values are stored; "
                               "the file is corrupt")
    out = torch.zeros(keep.shape, dtype=values.dtype)
    out[keep] = values.reshape(-1)
    return out


def _matrix(name: str, w: torch.Tensor) -> torch.Tensor:
    if w.dim() != 2:
        raise SparsecraftError(f"{name} has shape {tuple(w.shape)}; compressed-tensors stores 2-D weights only, "
                               "leave it dense")
    return w.detach().cpu().contiguous()


def _bitmask_compress(name: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    w = _matrix(name, w)
    keep = w != 0
    counts = keep.sum(1)
    return {"shape": torch.tensor(list(w.shape), dtype=torch.int64), "compressed": w[keep],
            "bitmask": _pack_rows(keep), "row_offsets": (torch.cumsum(counts, 0) - counts).to(torch.int64)}


def _bitmask_decompress(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    rows, cols = (int(v) for v in parts["shape"].reshape(-1))
    return _scatter(parts["compressed"], _unpack_rows(parts["bitmask"], (rows, cols)))


def pairs_2of4(name: str, w: torch.Tensor) -> torch.Tensor:
    """The stored positions of a 2:4 weight: its non-zeros, padded with each group's first zeros.

    Parameters
    ----------
    name : str
        The weight's name, for messages.
    w : Tensor
        ``(R, C)`` with ``C % 4 == 0`` and at most 2 non-zeros in every 4 consecutive columns.

    Returns
    -------
    Tensor
        bool ``(R, C)``, exactly 2 True in every group of 4.
    """
    w = _matrix(name, w)
    if w.shape[1] % 4:
        raise SparsecraftError(f"{name} has {w.shape[1]} input columns, not a multiple of 4; export it as "
                               "sparse-bitmask")
    groups = (w != 0).reshape(-1, 4)
    if bool((groups.sum(1) > 2).any()):
        raise SparsecraftError(f"{name} is not 2:4 sparse (a group of 4 has more than 2 non-zeros); prune it with "
                               "pattern 2:4 or export with format sparse-bitmask")
    rank = groups.to(torch.int64) * 4 + torch.arange(3, -1, -1)  # non-zeros first, then the earlier zeros
    keep = torch.zeros_like(groups)
    keep.scatter_(1, rank.topk(2, dim=1).indices, True)
    return keep.reshape(w.shape)


def _sparse24_compress(name: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    keep = pairs_2of4(name, w)
    w = _matrix(name, w)
    return {"shape": torch.tensor(list(w.shape), dtype=torch.int64).reshape(-1, 1),
            "compressed": w[keep].reshape(w.shape[0], w.shape[1] // 2), "bitmask": _pack_rows(keep)}


CT_FORMATS.register("sparse-bitmask")(SparseFormat(
    "sparse-bitmask", "unstructured", ("shape", "compressed", "bitmask", "row_offsets"),
    _bitmask_compress, _bitmask_decompress))
CT_FORMATS.register("sparse-24-bitmask")(SparseFormat(
    "sparse-24-bitmask", "2:4", ("shape", "compressed", "bitmask"), _sparse24_compress, _bitmask_decompress))


def is_2of4(w: torch.Tensor) -> bool:
    """Whether a 2-D ``w`` has at most 2 non-zeros in every 4 consecutive input columns."""
    return w.dim() == 2 and w.shape[1] % 4 == 0 and bool(((w != 0).reshape(-1, 4).sum(1) <= 2).all())


def compress_state_dict(state: dict[str, torch.Tensor], weights: Iterable[str], format: str,
                        ) -> dict[str, torch.Tensor]:
    """Replace each named ``<module>.weight`` of ``state`` by its compressed parts.

    Parameters
    ----------
    state : dict
        A model's state dict (name -> tensor).
    weights : iterable of str
        Names in ``state`` ending in ``.weight`` (2-D) to compress.
    format : str
        A name in :data:`CT_FORMATS`.

    Returns
    -------
    dict
        The other tensors unchanged plus ``<module>.<part>`` for every compressed weight.
    """
    fmt = CT_FORMATS.get(format)
    chosen = set(weights)
    for name in chosen:
        if name not in state or not name.endswith(".weight"):
            raise SparsecraftError(f"{name!r} is not a '.weight' tensor of this model; name a Linear's weight")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name in chosen:
            prefix = name[: -len(".weight")]
            out.update({f"{prefix}.{part}": t for part, t in fmt.compress(name, value).items()})
        else:
            out[name] = value.detach().cpu().contiguous()
    return out


def decompress_state_dict(tensors: dict[str, torch.Tensor], format: str) -> dict[str, torch.Tensor]:
    """Inverse of :func:`compress_state_dict`: every module with all of the format's parts gets its weight back.

    Parameters
    ----------
    tensors : dict
        The tensors of a compressed-tensors checkpoint.
    format : str
        A name in :data:`CT_FORMATS`.

    Returns
    -------
    dict
        A plain state dict (dense weights with exact zeros).
    """
    fmt = CT_FORMATS.get(format)
    groups = compressed_modules(tensors, fmt)
    parts = {f"{prefix}.{p}" for prefix in groups for p in fmt.parts}
    out = {name: t for name, t in tensors.items() if name not in parts}
    for prefix in groups:
        out[f"{prefix}.weight"] = fmt.decompress({p: tensors[f"{prefix}.{p}"] for p in fmt.parts})
    return dict(sorted(out.items()))


def compressed_modules(tensors: dict[str, Any], fmt: SparseFormat) -> list[str]:
    """The module names that hold all of ``fmt``'s parts (``<module>.compressed`` etc.) in ``tensors``."""
    return sorted(name[: -len(".compressed")] for name in tensors if name.endswith(".compressed")
                  and all(f"{name[: -len('.compressed')]}.{p}" in tensors for p in fmt.parts))


def sparsity_config(format: str, model: nn.Module, compressed: Iterable[str],
                    state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``sparsity_config`` block llm-compressor writes for ``compressed`` (weight names).

    ``targets`` is ``["Linear"]``; ``ignore`` lists every Linear of ``model`` not compressed;
    ``global_sparsity`` is the fraction of zeros over the compressed weights.
    """
    fmt = CT_FORMATS.get(format)
    names = set(compressed)
    ignore = [m for m, mod in model.named_modules() if isinstance(mod, nn.Linear) and f"{m}.weight" not in names]
    total = sum(state[n].numel() for n in names)
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    return {"format": fmt.name, "targets": ["Linear"], "ignore": ignore,
            "global_sparsity": zeros / max(total, 1), "sparsity_structure": fmt.structure}


def default_weights(model: nn.Module, layers: Iterable[str] | None = None, keep_dense: Iterable[str] = (),
                    min_sparsity: float = MIN_SPARSITY) -> list[str]:
    """The Linear weights to compress: those :func:`sparsecraft.find_targets` selects among the Linears
    that have at least ``min_sparsity`` zeros (below it a bitmask saves too little to pay for itself)."""
    from ..target import find_targets

    found = find_targets(model, layers, keep_dense, types=(nn.Linear,))
    return [f"{t.module_name}.{t.param_name}" for t in found
            if float((t.param == 0).sum()) >= min_sparsity * t.param.numel()]


def choose_format(state: dict[str, torch.Tensor], weights: list[str]) -> str:
    """``"sparse-24-bitmask"`` when every weight is 2:4 sparse, else ``"sparse-bitmask"``."""
    return "sparse-24-bitmask" if weights and all(is_2of4(state[n]) for n in weights) else "sparse-bitmask"


def save_compressed(model: nn.Module, out: str | os.PathLike, *, tokenizer: Any = None, format: str = "auto",
                    layers: Iterable[str] | None = None, keep_dense: Iterable[str] = (),
                    min_sparsity: float = MIN_SPARSITY, force: bool = False, card: str | None = None) -> Path:
    """Write a (pruned) transformers model as a compressed-tensors sparse checkpoint directory, atomically.

    ``model.save_pretrained`` writes the directory first (one ``model.safetensors``, tied weights
    stored once, as transformers does); the selected weights in it are then replaced by their
    compressed parts and ``config.json`` gains the ``quantization_config`` block.

    Parameters
    ----------
    model : transformers ``PreTrainedModel``
        Pruned weights are exact zeros (finalize the Sparsifier, or not: its masks are buffers that
        are not saved).
    out : path
        The output directory (``config.json``, ``model.safetensors``, tokenizer files, manifest).
    tokenizer : optional
        Saved beside the model.
    format : str
        ``"sparse-bitmask"``, ``"sparse-24-bitmask"``, ``"auto"`` (2:4 when every selected weight
        is) or ``"dense"``: a plain transformers directory (``AutoModel.from_pretrained`` loads it).
    layers, keep_dense : module names, globs or parent modules
        Which Linears may be compressed (default every Linear; see :func:`sparsecraft.find_targets`).
    min_sparsity : float
        Linears with a smaller fraction of zeros stay dense (listed in ``ignore``).
    force : bool
        Replace an existing ``out``.
    card : str, optional
        Markdown written as ``README.md`` (see :mod:`sparsecraft.export.card`).

    Returns
    -------
    Path
        ``out``.
    """
    from safetensors.torch import save_file

    from ..io import atomic_path, read_safetensors, write_manifest

    if not hasattr(model, "save_pretrained") or not hasattr(model, "config"):
        raise SparsecraftError("compressed-tensors export needs a transformers model (it has no save_pretrained); "
                               "load it with sparsecraft.models.hf.load_pretrained")
    if format not in ("auto", "dense"):
        CT_FORMATS.get(format)
    weights = default_weights(model, layers, keep_dense, check_sparsity(min_sparsity, "min_sparsity"))
    with atomic_path(out, force, directory=True) as tmp:
        model.save_pretrained(tmp, max_shard_size="1000GB")
        if format != "dense":
            state, meta = read_safetensors(tmp / WEIGHTS)
            weights = [w for w in weights if w in state]
            fmt = choose_format(state, weights) if format == "auto" else CT_FORMATS.get(format).name
            save_file(compress_state_dict(state, weights, fmt), str(tmp / WEIGHTS), metadata=meta)
            config = read_config(tmp)
            config["quantization_config"] = {"version": FORMAT_VERSION, "quant_method": QUANT_METHOD,
                                             "sparsity_config": sparsity_config(fmt, model, weights, state),
                                             "transform_config": {}}
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card)
        write_manifest(tmp)
    return Path(out)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a model directory, as a dict."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise SparsecraftError(f"{path} has no config.json; give a transformers model directory")
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as err:
        raise SparsecraftError(f"{f} is not readable JSON ({err}); the directory is corrupt") from None


def ct_format(config: dict[str, Any], path: str | os.PathLike) -> str | None:
    """The compressed-tensors sparse format a ``config.json`` declares, or None for a plain model."""
    qc = config.get("quantization_config") or config.get("compression_config")
    if not qc:
        return None
    if qc.get("quant_method") != QUANT_METHOD:
        raise SparsecraftError(f"{path} is quantized with {qc.get('quant_method')!r}, not compressed-tensors "
                               "sparsity; sparsecraft reads only sparse (unquantized) compressed-tensors models")
    if qc.get("config_groups"):
        raise SparsecraftError(f"{path} is a quantized compressed-tensors model; sparsecraft reads only its sparse "
                               "formats (sparse-bitmask, sparse-24-bitmask) without quantization")
    sc = qc.get("sparsity_config") or {}
    return CT_FORMATS.get(sc["format"]).name if sc.get("format") not in (None, "dense") else None


def weight_files(path: str | os.PathLike) -> list[Path]:
    """The ``*.safetensors`` files of a model directory (one file or shards)."""
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise SparsecraftError(f"{path} has no .safetensors weights; give a model directory saved with safetensors")
    return files


def read_compressed(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The dense state dict and ``config.json`` of a model directory, compressed-tensors sparse or plain.

    Parameters
    ----------
    path : path
        A directory written by :func:`save_compressed`, llm-compressor or ``save_pretrained``.

    Returns
    -------
    state : dict
        Dense tensors (exact zeros where the format stored none).
    config : dict
        ``config.json``.
    """
    from ..io import read_safetensors, verify_manifest

    config = read_config(path)
    verify_manifest(path)
    tensors: dict[str, torch.Tensor] = {}
    for f in weight_files(path):
        tensors.update(read_safetensors(f)[0])
    fmt = ct_format(config, path)
    return (decompress_state_dict(tensors, fmt) if fmt else tensors), config


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """A transformers model (float32, eval mode) from a compressed-tensors sparse directory.

    Parameters
    ----------
    path : path
        See :func:`read_compressed`.

    Returns
    -------
    nn.Module
        The ``AutoModel`` of the config with the decompressed weights (bit-exact).
    """
    from ..models.hf import from_hf_spec

    state, config = read_compressed(path)
    config = {k: v for k, v in config.items() if k not in ("quantization_config", "compression_config")}
    model = from_hf_spec({"config": config})
    prefix = _base_prefix(model, state)
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    persistent = set(model.state_dict())
    if [k for k in missing if k in persistent] or unexpected:
        raise SparsecraftError(f"the weights in {path} do not fit its config (missing {missing[:3]}, unexpected "
                               f"{unexpected[:3]}); the directory is corrupt or from another model")
    return model


def _base_prefix(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """``"bert."`` when ``state`` was saved from a model with a head around ``model``, else ``""``."""
    prefix = getattr(model, "base_model_prefix", "")
    own = set(model.state_dict())
    if prefix and not (own & set(state)) and any(k.startswith(prefix + ".") for k in state):
        return prefix + "."
    return ""
