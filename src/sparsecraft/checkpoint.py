"""Sparse checkpoints: one safetensors file holding weights, masks and JSON metadata.

Layout: every entry of ``model.state_dict()`` under its own name, every mask as a bool tensor under
``"__mask__.<param name>"``, and the safetensors header metadata key ``"sparsecraft"`` holding JSON:
``{"format": 2, "masks": {name: {"pattern", "shape", "kept"}}, "sha256": {tensor: hex},
"model": {"name", "kwargs", "data"?} | {"name": "transformers", ...} | null, "extra": {...}}``, and
the key ``"sparsecraft.sha256"`` holding the SHA-256 of that JSON text.

Reading verifies: the file exists and parses, the metadata is ours, its checksum matches and it
follows the schema above, every tensor's SHA-256 matches, every mask has its parameter's shape and
follows its pattern, and pruned weights are zero. Any failure is a one-line
:class:`SparsecraftError` (the word "corrupt" in it for a damaged file). Writing is atomic and
refuses to overwrite.
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

FORMAT = 2
MASK_PREFIX = "__mask__."
META_KEY, META_DIGEST_KEY = "sparsecraft", "sparsecraft.sha256"


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
        save_file(tensors, str(tmp), metadata=header_metadata(meta))


def header_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """The safetensors header metadata holding ``meta``: its JSON text and the SHA-256 of that text.

    Parameters
    ----------
    meta : dict
        The checkpoint metadata (see the module docstring).

    Returns
    -------
    dict[str, str]
        ``{"sparsecraft": json, "sparsecraft.sha256": hex digest of json}``.
    """
    text = json.dumps(meta)
    return {META_KEY: text, META_DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest()}


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
        try:
            model = build_from_spec(self.model_spec)
        except (TypeError, ValueError, KeyError, AttributeError) as err:  # SparsecraftError included
            reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
            raise SparsecraftError(f"{self.path} cannot rebuild its model from the recorded spec ({reason}); "
                                   "the file is corrupt or from another version: load it into your own model"
                                   ) from None
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
        Missing, directory, unreadable, truncated or corrupt file, foreign metadata, checksum
        mismatch, a mask that breaks its pattern, or a non-zero weight where its mask is False: one
        line each.
    """
    path = Path(path)
    if not path.exists():
        raise SparsecraftError(f"checkpoint {path} not found; check the path")
    if path.is_dir():
        raise SparsecraftError(f"checkpoint {path} is a directory, not a file; give the path of a .safetensors "
                               "checkpoint")
    tensors, header = read_safetensors(path)
    meta = _metadata(path, header)
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
    return Checkpoint(path, state, masks, patterns, meta["model"], meta["extra"])


def _metadata(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The checkpoint metadata of ``header``, its checksum and schema verified (one-line errors)."""
    if META_KEY not in header:
        raise SparsecraftError(f"{path} has no sparsecraft metadata; it was not written by sparsecraft, "
                               "or its header is corrupt")
    text = header[META_KEY]
    legacy = META_DIGEST_KEY not in header and _is_format_1(text)
    if not legacy and header.get(META_DIGEST_KEY) != hashlib.sha256(text.encode()).hexdigest():
        raise SparsecraftError(f"{path}: metadata checksum mismatch; the file is corrupt or was edited by hand, "
                               "save it again")
    try:
        meta = json.loads(text)
    except ValueError:
        raise SparsecraftError(f"{path}: its sparsecraft metadata is not JSON; the file is corrupt") from None
    problem = _schema_problem({**meta, "format": FORMAT} if legacy else meta)
    if problem:
        raise SparsecraftError(f"{path}: its sparsecraft metadata is incomplete ({problem}); the file is corrupt")
    return meta


def _is_format_1(text: str) -> bool:
    """Format 1 (before the metadata had its own checksum): still readable; its tensors are checksummed."""
    try:
        return json.loads(text).get("format") == 1
    except (ValueError, AttributeError):
        return False


def _schema_problem(meta: Any) -> str | None:
    """What in ``meta`` breaks the checkpoint schema (None if nothing)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"format is not {FORMAT}"
    if not (isinstance(meta.get("sha256"), dict) and all(isinstance(v, str) for v in meta["sha256"].values())):
        return "sha256 is not a table of digests"
    masks = meta.get("masks")
    if not (isinstance(masks, dict) and all(_is_mask_info(i) for i in masks.values())):
        return "masks is not a table of {pattern, shape, kept}"
    if not isinstance(meta.get("extra"), dict):
        return "extra is not a table"
    return _model_spec_problem(meta.get("model"))


def _is_mask_info(info: Any) -> bool:
    return (isinstance(info, dict) and isinstance(info.get("pattern"), str) and _is_shape(info.get("shape"))
            and _is_count(info.get("kept", 0)))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(_is_count(d) for d in value)


def _model_spec_problem(spec: Any) -> str | None:
    """What breaks the model spec schema (``sparsecraft.models.spec``), None if nothing."""
    if spec is None:
        return None
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
        return "model spec is not a table with a name"
    if "kwargs" in spec and not isinstance(spec["kwargs"], dict):
        return "model spec kwargs is not a table"
    data = spec.get("data")
    if data is not None and not (isinstance(data, dict) and isinstance(data.get("name"), str)
                                 and _is_shape(data.get("input_shape")) and _is_count(data.get("num_classes"))
                                 and isinstance(data.get("task"), str)):
        return "model spec data is not {name, input_shape, num_classes, task}"
    return None
