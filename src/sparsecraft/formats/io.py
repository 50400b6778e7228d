"""Store one packed weight in a safetensors file (tensors + JSON metadata), validated on load."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import SparsecraftError
from ..io import atomic_path, read_safetensors
from .base import FORMATS, PackedWeight

VERSION = "1"


def metadata(packed: PackedWeight) -> dict[str, Any]:
    """The JSON-able description stored beside the tensors.

    Parameters
    ----------
    packed : PackedWeight
        The weight to describe.

    Returns
    -------
    dict[str, Any]
        ``format``, ``shape`` [out, in], ``params`` and ``version``.
    """
    return {"format": packed.format, "shape": list(packed.shape), "params": packed.params(), "version": VERSION}


def from_metadata(meta: Any, tensors: dict[str, torch.Tensor]) -> PackedWeight:
    """Rebuild a packed weight from its metadata and tensors, validating both.

    Parameters
    ----------
    meta : Any
        Parsed metadata as written by :func:`metadata` (anything else is refused).
    tensors : dict[str, torch.Tensor]
        The stored tensors.

    Returns
    -------
    PackedWeight
        The weight; a one-line SparsecraftError for unknown version or format, bad shape or params,
        or tensors that do not match.
    """
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise SparsecraftError("packed weight metadata is missing or of an unknown version; re-export the weight")
    shape = meta.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
        raise SparsecraftError(f"packed weight shape {shape!r} is invalid; the file is corrupt")
    params = meta.get("params")
    if not isinstance(params, dict):
        raise SparsecraftError("packed weight params are missing; the file is corrupt")
    cls = FORMATS.get(str(meta.get("format")))
    return cls.from_tensors((shape[0], shape[1]), params, tensors)


def save_packed(packed: PackedWeight, path: str | os.PathLike, force: bool = False) -> Path:
    """Write one packed weight to a safetensors file, atomically.

    Parameters
    ----------
    packed : PackedWeight
        The weight.
    path : str or os.PathLike
        Output file; its directory must exist.
    force : bool
        Overwrite an existing file (refused with a one-line SparsecraftError otherwise).

    Returns
    -------
    Path
        ``path``.
    """
    from safetensors.torch import save_file

    with atomic_path(path, force) as tmp:
        save_file({k: v.contiguous() for k, v in packed.tensors().items()}, str(tmp),
                  metadata={"sparsecraft_packed": json.dumps(metadata(packed))})
    return Path(path)


def load_packed(path: str | os.PathLike) -> PackedWeight:
    """Read a packed weight written by :func:`save_packed`.

    Parameters
    ----------
    path : str or os.PathLike
        The safetensors file.

    Returns
    -------
    PackedWeight
        The weight, after checking the format name, version, shapes, dtypes and index ranges; a
        one-line SparsecraftError for a missing, damaged or foreign file.
    """
    tensors, meta = read_safetensors(path)
    raw = meta.get("sparsecraft_packed")
    if raw is None:
        raise SparsecraftError(f"{path} holds no sparsecraft packed weight (metadata missing)")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise SparsecraftError(f"{path}: packed weight metadata is not valid JSON; the file is corrupt") from None
    return from_metadata(parsed, tensors)
