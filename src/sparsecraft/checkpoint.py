"""Sparse checkpoints: one safetensors file holding weights, masks and JSON metadata.

Layout: every entry of ``model.state_dict()`` under its own name, every mask as a bool tensor under
``"__mask__.<param name>"``, and the safetensors header metadata key ``"sparsecraft"`` holding JSON:
``{"format": 1, "masks": {name: {"pattern", "shape", "kept"}}, "sha256": {tensor: hex},
"model": {"name", "kwargs"} | null, "extra": {...}}``.

Reading verifies: the file exists and parses, the metadata is ours, every tensor's SHA-256 matches,
every mask has its parameter's shape and follows its pattern, and pruned weights are zero. Any
failure is a one-line :class:`SparsecraftError`. Writing is atomic and refuses to overwrite.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import SparsecraftError
from .io import atomic_path, read_safetensors
from .patterns import Pattern, get_pattern

FORMAT = 1
MASK_PREFIX = "__mask__."


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, masks: dict[str, torch.Tensor],
                    patterns: dict[str, str], force: bool = False, model_spec: dict | None = None,
                    extra: dict | None = None) -> None:
    """Write ``model``'s weights and ``masks`` atomically to one safetensors file.

    Parameters
    ----------
    path : str or Path
        Output file; refused if it exists unless ``force``.
    model : nn.Module
        Every ``state_dict`` entry is saved under its own name.
    masks : dict
        ``{param name: bool mask}``; ``patterns`` gives each mask's pattern spec.
    model_spec : dict, optional
        How to rebuild the architecture (``sparsecraft.models`` spec or a transformers spec).
    extra : dict, optional
        JSON-able metadata (how the model was pruned), returned as ``Checkpoint.extra``.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors = _untie(tensors)
    for name, mask in masks.items():
        tensors[MASK_PREFIX + name] = mask.detach().cpu().to(torch.bool).contiguous()
    meta = {
        "format": FORMAT,
        "masks": {n: {"pattern": patterns.get(n, "unstructured"), "shape": list(m.shape), "kept": int(m.sum())}
                  for n, m in masks.items()},
        "sha256": {k: _digest(v) for k, v in tensors.items()},
        "model": model_spec,
        "extra": extra or {},
    }
    with atomic_path(path, force) as tmp:
        save_file(tensors, str(tmp), metadata={"sparsecraft": json.dumps(meta)})


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage (tied embeddings): give each entry its own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


@dataclass
class Checkpoint:
    """A verified checkpoint: weights, masks, patterns and metadata."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    patterns: dict[str, Pattern]
    model_spec: dict | None
    extra: dict[str, Any] = field(default_factory=dict)

    def load_into(self, model: nn.Module) -> None:
        """Copy the weights into ``model``; shapes and names must match exactly."""
        own = model.state_dict()
        missing = sorted(set(own) - set(self.state_dict))
        unexpected = sorted(set(self.state_dict) - set(own))
        if missing or unexpected:
            raise SparsecraftError(
                f"{self.path} does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                "build the model the checkpoint was saved from"
            )
        for k, v in self.state_dict.items():
            if own[k].shape != v.shape:
                raise SparsecraftError(f"{self.path}: {k} has shape {tuple(v.shape)}, "
                                       f"model expects {tuple(own[k].shape)}")
        model.load_state_dict(self.state_dict)

    def build_model(self) -> nn.Module:
        """Rebuild the model from the saved spec (``sparsecraft.models.spec``) and load the weights."""
        from .models.spec import build_from_spec  # lazy: models imports training

        if not self.model_spec:
            raise SparsecraftError(f"{self.path} does not record which model it holds; load it into your own model")
        model = build_from_spec(self.model_spec)
        self.load_into(model)
        return model


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    Checkpoint
        Weights, masks, patterns, model spec and extra metadata, all verified.

    Raises
    ------
    SparsecraftError
        Missing, truncated or corrupt file, foreign metadata, checksum mismatch, a mask that breaks
        its pattern, or a non-zero weight where its mask is False: one line each.
    """
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise SparsecraftError(f"checkpoint {path} not found; check the path")
    tensors, header = read_safetensors(path)
    try:
        meta = json.loads(header["sparsecraft"])
        assert meta["format"] == FORMAT
    except (KeyError, ValueError, AssertionError, TypeError):
        raise SparsecraftError(f"{path} has no sparsecraft metadata; it was not written by sparsecraft") from None
    if not (isinstance(meta.get("sha256"), dict) and isinstance(meta.get("masks"), dict)
            and all(isinstance(i, dict) and {"pattern", "shape"} <= i.keys() for i in meta["masks"].values())):
        raise SparsecraftError(f"{path}: its sparsecraft metadata is incomplete; the file is corrupt")
    for k, v in tensors.items():
        if meta["sha256"].get(k) != _digest(v):
            raise SparsecraftError(f"{path}: checksum mismatch for {k}; the file is corrupt, save it again")
    if set(meta["sha256"]) != set(tensors):
        raise SparsecraftError(f"{path}: tensors listed in the metadata are missing; the file is corrupt")
    # safetensors returns keys sorted; the metadata keeps the model's order, so use that
    masks = {k[len(MASK_PREFIX):]: tensors[k] for k in meta["sha256"] if k.startswith(MASK_PREFIX)}
    state = {k: tensors[k] for k in meta["sha256"] if not k.startswith(MASK_PREFIX)}
    patterns = {}
    for name, info in meta["masks"].items():
        mask = masks.get(name)
        if mask is None or name not in state:
            raise SparsecraftError(f"{path}: mask or weight for {name} is missing; the file is corrupt")
        if list(mask.shape) != info["shape"] or mask.shape != state[name].shape or mask.dtype != torch.bool:
            raise SparsecraftError(f"{path}: mask for {name} has the wrong shape or dtype; the file is corrupt")
        try:
            patterns[name] = get_pattern(info["pattern"])
            patterns[name].validate(mask)
        except SparsecraftError as err:
            raise SparsecraftError(f"{path}: {name}: {err}") from None
        if bool((state[name][~mask] != 0).any()):
            raise SparsecraftError(f"{path}: {name} has non-zero weights where its mask is False")
    return Checkpoint(path, state, masks, patterns, meta.get("model"), meta.get("extra", {}))
